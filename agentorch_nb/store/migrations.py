"""Schema versions as code. Each migration moves the schema up by one version, inside a
transaction; ``migrate`` applies the ones a file lacks. Add new ones at the end, never edit
an old one."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources

from .sqlutil import transaction


def _v1_initial(con) -> None:
    con.execute(resources.files(__package__).joinpath("schema.sql").read_text())


def _v2_checkpoints(con) -> None:
    """LangGraph checkpoints (``store/checkpoint.py``: ``DuckDBSaver``).

    checkpoints        one row per checkpoint. thread_id, checkpoint_ns ('' for the root
                       graph), checkpoint_id (sorts by time), parent_checkpoint_id; type +
                       checkpoint: the serde's type tag and bytes of the checkpoint without
                       its channel values; metadata: JSON (query it: metadata->>'step');
                       channel_versions: JSON copy of the checkpoint's {channel: version},
                       which names the checkpoint_blobs rows holding its values.
    checkpoint_blobs   one channel value per (thread_id, checkpoint_ns, channel, version),
                       shared by every checkpoint that has that version; type 'empty' marks
                       a channel that had no value.
    checkpoint_writes  pending writes of a task against a checkpoint: task_id, idx (negative
                       for the special channels of WRITES_IDX_MAP), channel, type + blob,
                       task_path (replay order is task_path, task_id, idx).
    """
    con.execute(
        """
        create table if not exists checkpoints (
            thread_id             varchar not null,
            checkpoint_ns         varchar not null default '',
            checkpoint_id         varchar not null,
            parent_checkpoint_id  varchar,
            type                  varchar,
            checkpoint            blob,
            metadata              json,
            channel_versions      json,
            primary key (thread_id, checkpoint_ns, checkpoint_id)
        );
        create table if not exists checkpoint_blobs (
            thread_id      varchar not null,
            checkpoint_ns  varchar not null default '',
            channel        varchar not null,
            version        varchar not null,
            type           varchar not null,
            blob           blob,
            primary key (thread_id, checkpoint_ns, channel, version)
        );
        create table if not exists checkpoint_writes (
            thread_id      varchar not null,
            checkpoint_ns  varchar not null default '',
            checkpoint_id  varchar not null,
            task_id        varchar not null,
            idx            integer not null,
            channel        varchar not null,
            type           varchar,
            blob           blob,
            task_path      varchar not null default '',
            primary key (thread_id, checkpoint_ns, checkpoint_id, task_id, idx)
        );
        """
    )


def _v3_guardian(con) -> None:
    """The Guardian's drift checks: one row per check of a worker's attempt."""
    con.execute(
        """
        create table if not exists guardian_verdicts (
            run_id      varchar not null,
            task_id     varchar not null,
            attempt     integer not null,
            ts          timestamp not null,
            tool_calls  integer not null,   -- tool calls of the attempt so far
            on_track    boolean not null,
            nudge       varchar             -- the message injected when it was off track
        )
        """
    )


def _v4_attempt_diffs(con) -> None:
    # What each attempt committed, kept after its worktree is gone: the task inspector shows
    # it and a post-mortem can ask what attempt 2 changed that attempt 3 did not.
    con.execute("alter table attempts add column commit_sha varchar")
    con.execute("alter table attempts add column diff varchar")


def _v5_crash_safety(con) -> None:
    """What a crash must not lose.

    attempts.interruption  who stopped an interrupted attempt (human, abandoned, cancelled,
                           engine_died): typed, where it used to be read from the reason text
    attempts.branch/base_sha  the attempt's worktree, recorded once git made it whole
    tasks.merge_source     the approved commit a merge task integrates
    merges.target_sha      the target's tip when the merge began
    merges.status          'started' is an intent written before git merges: after a crash
                           it is settled from git (is the source in the target? which commit?)
    """
    con.execute("alter table attempts add column interruption varchar")
    con.execute("alter table attempts add column branch varchar")
    con.execute("alter table attempts add column base_sha varchar")
    con.execute("alter table tasks add column merge_source varchar")
    con.execute("alter table merges add column target_sha varchar")
    con.execute("update attempts set interruption = case failure_reason "
                "when 'the engine process ended during this attempt' then 'engine_died' "
                "when 'interrupted by a human' then 'human' when 'task abandoned' then 'abandoned' "
                "when 'run cancelled' then 'cancelled' end where outcome = 'interrupted'")


def _v6_views(con) -> None:
    """The post-mortem views (``store/views.sql``): task_timeline, attempt_outcomes,
    llm_costs, tool_stats, human_waits, critical_path, merge_log. Each is ``create or
    replace``: a later migration that changes one runs its new definition."""
    con.execute(resources.files(__package__).joinpath("views.sql").read_text())


def _v7_engine_channels(con) -> None:
    """The authenticated channel of a live engine (``engine/inbox.py``, ``remote.py``).

    engine_channels  one row per run an engine drives now: its wake-up address (the same as
                     ``runs.engine_address``) and the random token a request on that address
                     must carry. Whoever can read the store may steer and read the live run,
                     exactly as they could by writing a ``commands`` row; nobody else learns
                     the token (the REST API selects explicit columns of ``runs`` and never
                     this table). A table of its own, not a column of ``runs``: the engine
                     rewrites its run's row whole, and the token must not travel in the
                     change notices the store sends for ``runs``.
    """
    con.execute(
        """
        create table if not exists engine_channels (
            run_id      varchar primary key,
            address     varchar not null,   -- 127.0.0.1:port, as in runs.engine_address
            token       varchar not null,   -- secrets.token_hex(32) of that engine
            pid         integer,
            created_at  timestamp not null
        )
        """
    )


def _v8_attempt_nodes(con) -> None:
    """attempts.node: the cluster node an attempt ran on (a Ray node's id and address), or
    null for an attempt in the engine's own process."""
    con.execute("alter table attempts add column node varchar")


MIGRATIONS: list[Callable] = [_v1_initial, _v2_checkpoints, _v3_guardian, _v4_attempt_diffs,
                              _v5_crash_safety, _v6_views, _v7_engine_channels, _v8_attempt_nodes]
SCHEMA_VERSION = len(MIGRATIONS)


def current_version(con) -> int:
    con.execute(
        "create table if not exists schema_version (version integer not null, applied_at timestamp default current_timestamp)"
    )
    (v,) = con.execute("select coalesce(max(version), 0) from schema_version").fetchone()
    return int(v)


def migrate(con) -> int:
    """Bring the schema of ``con`` up to :data:`SCHEMA_VERSION`; return the version."""
    version = current_version(con)
    if version > SCHEMA_VERSION:
        from ..exceptions import SchemaTooNew

        raise SchemaTooNew(
            f"this store has schema version {version}, newer than this agentorch_nb "
            f"understands ({SCHEMA_VERSION}): upgrade agentorch_nb"
        )
    for number in range(version + 1, SCHEMA_VERSION + 1):
        with transaction(con):
            MIGRATIONS[number - 1](con)
            con.execute("insert into schema_version (version) values (?)", [number])
    return SCHEMA_VERSION
