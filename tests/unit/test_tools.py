"""The tool layer on real directories, real processes, a real git repository and a real
DuckDB store: confinement, process-group kills, bounds, redaction, validation, records."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from agentorch_nb._proc import run_command
from agentorch_nb.model import Profile
from agentorch_nb.store import Store
from agentorch_nb.tools import REGISTRY, Tool, Toolbox, ToolEnv, call_tool, search, tools_for
from agentorch_nb.tools.base import ALL_PROFILES
from agentorch_nb.tools.schema import validate
from agentorch_nb.tools.secrets import REDACTED

from tests.conftest import make_repo

FAKE_KEY = "sk-test-0123456789abcdefFAKEKEY"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "wt")


@pytest.fixture
def env(root: Path) -> ToolEnv:
    return ToolEnv(root=root, profile=Profile.CODE, run_id="r1", task_id="t1", attempt=2)


@pytest.fixture
def store(tmp_path: Path):
    s = Store.open(tmp_path / "store.duckdb")
    yield s
    s.close()


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie waiting to be reaped counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        return True


def gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


async def call(env: ToolEnv, name: str, **arguments):
    return await call_tool(name, arguments, env=env)


# ------------------------------------------------------------------ confinement
@pytest.mark.parametrize("path", ["../outside.txt", "a/../../outside.txt", "/etc/passwd"])
async def test_paths_outside_the_worktree_are_refused(env, path):
    for name, args in [("read_file", {}), ("write_file", {"content": "x"}), ("list_directory", {}),
                       ("delete_file", {}), ("append_file", {"content": "x"})]:
        result = await call_tool(name, {"path": path, **args}, env=env)
        assert not result.ok and "outside the worktree" in result.error, (name, result)
    assert not (env.root.parent / "outside.txt").exists()


async def test_symlink_pointing_outside_is_refused(env, tmp_path):
    outside = tmp_path / "secret_dir"
    outside.mkdir()
    (outside / "data.txt").write_text("private")
    os.symlink(outside, env.root / "link")
    os.symlink(outside / "data.txt", env.root / "file_link")
    os.symlink(tmp_path / "not_yet", env.root / "dangling")  # target outside, not existing
    for path in ["link/data.txt", "file_link", "link"]:
        result = await call(env, "read_file", path=path)
        assert not result.ok and "outside the worktree" in result.error
    assert not (await call(env, "write_file", path="dangling", content="x")).ok
    assert not (tmp_path / "not_yet").exists()
    assert not (await call(env, "write_file", path="link/new.txt", content="x")).ok
    assert not (outside / "new.txt").exists()
    assert not (await call(env, "list_directory", path="link")).ok
    assert not (await call(env, "search_codebase", pattern="private", path="link")).ok
    # Deleting the link removes the link, never what it points to.
    assert (await call(env, "delete_file", path="file_link")).ok
    assert (outside / "data.txt").read_text() == "private"


async def test_paths_inside_are_accepted(env):
    (env.root / "src").mkdir()
    os.symlink(env.root / "src", env.root / "alias")  # a symlink that stays inside
    assert (await call(env, "write_file", path="alias/a.txt", content="hi")).ok
    assert (env.root / "src" / "a.txt").read_text() == "hi"
    assert (await call(env, "read_file", path=str(env.root / "src" / "a.txt"))).content == "hi"
    assert (await call(env, "read_file", path="src/../src/a.txt")).content == "hi"


# --------------------------------------------------------------------- files
async def test_file_tools_round_trip(env):
    assert (await call(env, "write_file", path="d/notes.md", content="one\n")).ok
    assert (await call(env, "append_file", path="d/notes.md", content="two\n")).ok
    assert (await call(env, "read_file", path="d/notes.md")).content == "one\ntwo\n"
    part = await call(env, "read_file", path="d/notes.md", offset=2, limit=1)
    assert part.content.startswith("[lines 2-2 of 2]") and part.content.endswith("two\n")
    listing = await call(env, "list_directory")
    assert "d/" in listing.content and ".git" not in listing.content
    assert "d/notes.md" in (await call(env, "list_directory", recursive=True)).content
    assert (await call(env, "delete_file", path="d/notes.md")).ok
    missing = await call(env, "read_file", path="d/notes.md")
    assert not missing.ok and "no such file" in missing.error
    assert not (await call(env, "delete_file", path="d")).ok  # directories are refused
    refused = await call(env, "write_file", path=".git/hooks/pre-commit", content="x")
    assert not refused.ok and ".git" in refused.error


# ---------------------------------------------------------------- processes
async def test_timeout_kills_the_shell_and_its_background_child(env):
    started = time.monotonic()
    result = await call(env, "run_shell", command="echo $$ $!; sleep 60 & echo $$ $!; wait",
                        timeout_seconds=1)
    assert time.monotonic() - started < 10
    assert not result.ok and "timed out after 1 s" in result.error
    stdout = result.content.split("--- stdout ---\n")[1].split("--- stderr ---")[0]
    shell_pid, child_pid = map(int, stdout.split()[-2:])
    assert gone(shell_pid) and gone(child_pid)


async def test_cancellation_kills_the_process_group(env):
    pidfile = env.root / "pids"
    task = asyncio.create_task(call(env, "run_shell", command="sleep 60 & echo $$ $! > pids; wait"))
    deadline = time.monotonic() + 10
    while not (pidfile.exists() and len(pidfile.read_text().split()) == 2):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for pid in map(int, pidfile.read_text().split()):
        assert gone(pid)


async def test_background_job_does_not_outlive_a_finished_command(env):
    result = await call(env, "run_shell", command="sleep 60 >/dev/null 2>&1 & echo $!")
    assert result.ok and "exit code: 0" in result.content
    assert gone(int(result.content.split("--- stdout ---\n")[1].split()[0]))


async def test_run_shell_and_run_python_report_exit_and_output(env):
    result = await call(env, "run_shell", command="pwd; echo oops >&2; exit 3")
    assert "exit code: 3" in result.content and str(env.root) in result.content
    assert "oops" in result.content
    (env.root / "pkg").mkdir()
    (env.root / "pkg" / "mod.py").write_text("VALUE = 42\n")
    result = await call(env, "run_python", code="from pkg.mod import VALUE\nprint(VALUE + 1)")
    assert result.ok and "43" in result.content and "exit code: 0" in result.content
    result = await call(env, "run_shell", command="pwd", workdir="pkg")
    assert result.content.rstrip().endswith(str(env.root / "pkg"))


async def test_output_is_truncated_and_says_so(env):
    env.output_limit = 1000
    result = await call(env, "run_python", code="print('a' * 5000 + 'END')")
    assert result.ok and result.truncated
    assert len(result.content) < 1200
    assert "output truncated" in result.content and "END" in result.content  # head and tail kept
    # Far beyond the capture bound: memory stays bounded and the cut is stated too.
    result = await call(env, "run_shell", command="head -c 5000000 /dev/zero | tr '\\0' x")
    assert result.truncated and len(result.content) < 1200
    assert "omitted" in result.content


async def test_run_command_keeps_its_api(tmp_path):
    ran = await run_command(["sh", "-c", "pwd; cat"], cwd=tmp_path, input=b"in")
    assert ran.returncode == 0 and ran.stdout == f"{tmp_path}\nin" and not ran.timed_out
    ran = await run_command(["sh", "-c", "echo partial; sleep 30"], timeout=0.5)
    assert ran.timed_out and ran.stdout == "partial\n" and "timed out after 0.5 s" in ran.stderr
    ran = await run_command(["sh", "-c", "head -c 100000 /dev/zero"], max_output=1000)
    assert ran.omitted == 99000 and "99000 characters of output omitted" in ran.stdout


# ------------------------------------------------------------------- secrets
async def test_secrets_are_scrubbed_and_redacted(env, store, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-9876543210")
    env.store = store
    # The child does not get them...
    result = await call(env, "run_python",
                        code="import os; print(sorted(k for k in os.environ if 'KEY' in k or 'TOKEN' in k))")
    assert result.ok and "OPENAI_API_KEY" not in result.content and "MY_SERVICE_TOKEN" not in result.content
    shown = await call(env, "run_shell", command='echo "[$OPENAI_API_KEY]"')
    assert "[]" in shown.content
    # ...and what would carry them out anyway is redacted, in answers and in records.
    assert (await call(env, "write_file", path="leak.txt",
                       content=f"key={FAKE_KEY} token=tok-9876543210 other=sk-{'z' * 24}")).ok
    read = await call(env, "read_file", path="leak.txt")
    assert FAKE_KEY not in read.content and "tok-9876543210" not in read.content
    assert "sk-zzzz" not in read.content and read.content.count(REDACTED) == 3
    printed = await call(env, "run_shell", command="cat leak.txt")
    assert FAKE_KEY not in printed.content
    await call(env, "post_insight", content=f"the key is {FAKE_KEY}")
    store.flush_sync()
    stored = json.dumps(store.rows("select * from tool_calls"), default=str)
    stored += json.dumps(store.rows("select * from insights"), default=str)
    assert FAKE_KEY not in stored and "tok-9876543210" not in stored and REDACTED in stored


# ---------------------------------------------------------------- validation
async def test_schema_errors_are_results(env):
    missing = await call_tool("write_file", {"path": "a.txt"}, env=env)
    assert not missing.ok and "missing required argument `content`" in missing.error
    wrong = await call_tool("read_file", {"path": 3}, env=env)
    assert not wrong.ok and "`path`: expected string, got integer" in wrong.error
    extra = await call_tool("read_file", {"path": "a", "mode": "r"}, env=env)
    assert not extra.ok and "unknown argument `mode`" in extra.error
    nested = await call_tool("finish", {"summary": "s", "artifacts": ["a", 1]}, env=env)
    assert not nested.ok and "`artifacts[1]`" in nested.error
    not_object = await call_tool("git_status", ["x"], env=env)
    assert not not_object.ok and "expected object" in not_object.error
    assert not (await call(env, "git_log", max_count=0)).ok
    assert not (await call(env, "run_shell", command="true", timeout_seconds=True)).ok
    unknown = await call_tool("rm_rf", {}, env=env)
    assert not unknown.ok and "unknown tool" in unknown.error and "read_file" in unknown.error
    assert unknown.text.startswith("error: ")


async def test_a_failing_tool_is_a_result_not_an_exception(env, monkeypatch):
    async def boom(env):
        raise OSError("disk on fire")

    monkeypatch.setitem(REGISTRY, "boom", Tool("boom", "fails", {"type": "object"}, ALL_PROFILES, boom))
    result = await call(env, "boom")
    assert not result.ok and result.error == "boom failed: OSError: disk on fire"


def test_validator_subset():
    schema = {"type": "object", "properties": {"n": {"type": "integer", "maximum": 3},
                                               "k": {"enum": ["a", "b"]}}}
    assert validate({"n": 3, "k": "a"}, schema) == []
    assert validate({"n": 2.5}, schema) == ["`n`: expected integer, got number"]
    assert validate({"n": 4, "k": "c"}, schema) == ["`n`: must be at most 3, got 4",
                                                    "`k`: must be one of 'a', 'b', got 'c'"]


async def test_profile_allow_list(env):
    env.profile = Profile.PLAN
    refused = await call(env, "write_file", path="a.txt", content="x")
    assert not refused.ok and "not available to the plan profile" in refused.error
    assert not (env.root / "a.txt").exists()
    assert (await call(env, "read_file", path="a.txt")).error.startswith("no such file")
    request = await call(env, "request_tools", tools=["write_file"], reason="write the plan down")
    assert request.action == "request_tools" and request.data["tools"] == ["write_file"]
    env.granted = frozenset({"write_file"})
    assert (await call(env, "write_file", path="a.txt", content="x")).ok
    names = {t.name for t in tools_for(Profile.PLAN)}
    assert "create_subtasks" in names and "run_shell" not in names and "write_file" not in names
    assert "create_subtasks" not in {t.name for t in tools_for(Profile.CODE)}
    for tool in REGISTRY.values():
        assert tool.profiles and tool.parameters["type"] == "object", tool.name


# ----------------------------------------------------------------------- git
async def test_git_tools(env, root):
    (root / "a.py").write_text("x = 1\n")
    status = await call(env, "git_status")
    assert status.ok and "?? a.py" in status.content
    commit = await call(env, "git_commit", message="add a")
    assert commit.ok and "add a" in commit.content and len(commit.data["sha"]) == 40
    author = subprocess.run(["git", "-C", str(root), "log", "-1", "--format=%an <%ae>|%cn"],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert author == "agentorch <agentorch@localhost>|agentorch"
    (root / "a.py").write_text("x = 2\n")
    (root / "b.py").write_text("y = 1\n")
    diff = await call(env, "git_diff", path="a.py")
    assert "-x = 1" in diff.content and "+x = 2" in diff.content
    assert not (await call(env, "git_diff", path="../x")).ok
    only_a = await call(env, "git_commit", message="change a", paths=["a.py"])
    assert only_a.ok and "b.py" in (await call(env, "git_status")).content
    log = await call(env, "git_log", max_count=5)
    assert log.content.splitlines()[0].endswith("agentorch: change a") and "add a" in log.content
    assert "add a" not in (await call(env, "git_log", path="b.py")).content
    nothing = await call(env, "git_commit", message="again", paths=["a.py"])
    assert not nothing.ok and "nothing to commit" in nothing.error


async def test_git_error_is_a_result(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    result = await call(ToolEnv(root=plain), "git_status")
    assert not result.ok and "not a git repository" in result.error


# -------------------------------------------------------------------- search
async def test_search_codebase(env, root):
    (root / "src").mkdir()
    (root / "src" / "one.py").write_text("def alpha():\n    return 'Needle'\n")
    (root / "src" / "two.txt").write_text("needle here\nand NEEDLE there\n")
    (root / "blob.bin").write_bytes(b"\x00needle")
    found = await call(env, "search_codebase", pattern="needle")
    assert found.content == "src/two.txt:1: needle here"
    loose = await call(env, "search_codebase", pattern="needle", case_sensitive=False, glob="*.txt")
    assert loose.content.splitlines() == ["src/two.txt:1: needle here", "src/two.txt:2: and NEEDLE there"]
    regex = await call(env, "search_codebase", pattern=r"def \w+\(", regex=True, path="src")
    assert regex.content == "src/one.py:1: def alpha():"
    bounded = await call(env, "search_codebase", pattern="e", max_results=2)
    assert len(bounded.content.splitlines()) == 3 and "stopped after 2 matches" in bounded.content
    assert (await call(env, "search_codebase", pattern="zzz")).content == "(no matches)"
    bad = await call(env, "search_codebase", pattern="(", regex=True)
    assert not bad.ok and "invalid regex" in bad.error
    assert not (await call(env, "search_codebase", pattern="x", path="/etc")).ok


async def test_web_search_without_and_with_a_key(env, monkeypatch):
    monkeypatch.delenv("TAVILY_API_KEY", raising=False)

    def no_network(*args, **kwargs):
        raise AssertionError("the network was called")

    monkeypatch.setattr(search, "post_json", no_network)
    result = await call(env, "web_search", query="duckdb locking")
    assert not result.ok and "web search is not configured: set TAVILY_API_KEY" in result.error

    seen = {}

    def fake_post(url, payload, headers, timeout):
        seen.update(url=url, payload=payload, headers=headers)
        return {"answer": "use one writer", "results": [
            {"title": "DuckDB concurrency", "url": "https://duckdb.org/x", "content": "One process..."}]}

    monkeypatch.setenv("TAVILY_API_KEY", "tvly-fake-key-0123456789")
    monkeypatch.setattr(search, "post_json", fake_post)
    result = await call(env, "web_search", query="duckdb locking", max_results=3)
    assert result.ok and "DuckDB concurrency" in result.content and "https://duckdb.org/x" in result.content
    assert seen["payload"]["max_results"] == 3 and seen["url"].startswith("https://api.tavily.com/")
    assert seen["headers"]["Authorization"] == "Bearer tvly-fake-key-0123456789"
    env.profile = Profile.TEST
    assert "not available" in (await call(env, "web_search", query="x")).error


# ------------------------------------------------------------------ framework
async def test_framework_tools_return_actions_and_write_records(env, store):
    env.store = store
    done = await call(env, "finish", summary="did it", artifacts=["a.py"])
    assert done.action == "finish" and done.data == {"summary": "did it", "artifacts": ["a.py"],
                                                      "success": True}
    assert (await call(env, "post_insight", content="tests live in tests/", topic="layout")).ok
    assert (await call(env, "log_design_decision", decision="use duckdb", rationale="one file")).ok
    env.profile = Profile.PLAN
    sub = await call(env, "create_subtasks", subtasks=[
        {"title": "API", "description": "build it", "key": "api"},
        {"title": "Docs", "description": "write them", "profile": "write", "depends_on": ["api"]}])
    assert sub.action == "create_subtasks"
    assert [s["profile"] for s in sub.data["subtasks"]] == ["code", "write"]
    dup = await call(env, "create_subtasks", subtasks=[{"title": "A", "description": ""}] * 2)
    assert not dup.ok and "distinct" in dup.error
    store.flush_sync()
    assert store.rows("select run_id, task_id, topic, content from insights") == [
        {"run_id": "r1", "task_id": "t1", "topic": "layout", "content": "tests live in tests/"}]
    assert store.rows("select decision, rationale from design_decisions") == [
        {"decision": "use duckdb", "rationale": "one file"}]


async def test_tool_calls_are_recorded(env, store):
    env.store = store
    await call_tool("write_file", {"path": "a.txt", "content": "hello"}, env=env, call_id="c1")
    await call_tool("read_file", {"path": "../nope"}, env=env, call_id="c2")
    await call_tool("no_such_tool", {}, env=env, call_id="c3")
    await call_tool("run_shell", {"command": "sleep 30"}, env=ToolEnv(
        root=env.root, run_id="r1", task_id="t1", attempt=2, store=store, timeout=0.3), call_id="c4")
    store.flush_sync()
    rows = store.rows("select * from tool_calls order by call_id")
    assert [(r["call_id"], r["tool"]) for r in rows] == [
        ("c1", "write_file"), ("c2", "read_file"), ("c3", "no_such_tool"), ("c4", "run_shell")]
    assert all((r["run_id"], r["task_id"], r["attempt"]) == ("r1", "t1", 2) for r in rows)
    assert all(r["duration_ms"] >= 0 and r["ts"] is not None for r in rows)
    first = rows[0]
    assert json.loads(first["arguments"]) == {"path": "a.txt", "content": "hello"}
    assert first["error"] is None and "wrote 5 characters" in first["result"]
    assert "outside the worktree" in rows[1]["error"]
    assert "unknown tool" in rows[2]["error"]
    assert "timed out" in rows[3]["error"] and rows[3]["duration_ms"] >= 300


async def test_cancelled_call_is_recorded(env, store):
    env.store = store
    task = asyncio.create_task(call_tool("run_shell", {"command": "sleep 30"}, env=env, call_id="cx"))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    store.flush_sync()
    (row,) = store.rows("select error from tool_calls where call_id = 'cx'")
    assert row["error"].startswith("cancelled")


# ------------------------------------------------------------------- toolbox
async def test_toolbox_for_the_worker(env):
    box = Toolbox(env)
    names = [s["function"]["name"] for s in box.schemas()]
    assert names[0] == "read_file" and "finish" in names and "create_subtasks" not in names
    assert all(s["type"] == "function" and s["function"]["parameters"]["type"] == "object"
               for s in box.schemas())
    outcome = await box.call("c1", "finish", {"summary": "done"})
    assert outcome["finish"]["summary"] == "done" and outcome["content"] == "finished"
    outcome = await box.call("c2", "write_file", {"path": "../x"})
    assert outcome["content"].startswith("error: invalid arguments") and "finish" not in outcome
    box.grant(["create_subtasks"])
    assert "create_subtasks" in [s["function"]["name"] for s in box.schemas()]


def test_env_from_context(tmp_path):
    class Ctx:
        run_id, task_id, attempt, store = "r9", "t9", 3, "the-store"

    env = ToolEnv.from_context(Ctx(), tmp_path, Profile.TEST, timeout=5)
    assert (env.run_id, env.task_id, env.attempt, env.store, env.timeout) == ("r9", "t9", 3, "the-store", 5)
    assert env.root == Path(os.path.realpath(tmp_path))
