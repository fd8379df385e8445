"""Change notices: after each commit, the store tells the listening Jupyter servers what changed.

A Jupyter server with the agentorch extension (:mod:`agentorch_nb.server.feed`) listens on a
UDP port on 127.0.0.1 and registers it in ``<jupyter runtime dir>/agentorch/listeners/`` as
``<pid>-<random>.json`` = ``{"port", "token", "pid"}`` (folder 0700, file 0600). After a batch
of writes has committed, the store's thread sends each listener the batch's new rows of
``runs``, ``tasks`` and ``interrupts`` (a few columns each) and the cost of its ``llm_calls``
per run, as JSON datagrams carrying the listener's token. Nothing waits for anyone: the
socket is non-blocking, a full buffer drops the datagram, and a failure is logged at debug
level; the store never sees it. With nobody listening a commit costs one ``os.stat``.

The notice is sent while the store still holds the DuckDB file, and its ``ts`` is taken after
the commit. A reader in another process holds the file alone, so a notice whose ``ts`` is
earlier than a moment at which that reader held the file announces rows the reader sees,
and a later one rows it does not (the server's feed relies on this to merge a snapshot with
notices exactly).

A datagram is ``<listener's token> <seq>\\n`` followed by a zlib-compressed JSON object of
at most ~48 KB (task rows compress about tenfold; a bigger notice is split into several
datagrams, each self-contained)::

    {"v": 1, "store": "/abs/path.duckdb", "sender": hex, "ts": float,
     "runs": [...], "tasks": [...], "interrupts": [...], "costs": [{"run_id", "cost_usd"}]}

``sender`` names this store object (one per file and process) and ``seq`` numbers its
datagrams, so a listener can tell that it missed one; a commit announced to nobody takes a
number too, so a listener that saw ``seq`` 1 and no gap has seen every commit of that store
object. :func:`parse` reads a datagram.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import hmac
import json
import logging
import os
import secrets
import socket
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:  # imported here, not in the store's thread (an import there may meet interpreter exit)
    from jupyter_core.paths import jupyter_runtime_dir
except ImportError:  # pragma: no cover - jupyterlab depends on it
    jupyter_runtime_dir = None

log = logging.getLogger("agentorch_nb.store.notify")

VERSION = 1
MAX_DATAGRAM = 48 * 1024
MAX_NOTICE = 8 << 20  # bytes of JSON a datagram may inflate to
MAX_TEXT = 2000  # characters kept of an objective, error, title or reason
RECHECK_SECONDS = 1.0  # how often the listeners' processes and ports are checked again
RACY_SECONDS = 2.0  # a folder changed this recently is listed again (coarse mtimes)

FIELDS: dict[str, tuple[str, ...]] = {
    "runs": ("run_id", "status", "objective", "error", "created_at", "updated_at",
             "finished_at"),
    "tasks": ("run_id", "task_id", "title", "status", "status_reason", "attempts", "updated_at"),
    "interrupts": ("run_id", "interrupt_id", "task_id", "kind", "reason", "resolved_at"),
}
COSTS = "llm_calls"


def registry_dir() -> Path | None:
    """``<jupyter runtime dir>/agentorch/listeners`` (None without jupyter_core)."""
    key = tuple(os.environ.get(k) for k in ("JUPYTER_RUNTIME_DIR", "JUPYTER_DATA_DIR",
                                            "JUPYTER_PLATFORM_DIRS", "XDG_DATA_HOME", "HOME"))
    cached = _dirs.get(key)
    if cached is None:
        if jupyter_runtime_dir is None:
            return None
        cached = _dirs[key] = Path(jupyter_runtime_dir()) / "agentorch" / "listeners"
    return cached


_dirs: dict[tuple, Path] = {}


@dataclass(frozen=True)
class Listener:
    port: int
    token: str
    pid: int


def read_listener(path: Path) -> Listener | None:
    """The listener a registry file names, if the file is ours and private (else None)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if st.st_uid != os.getuid() or st.st_mode & 0o077:
            return None
        try:
            d = json.loads(f.read(4096))
            port, token, pid = int(d["port"]), str(d["token"]), int(d["pid"])
        except (ValueError, KeyError, TypeError):
            return None
    if not (0 < port < 65536 and len(token) == 64):
        return None
    return Listener(port, token, pid)


def pid_alive(pid: int) -> bool:
    """Is ``pid`` a live process of this user (another user's is "not alive" here)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    except OSError:
        return False
    return True


def udp_ports_of_user() -> set[int] | None:
    """Local UDP ports bound on 127.0.0.1 or 0.0.0.0 by sockets of this user (Linux), or
    None where ``/proc/net/udp`` cannot tell."""
    try:
        with open("/proc/net/udp") as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return None
    uid, ports = os.getuid(), set()
    for line in lines:
        cols = line.split()
        try:
            addr, port = cols[1].split(":")
            if int(cols[7]) == uid and addr in ("0100007F", "7F000001", "00000000"):
                ports.add(int(port, 16))
        except (IndexError, ValueError):
            continue
    return ports


def live(listeners: list[Listener]) -> list[Listener]:
    """The listeners whose server process is alive and ours, and whose port is still bound
    by this user: a port a dead server left is never sent to, whoever took it since."""
    ports = udp_ports_of_user()
    return [ln for ln in listeners
            if pid_alive(ln.pid) and (ports is None or ln.port in ports)]


class Registry:
    """The listeners, read again only when the folder changed (one ``os.stat`` otherwise)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._folder: Path | None = None
        self._stamp: tuple | None = None
        self._all: list[Listener] = []
        self._live: list[Listener] = []
        self._checked = 0.0

    def listeners(self) -> list[Listener]:
        folder = registry_dir()
        if folder is None:
            return []
        try:
            st = os.stat(folder)
        except OSError:
            return []
        # A folder others could write to could name their ports: never trust one.
        if st.st_uid != os.getuid() or st.st_mode & 0o022:
            return []
        now = time.time()
        stamp = (st.st_mtime_ns, st.st_ino, st.st_dev)
        with self._lock:
            if stamp != self._stamp or folder != self._folder or now - st.st_mtime < RACY_SECONDS:
                self._folder, self._stamp = folder, stamp
                self._all = [ln for name in _names(folder)
                             if (ln := read_listener(folder / name)) is not None]
                self._checked = 0.0
            if self._all and now - self._checked >= RECHECK_SECONDS:
                self._live, self._checked = live(self._all), now
            elif not self._all:
                self._live = []
            return self._live


def _names(folder: Path) -> list[str]:
    try:
        return [n for n in os.listdir(folder) if n.endswith(".json") and not n.startswith(".")]
    except OSError:
        return []


def register(folder: Path, port: int, token: str) -> Path:
    """Write ``<pid>-<random>.json`` (mode 0600, through a temporary name) in ``folder``
    (made 0700), and return its path."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for d in (folder, folder.parent):
        if d.stat().st_uid == os.getuid():
            os.chmod(d, 0o700)
    name = f"{os.getpid()}-{secrets.token_hex(4)}.json"
    tmp = folder / f".{name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"port": port, "token": token, "pid": os.getpid()}, f)
    os.replace(tmp, folder / name)
    return folder / name


def prune(folder: Path) -> list[str]:
    """Remove the registry files (and temporary files) of servers that are gone."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        pid = name.lstrip(".").split("-", 1)[0]
        if not pid.isdigit() or pid_alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            os.unlink(folder / name)
            removed.append(name)
    return removed


REGISTRY = Registry()
_sock: socket.socket | None = None
_sock_lock = threading.Lock()


def _socket() -> socket.socket:
    global _sock
    with _sock_lock:
        if _sock is None:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setblocking(False)
            _sock = s
        return _sock


def _text(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, str) and len(value) > MAX_TEXT:
        return value[:MAX_TEXT] + "…"
    return value


def _pick(row: dict, fields: tuple[str, ...]) -> dict:
    return {f: _text(row.get(f)) for f in fields}


def items(upserts: dict[str, dict], appends: dict[str, list]) -> list[tuple[str, str]]:
    """The notice's entries as (section, JSON text), in table order."""
    out = []
    for table, fields in FIELDS.items():
        for row in upserts.get(table, {}).values():
            out.append((table, json.dumps(_pick(row, fields), default=str)))
    costs: dict[str, float] = {}
    for row in appends.get(COSTS, ()):
        cost = row.get("cost_usd")
        if row.get("run_id") is not None:
            costs[row["run_id"]] = costs.get(row["run_id"], 0.0) + float(cost or 0.0)
    for run_id, cost in costs.items():
        out.append(("costs", json.dumps({"run_id": run_id, "cost_usd": cost}, default=str)))
    return out


def pack(entries: list[tuple[str, str]], limit: int) -> list[list[tuple[str, str]]]:
    """The entries in groups of at most ``limit`` bytes of JSON (an entry never spans two)."""
    groups, current, size = [], [], 0
    for entry in entries:
        n = len(entry[1]) + len(entry[0]) + 8
        if current and size + n > limit:
            groups.append(current)
            current, size = [], 0
        current.append(entry)
        size += n
    if current:
        groups.append(current)
    return groups


def body(head: str, group: list[tuple[str, str]]) -> str:
    """The JSON object: ``head`` (fields of its own) and the group's entries by section."""
    sections: dict[str, list[str]] = {}
    for section, text in group:
        sections.setdefault(section, []).append(text)
    return "{" + head + "".join(f',"{s}":[{",".join(t)}]' for s, t in sections.items()) + "}"


def frames(head: str, entries: list[tuple[str, str]], limit: int = MAX_DATAGRAM,
           raw: int = 8 * MAX_DATAGRAM) -> list[bytes]:
    """Compressed bodies of at most ``limit`` bytes: entries are grouped by ``raw`` bytes of
    JSON (rows compress about 10x), and a group that still compresses too big is halved."""
    out = []
    for group in pack(entries, raw):
        z = zlib.compress(body(head, group).encode(), 1)
        if len(z) <= limit or len(group) == 1:
            out.append(z)
        else:
            out += frames(head, group[:len(group) // 2], limit, raw)
            out += frames(head, group[len(group) // 2:], limit, raw)
    return out


class Notifier:
    """Sends one store's change notices (called by the store's thread after each commit)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sender = secrets.token_hex(8)
        self.seq = 0
        self.sent = 0  # datagrams handed to the socket (tests, benchmarks)
        self.dropped = 0

    def committed(self, upserts: dict[str, dict], appends: dict[str, list]) -> None:
        """The batch with these rows has committed: tell the listeners. Never raises."""
        try:
            if not (any(t in upserts for t in FIELDS) or COSTS in appends):
                return
            ts = time.time()  # after the commit, while the store still holds the file
            listeners = REGISTRY.listeners()
            if not listeners:
                self.seq += 1  # a commit nobody heard of: whoever listens later sees a gap
                return
            entries = items(upserts, appends)
            if not entries:
                return
            self._send(listeners, ts, entries)
        except Exception:  # noqa: BLE001 - a notice must never fail a write
            log.debug("%s: change notice not sent", self.path, exc_info=True)

    def _send(self, listeners: list[Listener], ts: float, entries: list[tuple[str, str]]) -> None:
        sock = _socket()
        head = f'"v":{VERSION},"store":{json.dumps(self.path)},"sender":"{self.sender}","ts":{ts!r}'
        for z in frames(head, entries, MAX_DATAGRAM - 128):
            self.seq += 1
            for ln in listeners:
                try:
                    sock.sendto(frame(ln.token, self.seq, z), ("127.0.0.1", ln.port))
                    self.sent += 1
                except (BlockingIOError, InterruptedError):
                    self.dropped += 1  # the listener's buffer is full: its feed resyncs
                except OSError:
                    self.dropped += 1
                    log.debug("%s: notice to port %d failed", self.path, ln.port, exc_info=True)


def frame(token: str, seq: int, z: bytes) -> bytes:
    """One datagram: ``<token> <seq>\\n`` then the zlib-compressed JSON body."""
    return f"{token} {seq}\n".encode() + z


def parse(data: bytes, token: bytes) -> dict | None:
    """The notice in ``data`` if it carries ``token`` (else None); raises ValueError if the
    token is right but the rest is not a notice."""
    n = len(token)
    if len(data) <= n + 2 or not hmac.compare_digest(data[:n], token) or data[n:n + 1] != b" ":
        return None
    end = data.index(b"\n", n, n + 24)
    seq = int(data[n + 1:end])
    inflate = zlib.decompressobj()
    try:
        text = inflate.decompress(data[end + 1:], MAX_NOTICE)
    except zlib.error as exc:
        raise ValueError(f"notice does not inflate: {exc}") from exc
    if inflate.unconsumed_tail:
        raise ValueError("notice too large")
    notice = json.loads(text)
    if not isinstance(notice, dict):
        raise ValueError("notice is not an object")
    notice["seq"] = seq
    return notice
