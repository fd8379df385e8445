"""Snapshots: a consistent copy of a store, live or not, in a new DuckDB file.

A ``duckdb`` session left open on the live file holds the engine up (DuckDB lets one process
at a time have a file, so the run's writes wait and no new attempt starts). A snapshot is an
ordinary file of its own that any process may keep open as long as it likes.

The copy is one batch of the store's own thread (``COPY FROM DATABASE``, views included): it
takes the file like any other batch, for as long as the copy takes and no longer, and since
every write of this process goes through that thread and no other process can have the file
meanwhile, the copy is one point in time. It is written under a temporary name next to
``dest`` and linked into place only when complete, so ``dest`` is never a half-written file
and an existing file is never overwritten.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

from ..exceptions import InvalidInput
from .store import MEMORY, Store


def quote_path(path: str | os.PathLike) -> str:
    """``path`` as a SQL string literal."""
    return "'" + str(path).replace("'", "''") + "'"


def copy_database(con, dest: str | os.PathLike) -> None:
    """Copy everything of ``con``'s database (tables, views, sequences, macros) into a new
    DuckDB file at ``dest``, in the calling thread, with ``con``'s view of this moment."""
    (source,) = con.execute("select current_database()").fetchone()
    alias = f"agentorch_copy_{uuid.uuid4().hex[:8]}"
    con.execute(f"attach {quote_path(dest)} as {alias}")
    try:
        con.execute(f'copy from database "{source}" to {alias}')
    finally:
        con.execute(f"detach {alias}")


def snapshot(store: Store, dest: str | os.PathLike) -> Path:
    """Write a consistent copy of ``store`` to the new file ``dest`` and return its path.

    Refuses (:class:`InvalidInput`) a ``dest`` that exists, or that is the store itself."""
    dest = Path(dest).expanduser().absolute()
    if dest.exists() or Path(f"{dest}.wal").exists():
        raise InvalidInput(f"{dest} exists: a snapshot is written to a new file only")
    if store.path != MEMORY and dest.resolve() == Path(store.path).resolve():
        raise InvalidInput(f"{dest} is the store itself")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        store.call_sync(lambda con: copy_database(con, tmp))
        os.chmod(tmp, 0o600)  # conversations and tool output: their owner's alone
        try:
            os.link(tmp, dest)  # fails if dest appeared meanwhile: never overwrites
        except FileExistsError:
            raise InvalidInput(f"{dest} exists: a snapshot is written to a new file only") from None
        except OSError:  # a file system without hard links
            if dest.exists():
                raise InvalidInput(f"{dest} exists: a snapshot is written to a new file only") from None
            os.replace(tmp, dest)
    finally:
        for name in (tmp, Path(f"{tmp}.wal")):
            with contextlib.suppress(FileNotFoundError):
                name.unlink()
    return dest
