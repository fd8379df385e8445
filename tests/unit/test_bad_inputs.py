"""Bad input refused with a message that says what to do, and nothing changed: a store that
is not DuckDB, one of a newer schema, SQL that would change the record, a stranger on the
wake-up port; and the store kept private to its owner."""

import asyncio
import os
import stat
import subprocess
import sys
import textwrap

import duckdb
import pytest

import agentorch_nb as ao
from agentorch_nb.store import SCHEMA_VERSION, Store
from agentorch_nb.testing import TestWorker


def test_a_store_that_is_not_duckdb_is_refused_at_construction(repo, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes, not a database\n")
    with pytest.raises(ao.StoreError, match="is not a DuckDB database"):
        ao.Orchestrator(repo, store=notes)
    assert notes.read_text() == "my notes, not a database\n"
    with pytest.raises(ao.StoreError, match="is a directory"):
        ao.Orchestrator(repo, store=tmp_path)


def test_a_newer_schema_is_refused_and_the_file_let_go(tmp_path):
    path = tmp_path / "new.duckdb"
    con = duckdb.connect(str(path))
    con.execute("create table schema_version (version integer, applied_at timestamp)")
    con.execute("insert into schema_version values (?, now())", [SCHEMA_VERSION + 1])
    con.close()
    store = Store.open(path)
    with pytest.raises(ao.SchemaTooNew, match="upgrade agentorch_nb"):
        store.rows("select 1")
    # Another process can open the file at once: this one does not keep it.
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import duckdb
        con = duckdb.connect({str(path)!r})
        print(con.execute("select max(version) from schema_version").fetchone()[0])""")],
        capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == str(SCHEMA_VERSION + 1), out.stderr
    store.close()


async def test_sql_reads_unless_asked_to_write(orch_factory):
    orch = orch_factory([ao.TaskSpec("a")])
    run = orch.start("x")
    await run.wait(10)
    for statement in ("drop table tasks", "delete from events",
                      "select 1; update tasks set status = 'planned'", "copy tasks to 'x.csv'"):
        with pytest.raises(ao.InvalidInput, match="would change the store"):
            ao.sql(statement, store=orch.store.path)
        with pytest.raises(ao.InvalidInput, match="write=True"):
            orch.sql(statement)
    assert len(ao.sql("select * from tasks", store=orch.store.path)) == 1
    ao.sql("create table notes (t varchar)", store=orch.store.path, write=True)
    ao.sql("insert into notes values ('why t1 failed')", write=True)
    assert ao.sql("select t from notes").t.tolist() == ["why t1 failed"]
    with pytest.raises(ao.InvalidInput, match="does not parse"):
        ao.sql("selec 1")


async def test_a_run_id_named_in_advance_must_be_well_formed_and_free(orch_factory):
    orch = orch_factory([ao.TaskSpec("a")])
    run = orch.start("x", run_id="run-batch_1")
    assert run.id == "run-batch_1"
    await run.wait(10)
    for bad, words in (("run-batch_1", "taken"), ("../etc", "not a run id"),
                       ("run-" + "x" * 41, "not a run id"), (7, "not a run id")):
        with pytest.raises(ao.InvalidInput, match=words):
            orch.start("y", run_id=bad)
    assert ao.sql("select count(*) as n from runs", store=orch.store.path).n[0] == 1


async def test_a_stranger_on_the_wake_up_port_changes_nothing(orch_factory):
    gate = asyncio.Event()

    class Gated(TestWorker):  # keeps the run live until the strangers have been and gone
        async def run(self, task, ctx):
            await gate.wait()
            return await super().run(task, ctx)

    run = orch_factory([ao.TaskSpec("a")], worker=Gated()).start("x")
    engine = run.engine
    while engine.engine_address is None:  # the inbox opens on the loop's first turns
        await asyncio.sleep(0.01)
    host, port = engine.engine_address.rsplit(":", 1)
    for payload in (b"x" * 1_000_000 + b"\n", b"not-the-run\n", b"\xff\xfe\n", b""):
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(payload)
            await writer.drain()
            if not payload:
                writer.write_eof()
            answer = await asyncio.wait_for(reader.read(), 10)
        except ConnectionResetError:  # the engine hung up while the line still came in
            answer = b""
        assert answer == b""  # closed without an answer
        writer.close()
    # The port still serves the engine's own senders.
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"{run.id}\n".encode())
    assert (await asyncio.wait_for(reader.readline(), 10)).strip() == b"0"
    writer.close()
    gate.set()
    assert await run.wait(10) == ao.RunStatus.COMPLETED
    assert not run.store.rows("select * from commands where run_id = ?", [run.id])


def test_the_store_is_private_to_its_owner(repo):
    orch = ao.Orchestrator(repo)
    orch.store.flush_sync()
    orch.store.rows("select 1")
    path = orch.store.path
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_opening_a_store_again_never_lets_another_process_in(tmp_path):
    """Checking the file's header must not drop this process's DuckDB lock (closing any
    descriptor of a file drops every POSIX lock the process holds on it)."""
    import threading

    path = str(tmp_path / "held.duckdb")
    store = Store.open(path)
    store.rows("select 1")
    inside, done = threading.Event(), threading.Event()

    def hold(con):  # the store thread keeps its connection while this runs
        inside.set()
        done.wait(60)

    held = store.submit(hold)
    assert inside.wait(30)
    assert Store.open(path) is store  # what ao.sql(store=path) and Orchestrator(...) do
    other = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import duckdb
        try:
            duckdb.connect({path!r})
            print("opened beside it")
        except duckdb.IOException as exc:
            print("refused" if "lock" in str(exc).lower() else exc)""")],
        capture_output=True, text=True, timeout=60)
    done.set()
    held.result(30)
    assert other.stdout.strip() == "refused", other.stdout + other.stderr
    store.close()


def test_an_engine_too_busy_to_answer_is_alive(tmp_path):
    """resume() must not take over a run whose engine is only slow to answer."""
    import socket
    import threading

    from agentorch_nb import remote

    alive_pid = subprocess.Popen(["sleep", "60"])
    try:
        def row(address):
            return {"engine_address": address, "engine_host": socket.gethostname(),
                    "engine_pid": alive_pid.pid, "run_id": "run-1"}

        def server(answer):
            srv = socket.socket()
            srv.bind(("127.0.0.1", 0))
            srv.listen()

            def serve():
                con, _ = srv.accept()
                con.recv(100)
                if answer is not None:
                    con.sendall(answer)
                    con.close()
                else:
                    stop.wait(60)  # busy: holds the connection, says nothing
                    con.close()

            threading.Thread(target=serve, daemon=True).start()
            return srv, "127.0.0.1:%d" % srv.getsockname()[1]

        stop = threading.Event()
        srv, answering = server(b"0\n")
        assert remote.engine_alive(row(answering))
        srv.close()
        srv, stranger = server(b"")  # something else took the port: not the run's engine
        assert not remote.engine_alive(row(stranger))
        srv.close()
        srv, busy = server(None)
        assert remote.engine_alive(row(busy), answer_timeout=1.0)  # silent: busy, not dead
        stop.set()
        srv.close()
        assert not remote.engine_alive(row(answering))  # nothing listens there any more
        dead = dict(row(answering), engine_pid=999_999_999)
        assert not remote.engine_alive(dead)
    finally:
        alive_pid.kill()
        alive_pid.wait()


def test_a_run_on_a_loop_that_stopped_still_answers(repo):
    """A Run whose engine lives on a loop that is not running (a test's loop after the test,
    a notebook loop stopped by hand) is read directly instead of waiting for ever."""
    orch = ao.Orchestrator(repo, agents=ao.Agents(
        ao.testing.TestDirector([ao.TaskSpec("a")]), TestWorker(latency=30),
        ao.testing.TestStrategist()))

    async def start():
        run = orch.start("x")
        while not run.engine.running:
            await asyncio.sleep(0.01)
        return run

    loop = asyncio.new_event_loop()
    run = loop.run_until_complete(start())
    assert "running 0/1" in repr(run)
    assert [t.status for t in run.tasks] == ["active"]
    run.cancel()  # then let the loop see the run to its end, as a kernel would
    assert loop.run_until_complete(run.wait(60, stop_on_pause=False)) == ao.RunStatus.CANCELLED
    loop.close()


def test_a_process_that_exits_at_once_is_not_kept_waiting(repo):
    """The store thread may still be starting when the interpreter shuts down; closing the
    store then must not wait for it (it used to wait lock_timeout + 5 s)."""
    code = ("import sys, agentorch_nb as ao\n"
            "ao.Orchestrator(sys.argv[1], config=ao.Config(lock_timeout=600))\n")
    out = subprocess.run([sys.executable, "-c", code, str(repo)], capture_output=True,
                         text=True, timeout=300)  # a bound on a hang, far below 605 s
    assert out.returncode == 0, out.stderr


def test_a_damaged_store_is_an_agentorch_error_not_a_duckdb_one(repo, tmp_path):
    """A file that starts like a DuckDB database but is damaged: every way in says so with
    StoreError, and the file is left as it was."""
    damaged = tmp_path / "damaged.duckdb"
    con = duckdb.connect(str(damaged))
    con.execute("create table x (a integer)")
    con.close()
    data = bytearray(damaged.read_bytes())
    data[4096:] = b"\xff" * (len(data) - 4096)  # the headers after the magic, gone
    damaged.write_bytes(bytes(data))
    with pytest.raises(ao.StoreError, match="cannot be opened"):
        ao.sql("select 1", store=damaged)
    orch = ao.Orchestrator(repo, store=damaged)
    with pytest.raises(ao.StoreError):
        orch.runs()
    orch.store.close()  # here, not at the interpreter's exit
    assert damaged.read_bytes() == bytes(data)
