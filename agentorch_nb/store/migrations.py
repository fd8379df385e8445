"""Schema versions as code. Each migration moves the schema up by one version, inside a
transaction; ``migrate`` applies the ones a file lacks. Add new ones at the end, never edit
an old one."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources


def _v1_initial(con) -> None:
    con.execute(resources.files(__package__).joinpath("schema.sql").read_text())


MIGRATIONS: list[Callable] = [_v1_initial]
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
        from ..exceptions import AgentorchError

        raise AgentorchError(
            f"this store has schema version {version}, newer than this agentorch_nb "
            f"understands ({SCHEMA_VERSION}): upgrade agentorch_nb"
        )
    for number in range(version + 1, SCHEMA_VERSION + 1):
        con.execute("begin transaction")
        try:
            MIGRATIONS[number - 1](con)
            con.execute("insert into schema_version (version) values (?)", [number])
            con.execute("commit")
        except BaseException:
            con.execute("rollback")
            raise
    return SCHEMA_VERSION
