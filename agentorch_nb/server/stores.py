"""Which stores the server knows: every ``.agentorch/agentorch.duckdb`` under its root
directory, and the files named in ``c.AgentorchApp.stores``.

A request names a store by its id (a hash of its path), never by a path. The root is walked
in a worker thread, so the server's loop never waits on the disk; a walk runs at start, every
``scan_interval`` seconds after, and at once when an engine reports a store the index has not
seen (see :mod:`agentorch_nb.server.feed`). Opening a store here opens no connection: the
store's own thread holds the file only for the length of each read.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..store import Store

log = logging.getLogger("agentorch_nb.server")
STORE_FILE = Path(".agentorch") / "agentorch.duckdb"
# Folders that never hold a workspace of ours, skipped by the walk.
SKIP = frozenset({"node_modules", "__pycache__", "site-packages", ".git", ".ipynb_checkpoints",
                  ".venv", "venv", ".tox", ".mypy_cache"})
# A REST read waits this long for an engine's hold on the file before it answers 503.
READ_LOCK_TIMEOUT = 10.0


def store_id(path: str) -> str:
    return "s" + hashlib.sha1(path.encode()).hexdigest()[:11]


@dataclass
class StoreRef:
    id: str
    path: str
    root: str  # the server's root directory, for paths shown relative to it
    _store: Store | None = field(default=None, repr=False)

    @property
    def workspace(self) -> str:
        return str(Path(self.path).parent.parent)

    def relative(self, path: str | os.PathLike) -> str | None:
        """``path`` relative to the server's root (as JupyterLab opens files), or None when
        it lies outside it."""
        try:
            return Path(path).resolve().relative_to(self.root).as_posix()
        except ValueError:
            return None

    @property
    def store(self) -> Store:
        if self._store is None or self._store.closed:
            self._store = Store.open(self.path, create=False, lock_timeout=READ_LOCK_TIMEOUT)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    def describe(self) -> dict:
        try:
            size = os.path.getsize(self.path)
        except OSError:
            size = None
        return {"id": self.id, "path": self.relative(self.path) or self.path,
                "workspace": self.relative(self.workspace) or self.workspace, "size_bytes": size}


class StoreIndex:
    """The stores this server serves, by id."""

    def __init__(self, root_dir: str, configured: list[str], *, depth: int = 6) -> None:
        self.root = str(Path(root_dir).expanduser().resolve())
        self.configured = [str(Path(self.root, p).expanduser().resolve()) for p in configured]
        self.depth = depth
        self._by_id: dict[str, StoreRef] = {}
        self._scan_lock = asyncio.Lock()
        self._scanned_at = float("-inf")
        for path in self.configured:
            self._add(path)

    def __iter__(self):
        return iter(list(self._by_id.values()))

    def get(self, sid: str) -> StoreRef | None:
        return self._by_id.get(sid)

    def allowed(self, path: str) -> bool:
        """May this server serve the store at ``path``: under its root, or configured."""
        if path in self.configured:
            return True
        p = Path(path)
        return p.name == STORE_FILE.name and p.parent.name == STORE_FILE.parent.name \
            and p.is_relative_to(self.root)

    def known(self, path: str) -> StoreRef | None:
        """The store at ``path`` if this server may serve it (added on first sight)."""
        try:
            path = str(Path(path).resolve())
        except OSError:
            return None
        if not self.allowed(path):
            return None
        return self._add(path)

    def _add(self, path: str) -> StoreRef:
        sid = store_id(path)
        ref = self._by_id.get(sid)
        if ref is None:
            ref = self._by_id[sid] = StoreRef(sid, path, self.root)
            log.info("agentorch store %s: %s", sid, path)
        return ref

    async def fresh(self, max_age: float) -> None:
        """Walk the root unless a walk finished less than ``max_age`` seconds ago."""
        if time.monotonic() - self._scanned_at > max_age:
            await self.scan()

    async def scan(self) -> None:
        """Walk the root (in a thread) and add what it finds; forget stores whose file is gone."""
        async with self._scan_lock:
            started = time.monotonic()
            found = await asyncio.to_thread(find_stores, self.root, self.depth)
            for path in found:
                self._add(path)
            for ref in list(self._by_id.values()):
                if ref.path not in self.configured and not os.path.exists(ref.path):
                    del self._by_id[ref.id]
                    ref.close()
            # Opening a store checks its file: done here, in a thread, not in a request.
            await asyncio.to_thread(_open_all, list(self._by_id.values()))
            self._scanned_at = started

    def close(self) -> None:
        for ref in self._by_id.values():
            ref.close()


def _open_all(refs: list[StoreRef]) -> None:
    for ref in refs:
        try:
            ref.store  # noqa: B018 - opened (and kept) for later reads
        except Exception as exc:  # noqa: BLE001 - a bad file is reported when it is read
            log.debug("agentorch store %s cannot be opened: %s", ref.path, exc)  # GET /runs says


def find_stores(root: str, depth: int) -> list[str]:
    """Every ``.agentorch/agentorch.duckdb`` at most ``depth`` folders below ``root``;
    hidden folders, virtual environments and symbolic links are not entered."""
    found = []
    base = root.rstrip(os.sep).count(os.sep)
    for here, dirs, _files in os.walk(root, followlinks=False):
        candidate = os.path.join(here, STORE_FILE)
        if os.path.isfile(candidate):
            found.append(candidate)
        if here.count(os.sep) - base >= depth:
            dirs[:] = []
            continue
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in SKIP]
    return found
