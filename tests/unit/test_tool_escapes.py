"""What a command or a path must not get away with: processes that detach (setsid, set -m,
a double fork) outliving the call, a background child holding the call open, a symlink
swapped in between the path check and the write, a truncation note that miscounts.

Real processes, real files, real threads swapping real symlinks."""

from __future__ import annotations

import asyncio
import ctypes
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from agentorch_nb import _proc
from agentorch_nb._proc import run_command
from agentorch_nb.model import Profile
from agentorch_nb.tools import ToolEnv, call_tool

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the subreaper is Linux's")

DAEMONS = {
    "setsid": "setsid sh -c 'echo $$ > daemon.pid; exec sleep 300' &",
    "set -m": "set -m; sh -c 'echo $$ > daemon.pid; exec sleep 300' &",
    # The classic daemon: fork, new session, fork again, stdio away from the caller.
    "double fork": (f"{sys.executable} -c '\n"
                    "import os, time\n"
                    "if os.fork(): os._exit(0)\n"
                    "os.setsid()\n"
                    "if os.fork(): os._exit(0)\n"
                    "null = os.open(os.devnull, os.O_RDWR)\n"
                    "for fd in (0, 1, 2): os.dup2(null, fd)\n"
                    "open(\"daemon.pid\", \"w\").write(str(os.getpid()))\n"
                    "time.sleep(300)' &"),
}
WAIT_FOR_PID = "while [ ! -s daemon.pid ]; do sleep 0.01; done"


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaped yet counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "wt").mkdir()
    return tmp_path / "wt"


@pytest.fixture
def env(root: Path) -> ToolEnv:
    return ToolEnv(root=root, profile=Profile.CODE)


def daemon_pid(root: Path) -> int:
    return int((root / "daemon.pid").read_text())


# ------------------------------------------------------------------ processes
@pytest.mark.parametrize("kind", DAEMONS)
async def test_a_detached_process_does_not_outlive_a_finished_command(env, root, kind):
    result = await call_tool("run_shell", {"command": f"{DAEMONS[kind]}\n{WAIT_FOR_PID}"}, env=env)
    assert result.ok and "exit code: 0" in result.content, result.text
    assert gone(daemon_pid(root))


@pytest.mark.parametrize("kind", DAEMONS)
async def test_a_detached_process_does_not_outlive_a_timeout(env, root, kind):
    command = f"{DAEMONS[kind]}\n{WAIT_FOR_PID}\necho started\nsleep 300"
    result = await call_tool("run_shell", {"command": command, "timeout_seconds": 3}, env=env)
    assert not result.ok and "timed out after 3 s" in result.error
    assert "started" in result.content
    assert gone(daemon_pid(root))


async def test_a_detached_process_does_not_outlive_a_cancelled_call(root):
    call = asyncio.create_task(run_command(
        ["sh", "-c", f"{DAEMONS['setsid']}\n{WAIT_FOR_PID}\nsleep 300"], cwd=root))
    while not (root / "daemon.pid").exists() or not (root / "daemon.pid").read_text():
        await asyncio.sleep(0.01)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert gone(daemon_pid(root))


def test_a_detached_process_does_not_outlive_a_killed_caller(root):
    # The caller dies without a word (SIGKILL): its supervisor sees the call's socket close.
    script = textwrap.dedent(f"""
        import asyncio
        from agentorch_nb._proc import run_command
        asyncio.run(run_command(["sh", "-c", {DAEMONS['double fork'] + chr(10) + WAIT_FOR_PID
                                               + chr(10) + 'echo ready; sleep 300'!r}],
                                cwd={str(root)!r}))
    """)
    caller = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        while not (root / "daemon.pid").exists() or not (root / "daemon.pid").read_text():
            assert caller.poll() is None, "the caller ended early"
            time.sleep(0.01)
        pid = daemon_pid(root)
        assert alive(pid)
    finally:
        caller.kill()
        caller.wait()
    assert gone(pid)


async def test_a_background_job_holding_the_output_does_not_hold_the_call(env):
    # `sleep 300 &` keeps the shell's stdout open; the call ends when the shell does.
    result = await call_tool("run_shell", {"command": "sleep 300 & echo $!", "timeout_seconds": 120},
                             env=env)
    assert result.ok and "exit code: 0" in result.content, result.text
    assert gone(int(result.content.split("--- stdout ---\n")[1].split()[0]))
    ran = await run_command(["sh", "-c", "echo before; sleep 300 & echo $!; echo after >&2"],
                            timeout=120)
    assert not ran.timed_out and ran.returncode == 0
    assert ran.stdout.startswith("before\n") and ran.stderr == "after\n"
    assert gone(int(ran.stdout.split()[1]))


async def test_without_a_subreaper_the_process_group_is_still_killed(root, monkeypatch):
    # How macOS runs commands (no prctl there): the group is killed, output is not held.
    monkeypatch.setattr(_proc, "SUPERVISED", False)
    ran = await run_command(["sh", "-c", "sleep 300 & echo $!"], timeout=120)
    assert not ran.timed_out and ran.returncode == 0 and gone(int(ran.stdout))
    ran = await run_command(["sh", "-c", "pwd; cat; exit 3"], cwd=root, input=b"in")
    assert (ran.returncode, ran.stdout) == (3, f"{root}\nin")
    ran = await run_command(["sh", "-c", "echo partial; sleep 300"], timeout=0.5)
    assert ran.timed_out and ran.stdout == "partial\n" and "timed out after 0.5 s" in ran.stderr


async def test_commands_that_cannot_start_raise_as_before(root):
    with pytest.raises(FileNotFoundError):
        await run_command(["agentorch-no-such-program"])
    with pytest.raises(FileNotFoundError):
        await run_command(["true"], cwd=root / "missing")
    (root / "script.sh").write_text("#!/bin/sh\necho from script\n")
    with pytest.raises(PermissionError):
        await run_command(["./script.sh"], cwd=root)
    (root / "script.sh").chmod(0o755)
    assert (await run_command(["./script.sh"], cwd=root)).stdout == "from script\n"
    ran = await run_command(["sh", "-c", 'echo "$ONLY_HERE"; kill -TERM $$'], env={"ONLY_HERE": "yes"})
    assert ran.stdout == "yes\n" and ran.returncode == -15


async def test_many_commands_at_once(root):
    results = await asyncio.gather(*(run_command(["sh", "-c", f"echo {i}; sleep 300 &"])
                                     for i in range(20)))
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(20)]


# ---------------------------------------------------------------- truncation
async def test_the_truncation_note_is_exact(env):
    limit = env.output_limit
    result = await call_tool("run_python", {"code": "print('x' * 1_000_010)"}, env=env)
    total = len("exit code: 0\n--- stdout ---\n") + 1_000_010
    assert result.truncated
    assert f"[... output truncated: {total - limit} of {total} characters omitted ...]" in result.content
    # Both streams, characters that take two bytes each, a smaller limit.
    env.output_limit = 1000
    command = "python3 -c \"print('é' * 70_000)\"; python3 -c \"import sys; print('ü' * 9_000, file=sys.stderr)\""
    result = await call_tool("run_shell", {"command": command}, env=env)
    total = len("exit code: 0\n--- stdout ---\n") + 70_000 + len("\n--- stderr ---\n") + 9_000
    assert f"[... output truncated: {total - 1000} of {total} characters omitted ...]" in result.content
    assert result.content.count("[...") == 1 and result.content.endswith("ü" * 500)
    # Short output is not cut and has no note.
    short = await call_tool("run_shell", {"command": "echo hi"}, env=env)
    assert not short.truncated and short.content == "exit code: 0\n--- stdout ---\nhi"


async def test_run_command_counts_what_it_drops_in_characters():
    ran = await run_command(["python3", "-c", "print('é' * 5000, end='')"], max_output=1000)
    assert ran.stdout_omitted == 4000 and ran.stdout.count("é") == 1000
    assert "[... 4000 characters of output omitted ...]" in ran.stdout
    assert ran.kept("stdout") == "é" * 1000


# ----------------------------------------------------------- symlink swaps
# A process of its own (the machine's other core), so swaps land between any two steps of
# a tool, not only where this interpreter switches threads. Each round: the directory d and
# a link to outside trade names (renameat2 RENAME_EXCHANGE: one step), so do the file f.txt
# and a link to outside/f.txt, and the link s points outside, then inside again.
SWAPPER = textwrap.dedent("""
    import ctypes, os, signal, sys
    root, outside = sys.argv[1:3]
    libc = ctypes.CDLL(None, use_errno=True)
    j = os.path.join

    def exchange(a, b):
        if libc.renameat2(-100, j(root, a).encode(), -100, j(root, b).encode(), 2) != 0:
            raise OSError(ctypes.get_errno(), "renameat2")

    rounds = 0

    def stop(*_):
        print(rounds, flush=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    print("swapping", flush=True)
    while True:
        exchange("d", "d_link")
        exchange("f.txt", "f_link")
        os.symlink(outside, j(root, "s.new"))
        os.replace(j(root, "s.new"), j(root, "s"))
        os.symlink(j(root, "inside"), j(root, "s.new"))
        os.replace(j(root, "s.new"), j(root, "s"))
        rounds += 1
""")


def _races(env: ToolEnv, root: Path, outside: Path, tries: int) -> dict[str, int]:
    """Write, append, read, list and delete through names another process keeps swapping
    for symlinks to ``outside``; returns how many calls succeeded per tool."""
    if getattr(ctypes.CDLL(None), "renameat2", None) is None:
        pytest.skip("renameat2 is not available")
    (root / "d").mkdir()
    (root / "inside").mkdir()
    (root / "f.txt").write_text("inside")
    (root / "d" / "secret.txt").write_text("inside secret")
    (root / "d" / "victim").write_text("inside victim")
    for name, text in [("f.txt", "outside"), ("secret.txt", "outside secret"),
                       ("victim", "keep me"), ("only_outside.txt", "")]:
        (outside / name).write_text(text)
    os.symlink(outside, root / "d_link")
    os.symlink(outside / "f.txt", root / "f_link")
    os.symlink(root / "inside", root / "s")
    ok = {"write": 0, "append": 0, "read": 0, "list": 0, "delete": 0}
    real_d = os.open(root / "d", os.O_RDONLY | os.O_DIRECTORY)

    async def calls() -> None:
        for i in range(tries):
            for name, args in [("write_file", {"path": "d/new.txt", "content": "w"}),
                               ("write_file", {"path": "s/new.txt", "content": "w"}),
                               ("write_file", {"path": "f.txt", "content": "w"}),
                               ("append_file", {"path": "d/f.txt", "content": "a"}),
                               ("append_file", {"path": "f.txt", "content": "a"})]:
                result = await call_tool(name, args, env=env)
                ok[name.split("_")[0]] += result.ok
            read = await call_tool("read_file", {"path": "d/secret.txt"}, env=env)
            assert "outside" not in read.content
            ok["read"] += read.ok
            listing = await call_tool("list_directory", {"path": "d"}, env=env)
            assert "only_outside" not in listing.content
            ok["list"] += listing.ok
            if i % 10 == 0:
                deleted = await call_tool("delete_file", {"path": "d/victim"}, env=env)
                ok["delete"] += deleted.ok
                # Put it back through a descriptor: the name "d" may be the link by now.
                os.close(os.open("victim", os.O_WRONLY | os.O_CREAT, dir_fd=real_d))

    swapper = subprocess.Popen([sys.executable, "-c", SWAPPER, str(root), str(outside)],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert swapper.stdout.readline() == "swapping\n"
        asyncio.run(calls())
    finally:
        os.close(real_d)
        swapper.terminate()
        rounds = swapper.communicate()[0]
    assert int(rounds) > 0
    # Swaps went on all along: calls went through, and some writes were refused. (Which tool
    # got through how often depends on the machine's load, so no tool is required to.)
    assert sum(ok.values()) > 0 and ok["write"] < 3 * tries
    assert sorted(p.name for p in outside.iterdir()) == ["f.txt", "only_outside.txt",
                                                         "secret.txt", "victim"]
    assert (outside / "f.txt").read_text() == "outside"
    assert (outside / "victim").read_text() == "keep me"
    return ok


def test_symlink_swaps_never_redirect_a_tool_outside_quick(env, root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    _races(env, root, outside, tries=100)


@pytest.mark.slow
def test_symlink_swaps_never_redirect_a_tool_outside(env, root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    ok = _races(env, root, outside, tries=1000)  # 5,000 writes and appends, 1,000 reads...
    assert sum(v > 0 for v in ok.values()) >= 3  # most tools got through at some point


# ------------------------------------------------------------ links that stay
async def test_links_inside_the_worktree_still_work(env, root):
    (root / "src").mkdir()
    (root / "src" / "a.txt").write_text("a")
    os.symlink("src/a.txt", root / "rel_link")  # a file link, relative
    os.symlink(root / "src", root / "abs_dir")  # a directory link, absolute
    os.symlink("../src", root / "src" / "loop")  # .. inside a link
    assert (await call_tool("write_file", {"path": "rel_link", "content": "b"}, env=env)).ok
    assert (root / "src" / "a.txt").read_text() == "b" and (root / "rel_link").is_symlink()
    assert (await call_tool("append_file", {"path": "abs_dir/loop/a.txt", "content": "c"}, env=env)).ok
    assert (await call_tool("read_file", {"path": "abs_dir/a.txt"}, env=env)).content == "bc"
    listing = await call_tool("list_directory", {"path": "abs_dir"}, env=env)
    assert listing.ok and "a.txt" in listing.content
    assert (await call_tool("write_file", {"path": "new/deep/x.txt", "content": "x"}, env=env)).ok
    assert (root / "new" / "deep" / "x.txt").read_text() == "x"


async def test_a_fifo_is_refused_without_hanging(env, root):
    os.mkfifo(root / "pipe")
    read = await call_tool("read_file", {"path": "pipe"}, env=env)
    assert not read.ok and "not a regular file" in read.error
    write = await call_tool("write_file", {"path": "pipe", "content": "x"}, env=env)
    assert not write.ok
