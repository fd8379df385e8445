"""Sharing the store's file with other processes: who holds it and since when, DuckDB's
lock errors, the ``.waiting`` file that asks an agentorch holder to let go, and the check
that a file is a DuckDB database before anything opens it."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..exceptions import StoreError


@dataclass(frozen=True)
class Busy:
    """Another process holds the store file: which one, and since when."""

    holder: int | None  # its pid, when DuckDB names it
    since: float  # time.time() when this process began to wait

    def describe(self) -> str:
        who = f"process {self.holder}" if self.holder else "another process"
        if self.holder:
            with contextlib.suppress(OSError):
                who += f" ({Path(f'/proc/{self.holder}/comm').read_text().strip()})"
        when = time.strftime("%H:%M:%S", time.localtime(self.since))
        return f"{who}, since {when} ({time.time() - self.since:.0f} s)"


def lock_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "could not set lock" in text or "conflicting lock" in text


def check_file(path: str) -> None:
    """Refuse, before anything is written, a file that is not a DuckDB database.

    Reading the header means opening the file, and closing any descriptor of a file drops
    every POSIX lock this process holds on it, DuckDB's own included: another process could
    then open the database beside us. So the header is read only when no descriptor of
    this process has the file open (then no lock can be held); otherwise DuckDB has it
    open, and it is a database."""
    if not os.path.exists(path):
        return
    if os.path.isdir(path):
        raise StoreError(f"store {path} is a directory: name a file, e.g. "
                         f"{os.path.join(path, 'agentorch.duckdb')}")
    if open_here(path) is not False:
        return  # open in this process (or cannot be told): DuckDB will say if it is not one
    with open(path, "rb") as fh:
        head = fh.read(12)
    if head[8:12] != b"DUCK":
        raise StoreError(
            f"{path} is not a DuckDB database (an agentorch store is one): point store= at an "
            "agentorch store, or at a path that does not exist yet to make a new one")


def open_here(path: str) -> bool | None:
    """Whether a descriptor of this process has ``path`` open; None where /proc cannot tell."""
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        return None
    real = os.path.realpath(path)
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):
            if os.readlink(fd) == real:
                return True
    return False


def touch(path: str) -> None:
    try:
        with open(path, "a"):
            os.utime(path)
    except OSError:
        pass
