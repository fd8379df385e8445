"""Subprocesses that cannot outlive the call that started them.

On Linux every command runs under a supervisor (:mod:`agentorch_nb._supervisor`), a child
subreaper forked for it by a small server process: when the command's main process exits,
times out or is cancelled, every process it started is killed and reaped before the call
returns -- background jobs, processes in a process group (``set -m``) or session (``setsid``)
of their own, double-forked daemons. So the call also returns as soon as the main process
exits, with what it printed, even when a background child held on to the output pipe.

Elsewhere (macOS has no subreaper) the command runs in a new session and its process group is
killed when it exits, times out or is cancelled; there a child that starts a session of its own
escapes, and holds the call until the timeout if it keeps the output pipe.

Output is read while the command runs, so a command that times out still returns what it
printed; ``max_output`` bounds what is kept of each stream (its first and last characters),
so a command printing without end cannot fill memory.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

GRACE = 2.0  # seconds between SIGTERM and SIGKILL after a timeout or a cancellation
STOP_SLACK = 5.0  # how much longer than GRACE a stop may take before the call gives up on it
AFTER_EXIT = 5.0  # how long output may still arrive once nothing of the command runs
SUPERVISOR = Path(__file__).with_name("_supervisor.py")
SUPERVISED = sys.platform.startswith("linux")


@dataclass
class CommandResult:
    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool = False
    stdout_omitted: int = 0  # characters dropped from the middle of stdout by ``max_output``
    stderr_omitted: int = 0
    _cuts: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def omitted(self) -> int:
        return self.stdout_omitted + self.stderr_omitted

    def kept(self, stream: str) -> str:
        """What was kept of ``stream`` (``"stdout"`` or ``"stderr"``): its head and tail
        joined, without the note that marks the cut; ``<stream>_omitted`` says how much
        is missing between them."""
        text: str = getattr(self, stream)
        start, end = self._cuts.get(stream, (0, 0))
        return text[:start] + text[end:]


async def run_command(
    argv: Sequence[str | os.PathLike],
    *,
    cwd: str | Path | None = None,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
    max_output: int | None = None,
) -> CommandResult:
    """Run ``argv`` and return its exit status and output, once nothing it started runs.

    ``env`` replaces the environment (None: inherit); ``input`` is written to stdin (None:
    stdin is /dev/null, so a command never waits on the caller's terminal); ``max_output``
    keeps at most that many characters of each stream, the first and the last half, and marks
    the cut. On timeout everything the command started is killed and the output so far is
    returned with ``timed_out=True``; on cancellation likewise, and the cancellation goes on.
    A program that cannot be started raises :class:`OSError` (``FileNotFoundError``).
    """
    out, err = _Capture(max_output), _Capture(max_output)
    run = _supervised if SUPERVISED else _grouped
    returncode, timed_out = await run([os.fspath(a) for a in argv], cwd, timeout, env, input,
                                      out, err)
    stdout, stderr = out.text(), err.text()
    cuts = {name: c.cut for name, c in (("stdout", out), ("stderr", err)) if c.omitted}
    if timed_out:
        note = f"timed out after {timeout} s"
        stderr = f"{stderr}{'' if stderr.endswith(chr(10)) else chr(10)}{note}" if stderr.strip() else note
    return CommandResult(returncode, stdout, stderr, timed_out, out.omitted, err.omitted, cuts)


class _Capture:
    """One output stream, decoded as it arrives: kept whole up to ``limit`` characters, else
    its head and tail, with an exact count of what was dropped between them."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.head: list[str] = []
        self.head_len = 0
        self.tail = ""
        self.total = 0

    def add(self, data: bytes, final: bool = False) -> None:
        text = self.decoder.decode(data, final)
        self.total += len(text)
        if self.limit is None:
            self.head.append(text)
            return
        room = self.limit - self.limit // 2 - self.head_len
        if room > 0:
            self.head.append(text[:room])
            self.head_len += len(self.head[-1])
            text = text[room:]
        keep = self.limit // 2
        if text and keep:
            self.tail = (self.tail + text)[-keep:]

    @property
    def omitted(self) -> int:
        return self.total - self.head_len - len(self.tail) if self.limit is not None else 0

    def note(self) -> str:
        return f"\n[... {self.omitted} characters of output omitted ...]\n"

    @property
    def cut(self) -> tuple[int, int]:
        """Where the note stands in :meth:`text`."""
        return self.head_len, self.head_len + len(self.note())

    def text(self) -> str:
        head = "".join(self.head)
        return f"{head}{self.note()}{self.tail}" if self.omitted else head + self.tail


class _Pipe(asyncio.Protocol):
    """Hands what arrives on a pipe to a capture; ``closed`` once the pipe is."""

    def __init__(self, capture: _Capture, closed: asyncio.Future) -> None:
        self.capture, self.closed = capture, closed

    def data_received(self, data: bytes) -> None:
        self.capture.add(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.capture.add(b"", final=True)
        if not self.closed.done():
            self.closed.set_result(None)


# ------------------------------------------------------------------ Linux: a supervisor
class _Server:
    """This process's supervisor server, started on first use (and again in a forked child,
    or if it died). Every command is one message to it; it forks the command's supervisor."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sock: socket.socket | None = None
        self.proc: subprocess.Popen | None = None

    def forget(self) -> None:
        """In a forked child: the parent's server is the parent's."""
        self.lock = threading.Lock()
        if self.sock is not None:
            self.sock.close()
        self.sock = self.proc = None

    def start_command(self, fds: list[int]) -> None:
        with self.lock:
            for attempt in range(2):
                if self.sock is None or self.proc is None or self.proc.poll() is not None:
                    self.start()
                try:
                    socket.send_fds(self.sock, [b"x"], fds)
                    return
                except OSError:
                    if attempt:
                        raise
                    self.sock.close()
                    self.sock = None

    def start(self) -> None:
        if self.sock is not None:
            self.sock.close()
        ours, theirs = socket.socketpair()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", str(SUPERVISOR), str(theirs.fileno())],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                start_new_session=True)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.sock = ours


_SERVER = _Server()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_SERVER.forget)


async def _supervised(argv, cwd, timeout, env, input, out, err) -> tuple[int | None, bool]:
    loop = asyncio.get_running_loop()
    request = json.dumps({"argv": argv, "cwd": os.path.abspath(cwd if cwd is not None else "."),
                          "env": dict(os.environ if env is None else env)}).encode() + b"\n"
    mine, theirs = socket.socketpair()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    in_r, in_w = os.pipe() if input is not None else (os.open(os.devnull, os.O_RDONLY), None)
    files = [os.fdopen(fd, mode, buffering=0) for fd, mode in
             ((out_r, "rb"), (err_r, "rb"), *([(in_w, "wb")] if in_w is not None else []))]
    try:
        _SERVER.start_command([theirs.fileno(), in_r, out_w, err_w])
    except BaseException:
        mine.close()
        for f in files:
            f.close()
        raise
    finally:  # the supervisor has its copies now; ours would keep the pipes open
        theirs.close()
        for fd in (in_r, out_w, err_w):
            os.close(fd)
    transports: list[asyncio.BaseTransport] = []
    pending: list[asyncio.Future] = []
    status = writer = None
    try:
        mine.sendall(request)  # a few kB: the socket's buffer takes it at once
        status, writer = await asyncio.open_unix_connection(sock=mine)
        transports.append(writer.transport)
        for capture, file in ((out, files[0]), (err, files[1])):
            pending.append(loop.create_future())
            transport, _ = await loop.connect_read_pipe(
                lambda c=capture, d=pending[-1]: _Pipe(c, d), file)
            transports.append(transport)
        if in_w is not None:
            feed, _ = await loop.connect_write_pipe(asyncio.Protocol, files[2])
            transports.append(feed)
            feed.write(input)
            feed.close()  # once written; a command that does not read breaks the pipe
        timed_out = False
        try:
            code = await asyncio.wait_for(_exit_code(status), timeout)
        except TimeoutError:
            code, timed_out = await _stop(status, writer), True
        # Nothing of the command runs any more, so nothing holds the pipes: the rest of
        # the output is already on its way.
        await _settled(pending)
        return code, timed_out
    except BaseException:
        if status is not None:  # else closing the socket below tells the supervisor to stop
            await asyncio.shield(_stop(status, writer))
        raise
    finally:
        for transport in transports:
            transport.close()
        mine.close()
        for f in files:
            f.close()


async def _exit_code(status: asyncio.StreamReader) -> int | None:
    while line := await status.readline():
        message = json.loads(line)
        if "error" in message:
            number, text, filename = message["error"]
            raise OSError(number, text, filename)
        if "exit" in message:
            return message["exit"]
    raise ChildProcessError("the command's supervisor ended without reporting an exit status")


async def _stop(status: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int | None:
    """Ask the supervisor to end the command (SIGTERM, then SIGKILL after its grace) and
    wait until it has: its answer means every process of the command is gone."""
    with contextlib.suppress(OSError):
        writer.write(b"term\n")
    try:
        return await asyncio.wait_for(_exit_code(status), GRACE + STOP_SLACK)
    except (OSError, TimeoutError, ValueError):
        return None


async def _settled(pending: list[asyncio.Future]) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*pending), AFTER_EXIT)


# ------------------------------------------------------ elsewhere: the process group
class _Grouped(asyncio.SubprocessProtocol):
    def __init__(self, out: _Capture, err: _Capture, loop: asyncio.AbstractEventLoop) -> None:
        self.captures = {1: out, 2: err}
        self.exited = loop.create_future()
        self.closed = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self.captures[fd].add(data)

    def process_exited(self) -> None:
        self.exited.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:  # exited and all pipes closed
        for capture in self.captures.values():
            capture.add(b"", final=True)
        self.closed.set_result(None)


async def _grouped(argv, cwd, timeout, env, input, out, err) -> tuple[int | None, bool]:
    loop = asyncio.get_running_loop()
    transport, watch = await loop.subprocess_exec(
        lambda: _Grouped(out, err, loop), *argv, cwd=cwd,
        env=dict(env) if env is not None else None,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    pid = transport.get_pid()
    try:
        if input is not None:
            stdin = transport.get_pipe_transport(0)
            stdin.write(input)
            stdin.close()
        timed_out = False
        try:
            await asyncio.wait_for(asyncio.shield(watch.exited), timeout)
        except TimeoutError:
            timed_out = True
            await _kill_group(pid, watch.exited)
        except BaseException:
            await asyncio.shield(_kill_group(pid, watch.exited))
            raise
        _killpg(pid, signal.SIGKILL)  # background jobs of its group would hold the pipes
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(watch.closed), AFTER_EXIT)
        return transport.get_returncode(), timed_out
    finally:
        transport.close()


def _killpg(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def _kill_group(pid: int, exited: asyncio.Future) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        _killpg(pid, sig)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(exited), GRACE)
            return
