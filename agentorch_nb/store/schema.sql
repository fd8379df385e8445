-- agentorch_nb store, schema version 1. Every table carries run_id. Times are UTC.
-- JSON columns hold JSON text: query them with ->> (e.g. payload->>'to').

create table if not exists runs (
    run_id          varchar primary key,
    objective       varchar not null,
    workspace       varchar,
    status          varchar not null,   -- running, paused, cancelled, completed, failed
    config          json,
    error           varchar,            -- why the run failed, when it did
    engine_pid      integer,            -- the process driving the run, while one does
    engine_host     varchar,
    engine_address  varchar,            -- 127.0.0.1:port that wakes that engine
    created_at      timestamp not null,
    updated_at      timestamp not null,
    finished_at     timestamp
);

create table if not exists tasks (          -- the current state; events hold the history
    run_id              varchar not null,
    task_id             varchar not null,
    title               varchar not null,
    description         varchar,
    acceptance_criteria json,
    profile             varchar not null,
    phase               varchar,
    status              varchar not null,
    status_reason       varchar,
    attempts            integer not null,
    retries_used        integer not null,
    max_retries         integer not null,
    branch              varchar,
    worktree            varchar,
    result_summary      varchar,
    qa_verdict          varchar,
    qa_feedback         varchar,
    guidance            varchar,
    created_by          varchar,
    created_at          timestamp not null,
    updated_at          timestamp not null,
    primary key (run_id, task_id)
);

create table if not exists task_deps (
    run_id      varchar not null,
    task_id     varchar not null,
    depends_on  varchar not null
);

create table if not exists events (         -- append-only; seq increases within a run
    run_id   varchar not null,
    seq      bigint not null,
    ts       timestamp not null,
    task_id  varchar,
    kind     varchar not null,
    payload  json
);

create table if not exists attempts (
    run_id          varchar not null,
    task_id         varchar not null,
    attempt         integer not null,
    started_at      timestamp not null,
    finished_at     timestamp,
    outcome         varchar,            -- approved, rejected, error, timeout, interrupted
    failure_reason  varchar,
    summary         varchar,
    qa_feedback     varchar,
    guidance        varchar,
    primary key (run_id, task_id, attempt)
);

create table if not exists messages (
    run_id        varchar not null,
    task_id       varchar,
    attempt       integer,
    ts            timestamp not null,
    role          varchar not null,     -- system, user, assistant, tool, director, strategist
    content       varchar,
    name          varchar,
    tool_call_id  varchar,
    metadata      json
);

create table if not exists tool_calls (
    run_id       varchar not null,
    task_id      varchar,
    attempt      integer,
    call_id      varchar,
    ts           timestamp not null,
    tool         varchar not null,
    arguments    json,
    result       varchar,
    error        varchar,
    duration_ms  double
);

create table if not exists llm_calls (
    run_id      varchar not null,
    task_id     varchar,
    attempt     integer,
    role        varchar,
    ts          timestamp not null,
    model       varchar,
    tokens_in   integer,
    tokens_out  integer,
    cost_usd    double,
    latency_ms  double,
    error       varchar
);

create table if not exists interrupts (
    run_id         varchar not null,
    interrupt_id   varchar not null,
    task_id        varchar not null,
    ts             timestamp not null,
    kind           varchar not null,   -- retries_exhausted, dependency_abandoned, human
    reason         varchar,
    context        json,
    resolved_at    timestamp,
    resolution_id  varchar,
    primary key (run_id, interrupt_id)
);

create table if not exists resolutions (
    run_id         varchar not null,
    resolution_id  varchar not null,
    task_id        varchar not null,
    ts             timestamp not null,
    action         varchar not null,   -- retry, abandon, spawn
    payload        json,
    source         varchar,            -- api, widget, process:<pid>, rest:<user>, ...
    interrupt_id   varchar,
    primary key (run_id, resolution_id)
);

-- The inbox through which other processes drive a live run (resolutions, interrupts,
-- dependency edits, cancel). The engine applies each row once and records the outcome.
create table if not exists commands (
    run_id       varchar not null,
    command_id   varchar not null,
    ts           timestamp not null,
    kind         varchar not null,
    payload      json,
    source       varchar,
    status       varchar not null,     -- pending, applied, rejected
    error        varchar,
    applied_at   timestamp,
    primary key (run_id, command_id)
);

create table if not exists insights (
    run_id   varchar not null,
    task_id  varchar,
    ts       timestamp not null,
    topic    varchar,
    content  varchar not null
);

create table if not exists design_decisions (
    run_id     varchar not null,
    task_id    varchar,
    ts         timestamp not null,
    area       varchar,
    decision   varchar not null,
    rationale  varchar
);

create table if not exists merges (
    run_id          varchar not null,
    task_id         varchar not null,
    attempt         integer,
    ts              timestamp not null,
    source_branch   varchar,
    source_sha      varchar,
    target_branch   varchar,
    result_sha      varchar,
    files_changed   json,
    status          varchar,
    error           varchar
);
