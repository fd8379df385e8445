-- agentorch_nb post-mortem views, created by migration 6 (store/migrations.py: _v6_views).
-- Each is `create or replace`: a later migration may replace one with a new definition.
-- Times are UTC; seconds are doubles (epoch of an interval).

-- One row per status a task was in: from the event that put it there (task_created puts a
-- task in 'planned', each task_status event {"from", "to", "reason"} moves it) to the next.
-- ended_at and seconds are null for the status a task is in now.
create or replace view task_timeline as
with changes as (
    select run_id, task_id, seq, ts, 'planned' as status, null::varchar as reason
    from events where kind = 'task_created'
    union all
    select run_id, task_id, seq, ts, payload->>'to', payload->>'reason'
    from events where kind = 'task_status'
)
select run_id, task_id, status, reason,
       ts as started_at,
       lead(ts) over w as ended_at,
       epoch(lead(ts) over w - ts) as seconds
from changes
window w as (partition by run_id, task_id order by seq);

-- One row per attempt with its task's title and why it ended as it did.
create or replace view attempt_outcomes as
select a.run_id, a.task_id, t.title, a.attempt, a.outcome, a.interruption, a.failure_reason,
       a.qa_feedback, a.guidance, a.summary, a.started_at, a.finished_at,
       epoch(a.finished_at - a.started_at) as seconds, a.commit_sha
from attempts a
left join tasks t on t.run_id = a.run_id and t.task_id = a.task_id;

-- Model calls (each HTTP try is one row of llm_calls) by run, task, role and model.
create or replace view llm_costs as
select run_id, task_id, role, model,
       count(*) as calls,
       coalesce(sum(tokens_in), 0)::bigint as tokens_in,
       coalesce(sum(tokens_out), 0)::bigint as tokens_out,
       coalesce(sum(cost_usd), 0)::double as cost_usd,
       count(error) as errors,
       quantile_cont(latency_ms, 0.5) as p50_latency_ms,
       quantile_cont(latency_ms, 0.95) as p95_latency_ms
from llm_calls
group by run_id, task_id, role, model;

-- Tool calls by run and tool: how often, how often they failed, how long they took.
create or replace view tool_stats as
select run_id, tool,
       count(*) as calls,
       count(error) as errors,
       count(error) / count(*) as error_rate,
       quantile_cont(duration_ms, 0.5) as p50_ms,
       quantile_cont(duration_ms, 0.95) as p95_ms,
       max(duration_ms) as max_ms,
       coalesce(sum(duration_ms), 0)::double as total_ms
from tool_calls
group by run_id, tool;

-- One row per escalation to a human: how long the task waited and what the answer was.
-- resolved_at, seconds, action and source are null while it still waits.
create or replace view human_waits as
select i.run_id, i.task_id, t.title, i.interrupt_id, i.kind, i.reason,
       i.ts as raised_at, i.resolved_at,
       epoch(i.resolved_at - i.ts) as seconds,
       r.resolution_id, r.action, r.source
from interrupts i
left join tasks t on t.run_id = i.run_id and t.task_id = i.task_id
left join resolutions r on r.run_id = i.run_id and r.resolution_id = i.resolution_id;

-- The critical path of each run: the chain of tasks, following task_deps, whose summed
-- durations are the longest. A task's duration is its span: from its first attempt's start
-- to its last attempt's end (retries and waits for a human included; 0 with no attempt).
-- position 1 is the chain's first task; cumulative_seconds sums seconds up to this task.
create or replace view critical_path as
with recursive
span as (
    select t.run_id, t.task_id, t.title,
           coalesce(epoch(max(a.finished_at) - min(a.started_at)), 0) as seconds
    from tasks t
    left join attempts a on a.run_id = t.run_id and a.task_id = t.task_id
    group by t.run_id, t.task_id, t.title
),
size as (select run_id, count(*) as tasks from span group by run_id),
-- the longest chain ending at each task and the dependency it comes through; a task's row
-- is replaced when a longer chain reaches it (or one as long that has a predecessor)
best(run_id, task_id, total, via, depth) using key (run_id, task_id) as (
    select run_id, task_id, seconds, null::varchar, 0 from span
    union
    select run_id, task_id, total, via, depth from (
        select d.run_id, d.task_id, b.total + d.seconds as total, b.task_id as via,
               b.depth + 1 as depth,
               row_number() over (partition by d.run_id, d.task_id
                                  order by b.total + d.seconds desc, b.task_id desc) as rn
        from best b
        join task_deps e on e.run_id = b.run_id and e.depends_on = b.task_id
        join span d on d.run_id = e.run_id and d.task_id = e.task_id
        join recurring.best cur on cur.run_id = d.run_id and cur.task_id = d.task_id
        join size n on n.run_id = b.run_id
        where b.depth < n.tasks   -- a cycle (never recorded) cannot loop forever
          and (b.total + d.seconds > cur.total
               or (b.total + d.seconds = cur.total and cur.via is null))
    ) where rn = 1
),
-- where the chain ends: the longest; of equal ones, the chain of fewer tasks
ends as (
    select run_id, task_id from (
        select run_id, task_id, row_number() over (partition by run_id
                                                   order by total desc, depth, task_id) as rn
        from best)
    where rn = 1
),
chain(run_id, task_id, via, step) as (
    select b.run_id, b.task_id, b.via, 0
    from ends e join best b on b.run_id = e.run_id and b.task_id = e.task_id
    union all
    select b.run_id, b.task_id, b.via, c.step + 1
    from chain c join best b on b.run_id = c.run_id and b.task_id = c.via
)
select c.run_id,
       row_number() over w as position,
       c.task_id, s.title, s.seconds,
       sum(s.seconds) over w as cumulative_seconds
from chain c
join span s on s.run_id = c.run_id and s.task_id = c.task_id
window w as (partition by c.run_id order by c.step desc rows unbounded preceding);

-- Merges of approved attempts with their task.
create or replace view merge_log as
select m.run_id, m.task_id, t.title, t.status as task_status, m.attempt, m.status,
       m.error, m.source_branch, m.source_sha, m.target_branch, m.target_sha, m.result_sha,
       m.files_changed, m.ts as merged_at, a.started_at as attempt_started_at,
       a.finished_at as attempt_finished_at
from merges m
left join tasks t on t.run_id = m.run_id and t.task_id = m.task_id
left join attempts a on a.run_id = m.run_id and a.task_id = m.task_id and a.attempt = m.attempt;
