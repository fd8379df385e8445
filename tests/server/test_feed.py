"""The live change feed: an engine's commits reach Jupyter's event bus through a UDP notice.

Unit level: a real Store commits, and a plain UDP socket (or a Feed with a real EventLogger)
registered in a temporary Jupyter runtime folder receives. End to end: a real engine in a
subprocess runs a DAG under the root of a running Jupyter server (pytest-jupyter), and
listeners on ``serverapp.event_logger`` see its run and task events.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import datetime as dt
import json
import os
import secrets
import socket
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import duckdb
import pytest
from jupyter_events import EventLogger

from agentorch_nb.model import utcnow
from agentorch_nb.server import feed as feed_mod
from agentorch_nb.server.stores import StoreIndex, store_id
from agentorch_nb.store import Store, notify

SCHEMA = feed_mod.SCHEMAS


# ------------------------------------------------------------------ helpers
@pytest.fixture
def runtime(tmp_path, monkeypatch) -> Path:
    """A private Jupyter runtime folder for this test (engines and feeds find it by env)."""
    folder = tmp_path / "runtime"
    folder.mkdir(mode=0o700)
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(folder))
    return folder


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "root" / "ws" / ".agentorch" / "agentorch.duckdb"
    s = Store.open(path, flush_interval=0.01)
    yield s
    s.close()


class Listener:
    """A plain UDP socket registered as a listener."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.token = secrets.token_hex(32)
        self.file = notify.register(notify.registry_dir(), self.port, self.token)

    def receive(self, timeout: float = 3.0) -> list[tuple[bytes, dict]]:
        """Every datagram that arrives until ``timeout`` passes with nothing new."""
        out = []
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                out.append((data, notify.parse(data, self.token.encode())))
                self.sock.settimeout(0.3)
        except TimeoutError:
            return out

    def close(self) -> None:
        self.sock.close()
        self.file.unlink(missing_ok=True)


@pytest.fixture
def listener(runtime):
    ln = Listener()
    yield ln
    ln.close()


def run_row(run_id: str, status: str = "running", **extra) -> dict:
    now = utcnow()
    return {"run_id": run_id, "objective": "make it so", "status": status, "created_at": now,
            "updated_at": now, **extra}


def task_row(run_id: str, task_id: str, status: str, **extra) -> dict:
    now = utcnow()
    return {"run_id": run_id, "task_id": task_id, "title": f"title of {task_id}",
            "profile": "code", "status": status, "attempts": 0, "retries_used": 0,
            "max_retries": 3, "created_at": now, "updated_at": now, **extra}


def interrupt_row(run_id: str, interrupt_id: str, task_id: str, resolved: bool = False) -> dict:
    return {"run_id": run_id, "interrupt_id": interrupt_id, "task_id": task_id, "ts": utcnow(),
            "kind": "human", "reason": "which design?",
            "resolved_at": utcnow() if resolved else None}


# ----------------------------------------------------------- engine side
def test_notice_after_commit_reaches_listener(listener, store, monkeypatch):
    """Runs, tasks, interrupts and the batch's spend per run arrive in one datagram, sent
    only once another connection can read the rows it announces."""
    seen: list[set] = []
    real = notify._socket()

    class Checking:
        """At the moment of sending (in the store's thread) a second connection reads."""

        def sendto(self, data, addr):
            con = duckdb.connect(store.path)
            try:
                seen.append(set(con.execute("select task_id, status from tasks").fetchall()))
            finally:
                con.close()
            return real.sendto(data, addr)

    monkeypatch.setattr(notify, "_socket", lambda: Checking())
    store.upsert("runs", run_row("r1", error=None))
    store.upsert("tasks", task_row("r1", "t1", "ready"))
    store.upsert("tasks", task_row("r1", "t2", "planned", status_reason="waits for t1"))
    store.upsert("interrupts", interrupt_row("r1", "i1", "t2"))
    store.append("llm_calls", {"run_id": "r1", "cost_usd": 0.25})
    store.append("llm_calls", {"run_id": "r1", "cost_usd": 0.5})
    store.append("llm_calls", {"run_id": "r1", "cost_usd": None})
    store.append("events", {"run_id": "r1", "seq": 1, "kind": "noise", "payload": {}})
    store.flush_sync()
    [(_, notice)] = listener.receive()
    assert notice["store"] == store.path and notice["v"] == 1 and notice["seq"] == 1
    [run] = notice["runs"]
    assert run == {"run_id": "r1", "status": "running", "objective": "make it so",
                   "error": None, "created_at": run["created_at"],
                   "updated_at": run["updated_at"], "finished_at": None}
    assert {(t["task_id"], t["status"], t["status_reason"]) for t in notice["tasks"]} == {
        ("t1", "ready", None), ("t2", "planned", "waits for t1")}
    assert notice["interrupts"][0]["interrupt_id"] == "i1"
    assert notice["interrupts"][0]["resolved_at"] is None
    assert notice["costs"] == [{"run_id": "r1", "cost_usd": 0.75}]
    # what the notice announced was visible to another connection when it was sent
    assert seen == [{("t1", "ready"), ("t2", "planned")}]


def test_no_notice_without_commit_or_relevant_rows(listener, store):
    """A batch that fails to commit announces nothing; neither does one that only appends
    events and messages."""
    store.upsert("runs", run_row("r1"))
    store.flush_sync()
    assert len(listener.receive()) == 1
    bad = task_row("r1", "t1", "ready")
    bad["title"] = None  # NOT NULL: the transaction rolls back
    store.upsert("tasks", bad)
    with pytest.raises(duckdb.Error):
        store.flush_sync()
    store.append("events", {"run_id": "r1", "seq": 1, "kind": "noise", "payload": {}})
    store.append("messages", {"run_id": "r1", "role": "user", "content": "hello"})
    store.flush_sync()
    assert listener.receive(timeout=0.5) == []
    assert store.rows("select count(*) as n from tasks")[0]["n"] == 0


def test_nobody_listening_costs_one_stat(runtime, store, monkeypatch):
    """With no listener folder, a commit costs the notifier one stat and sends nothing."""
    calls = []

    class CountingOs:
        def __getattr__(self, name):
            real = getattr(os, name)
            if not callable(real):
                return real
            return lambda *a, **k: calls.append(name) or real(*a, **k)

    monkeypatch.setattr(notify, "os", CountingOs())
    before = store.notifier.sent
    for i in range(3):
        store.upsert("tasks", task_row("r1", f"t{i}", "ready"))
        store.flush_sync()
    assert [c for c in calls if c != "environ"] == ["stat"] * 3
    assert store.notifier.sent == before


def test_big_notice_is_split(listener, store):
    """A plan of 3,000 tasks goes out in several datagrams, none over 48 KB, each one a
    complete notice, together every task once."""
    for i in range(3000):
        store.upsert("tasks", task_row("r1", f"t{i}", "planned",
                                       status_reason=secrets.token_hex(40)))
    store.flush_sync()
    got = listener.receive()
    assert len(got) > 1
    assert all(len(data) <= notify.MAX_DATAGRAM for data, _ in got)
    assert [n["seq"] for _, n in got] == list(range(1, len(got) + 1))
    ids = [t["task_id"] for _, n in got for t in n["tasks"]]
    assert sorted(ids) == sorted(f"t{i}" for i in range(3000))


def test_wrong_token_and_strangers(listener, store, runtime):
    """The registry is private; a datagram is readable only with the listener's token; a
    listener whose server is gone (or whose port no process of ours holds) gets nothing."""
    folder = notify.registry_dir()
    assert folder.stat().st_mode & 0o777 == 0o700
    assert listener.file.stat().st_mode & 0o777 == 0o600
    store.upsert("runs", run_row("r1"))
    store.flush_sync()
    [(data, notice)] = listener.receive()
    assert notice is not None
    assert notify.parse(data, secrets.token_hex(32).encode()) is None
    assert notify.parse(b"x" * 40, listener.token.encode()) is None

    # A registry file of a dead process is skipped by engines and pruned by a server.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.1", 0))
    stale = folder / f"{dead}-0000.json"
    stale.write_text(json.dumps({"port": other.getsockname()[1], "token": "0" * 64,
                                 "pid": int(dead)}))
    stale.chmod(0o600)
    os.utime(folder, (0, 0))  # an old folder: the listener list is read once, then cached
    assert {ln.port for ln in notify.REGISTRY.listeners()} == {listener.port}
    assert notify.prune(folder) == [stale.name]
    # A port no socket of this user holds (its server died) is not sent to either.
    port = other.getsockname()[1]
    assert notify.live([notify.Listener(port, "0" * 64, os.getpid())]) != []
    other.close()
    assert notify.live([notify.Listener(port, "0" * 64, os.getpid())]) == []


# ------------------------------------------------------------ server side
class Bus:
    """A real EventLogger with our schemas and a listener that keeps what it hears."""

    def __init__(self) -> None:
        self.logger = EventLogger()
        feed_mod.register_schemas(self.logger)
        self.events: list[tuple[str, dict]] = []
        self.changed = asyncio.Event()
        for name, sid in SCHEMA.items():
            self.logger.add_listener(schema_id=sid, listener=self._hear(name))

    def _hear(self, name):
        async def hear(logger, schema_id, data):
            self.events.append((name, {k: v for k, v in data.items() if not k.startswith("__")}))
            self.changed.set()
        return hear

    def of(self, name: str) -> list[dict]:
        return [d for n, d in self.events if n == name]

    async def until(self, predicate, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            self.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; events: {self.events[-5:]}")
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except TimeoutError:
                pass


@pytest.fixture
async def new_feed(runtime, tmp_path):
    """A Feed (not started) on a real EventLogger, for a server whose root is tmp/root."""
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    app = types.SimpleNamespace(index=StoreIndex(str(root), []),
                                executor=cf.ThreadPoolExecutor(max_workers=2))
    bus = Bus()
    f = feed_mod.Feed(app, bus.logger)
    f.bus = bus
    yield f
    f.stop()
    app.executor.shutdown(wait=False)


@pytest.fixture
async def feed(new_feed):
    await new_feed.start()
    return new_feed


async def test_feed_emits_task_interrupt_and_run_events(feed, store):
    bus = feed.bus
    store.upsert("runs", run_row("r1"))
    store.upsert("tasks", task_row("r1", "t1", "active", attempts=1))
    store.upsert("tasks", task_row("r1", "t2", "planned"))
    store.append("llm_calls", {"run_id": "r1", "cost_usd": 0.5})
    await store.flush()
    await bus.until(lambda: bus.of("run"))
    sid = store_id(store.path)
    assert feed.file.exists() and oct(feed.file.stat().st_mode & 0o777) == "0o600"
    assert {(t["task_id"], t["status"], t["attempts"]) for t in bus.of("task")} == {
        ("t1", "active", 1), ("t2", "planned", 0)}
    [run] = bus.of("run")
    # the first notice is in the snapshot the feed loads: its spend counts once
    assert run == {"store": sid, "run_id": "r1", "status": "running", "objective": "make it so",
                   "tasks": 2, "counts": {"active": 1, "planned": 1}, "cost_usd": 0.5,
                   "waiting": 0, "updated_at": run["updated_at"], "error": None}
    assert run["updated_at"].endswith("+00:00")
    assert feed.loads == 0  # a run born after the feed started, all of whose notices it saw

    store.upsert("tasks", task_row("r1", "t1", "waiting_human", status_reason="stuck"))
    store.upsert("interrupts", interrupt_row("r1", "i1", "t1"))
    store.append("llm_calls", {"run_id": "r1", "cost_usd": 0.25})
    await store.flush()
    await bus.until(lambda: len(bus.of("run")) == 2)
    assert bus.of("interrupt") == [{"store": sid, "run_id": "r1", "task_id": "t1",
                                    "interrupt_id": "i1", "kind": "human",
                                    "reason": "which design?", "resolved": False}]
    assert bus.of("task")[-1]["status_reason"] == "stuck"
    run = bus.of("run")[-1]
    assert (run["counts"], run["waiting"], run["cost_usd"]) == (
        {"waiting_human": 1, "planned": 1}, 1, 0.75)

    store.upsert("interrupts", interrupt_row("r1", "i1", "t1", resolved=True))
    store.upsert("runs", run_row("r1", status="failed", error="gave up"))
    await store.flush()
    await bus.until(lambda: len(bus.of("run")) == 3)
    assert bus.of("interrupt")[-1]["resolved"] is True
    assert {k: bus.of("run")[-1][k] for k in ("status", "waiting", "error")} == {
        "status": "failed", "waiting": 0, "error": "gave up"}
    assert feed.run_state(sid, "r1") == {"tasks": 2, "counts": {"waiting_human": 1, "planned": 1},
                                         "cost_usd": 0.75, "waiting": 0, "status": "failed"}
    assert feed.run_state(sid, "nope") is None
    registered = feed.file
    feed.stop()
    assert not registered.exists()


async def test_feed_reads_a_run_it_did_not_see_from_the_start(new_feed, store):
    """A run with history the feed did not hear is read once; the notice that triggered the
    read is in the snapshot and counts once. A run born later, all of whose notices the feed
    saw, is never read; a new store object (sender) whose seq 1 the feed saw changes nothing
    for a run created before the feed started: that one is read."""
    feed, bus = new_feed, new_feed.bus
    sid = store_id(store.path)
    store.upsert("runs", run_row("r0"))
    store.upsert("tasks", task_row("r0", "t1", "complete"))
    store.append("llm_calls", {"run_id": "r0", "cost_usd": 0.25})
    await store.flush()
    await feed.start()

    store.upsert("tasks", task_row("r0", "t2", "ready"))
    store.append("llm_calls", {"run_id": "r0", "cost_usd": 0.5})
    store.upsert("runs", run_row("r1"))  # born after the start, but seq 1 went to nobody
    await store.flush()
    await bus.until(lambda: len(bus.of("run")) == 2)
    assert feed.loads == 2
    assert feed.run_state(sid, "r0") == {"tasks": 2, "counts": {"complete": 1, "ready": 1},
                                         "cost_usd": 0.75, "waiting": 0, "status": "running"}

    store.close()
    again = Store.open(store.path, flush_interval=0.01)  # a new sender: the feed sees seq 1
    try:
        old = run_row("r2")
        old["created_at"] = utcnow() - dt.timedelta(minutes=5)
        again.upsert("runs", old)
        again.upsert("runs", run_row("r3"))
        again.upsert("tasks", task_row("r3", "t1", "ready"))
        await again.flush()
        await bus.until(lambda: {"r2", "r3"} <= {r["run_id"] for r in bus.of("run")})
        assert feed.loads == 3  # r2 only
        assert feed.run_state(sid, "r3")["counts"] == {"ready": 1}
    finally:
        again.close()


async def test_feed_drops_strangers_and_foreign_stores(feed, store, tmp_path):
    bus = feed.bus
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    notice = notify.frames('"v":1,"store":' + json.dumps(store.path) + ',"sender":"x","ts":1.0',
                           [("runs", json.dumps({"run_id": "r9", "status": "running"}))])[0]
    sock.sendto(notify.frame(secrets.token_hex(32), 1, notice), ("127.0.0.1", feed.port))
    sock.sendto(b"garbage", ("127.0.0.1", feed.port))
    # a store outside the server's root, with the right token: dropped too
    outside = Store.open(tmp_path / "elsewhere" / ".agentorch" / "agentorch.duckdb")
    outside.upsert("tasks", task_row("r8", "t1", "ready"))
    outside.flush_sync()
    outside.close()
    store.upsert("tasks", task_row("r1", "t1", "ready"))
    await store.flush()
    await bus.until(lambda: bus.of("task"))
    await asyncio.sleep(0.2)
    assert [t["run_id"] for t in bus.of("task")] == ["r1"]
    assert feed.rejected == 2 and feed.received == 2
    sock.close()


async def test_lost_notice_is_made_good(feed, store, monkeypatch):
    """A datagram that never arrives leaves a gap in the sender's seq: the feed reads the
    run again and announces the task change it missed, and the totals are right."""
    bus = feed.bus
    sid = store_id(store.path)
    store.upsert("runs", run_row("r1"))
    store.upsert("tasks", task_row("r1", "t1", "ready"))
    store.upsert("tasks", task_row("r1", "t2", "ready"))
    await store.flush()
    await bus.until(lambda: bus.of("run"))

    real_send = notify.Notifier._send

    def lose(self, listeners, ts, entries):
        self.seq += 1  # sent, and lost on the way

    monkeypatch.setattr(notify.Notifier, "_send", lose)
    store.upsert("tasks", task_row("r1", "t1", "complete"))
    store.append("llm_calls", {"run_id": "r1", "cost_usd": 1.0})
    await store.flush()
    monkeypatch.setattr(notify.Notifier, "_send", real_send)
    store.upsert("tasks", task_row("r1", "t2", "active"))
    await store.flush()
    await bus.until(lambda: len(bus.of("run")) >= 2)
    assert feed.gaps == 1
    last = {t["task_id"]: t["status"] for t in bus.of("task")}
    assert last == {"t1": "complete", "t2": "active"}
    assert feed.run_state(sid, "r1") == {"tasks": 2, "counts": {"complete": 1, "active": 1},
                                         "cost_usd": 1.0, "waiting": 0, "status": "running"}


# ------------------------------------------------------------- end to end
ENGINE = textwrap.dedent("""
    import sys
    import agentorch_nb as ao
    from agentorch_nb.testing import Agents, TestDirector, TestStrategist, TestWorker, random_dag

    repo = sys.argv[1]
    ao.init_workspace(repo)
    orch = ao.Orchestrator(repo, config=ao.Config(max_concurrent_workers=3),
                           agents=Agents(TestDirector(random_dag(8, seed=3)),
                                         TestWorker(latency=0.05), TestStrategist()))
    run = orch.start("feed end to end")
    print(run.id, flush=True)
    print(run.wait_sync(60).value, flush=True)
""")


@pytest.mark.slow
async def test_engine_in_another_process_reaches_the_bus(jp_serverapp, jp_root_dir):
    ext = jp_serverapp.extension_manager.extension_points["agentorch_nb"].app
    if ext.feed is None:  # pytest-jupyter starts no extension: do what the server's start does
        await jp_serverapp.extension_manager.start_extension("agentorch_nb")
    assert ext.feed is not None and ext.feed.file.exists()
    bus = Bus.__new__(Bus)
    bus.logger, bus.events, bus.changed = jp_serverapp.event_logger, [], asyncio.Event()
    for name in ("run", "task"):
        jp_serverapp.event_logger.add_listener(schema_id=SCHEMA[name], listener=bus._hear(name))

    repo = Path(jp_root_dir) / "project"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", ENGINE, str(repo), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)  # inherits the test's env (JUPYTER_RUNTIME_DIR)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-2000:]
    run_id, status = out.decode().split()
    assert status == "completed"

    path = str((repo / ".agentorch" / "agentorch.duckdb").resolve())
    sid = ext.index.known(path).id
    assert sid == store_id(path)
    await bus.until(lambda: any(r["status"] == "completed" and r["counts"] == {"complete": 8}
                                for r in bus.of("run")), timeout=10)
    runs = bus.of("run")
    assert {r["store"] for r in runs} == {sid} and {r["run_id"] for r in runs} == {run_id}
    assert runs[-1]["status"] == "completed" and runs[-1]["tasks"] == 8
    final: dict[str, str] = {}
    for t in bus.of("task"):
        assert (t["store"], t["run_id"]) == (sid, run_id)
        final[t["task_id"]] = t["status"]
    assert len(final) == 8 and set(final.values()) == {"complete"}
    assert "active" in {t["status"] for t in bus.of("task")}  # changes, not just the end
    assert ext.feed.run_state(sid, run_id)["counts"] == {"complete": 8}
