"""Two small things every reader and writer of the store needs: a transaction that leaves
nothing behind when it fails, and rows as dicts."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def transaction(con) -> Iterator[Any]:
    """``with transaction(con): ...`` commits the block, or rolls it back if it raises."""
    con.execute("begin transaction")
    try:
        yield con
    except BaseException:
        con.execute("rollback")
        raise
    con.execute("commit")


def dicts(cursor) -> list[dict[str, Any]]:
    """The rows of an executed cursor as dicts keyed by column name."""
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def select(con, sql: str, params: list | None = None) -> list[dict[str, Any]]:
    return dicts(con.execute(sql, params or []))
