"""The command supervisor of :mod:`agentorch_nb._proc` on Linux: nothing a command starts
outlives it, however it detaches (``setsid``, ``set -m``, a double fork).

Run as a script, ``python -I -S _supervisor.py FD``, by the process that runs commands (it
imports only the standard library, never the package); FD is a Unix socket to that process.
It serves for as long as that socket is open: each request is one byte carrying four
descriptors -- the call's socket, then the command's stdin, stdout and stderr -- and the
server forks one supervisor per command. Forking from a server that is already running costs
a millisecond or two; starting an interpreter per command would cost a tenth of a second.

A supervisor makes itself a child subreaper (``prctl(PR_SET_CHILD_SUBREAPER)``), so every
process the command starts stays its descendant or, orphaned, is re-parented to it. It spawns
the command in a process group of its own and waits. When the command's main process exits,
when the caller sends ``term`` (a timeout, a cancellation: SIGTERM first, SIGKILL after
``GRACE``), or when the caller goes away (its end of the call's socket closes), it kills every
descendant and reaps them until none is left; only then does it report the exit status, so
a caller that has the status knows that nothing of the command runs any more and that
nothing holds its output pipes.

The call's socket carries JSON lines. Caller to supervisor: ``{"argv", "cwd", "env"}``,
then possibly ``term``. Supervisor to caller: ``{"pid": n}``, or ``{"error": [errno,
message, filename]}`` when the command could not start, then ``{"exit": code}`` (negative:
killed by that signal).
"""

import contextlib
import ctypes
import errno
import json
import os
import select
import signal
import socket
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
GRACE = 2.0  # seconds between SIGTERM and SIGKILL when the caller asks to stop
# Ignored by this interpreter (or by the server), they must not stay ignored in the command.
RESET = {signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD, signal.SIGTERM, signal.SIGINT,
         signal.SIGHUP}
LIBC = ctypes.CDLL(None, use_errno=True)


def serve(fd):
    control = socket.socket(fileno=fd)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # supervisors are reaped by the kernel
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the caller
    while True:
        msg, fds, _flags, _addr = socket.recv_fds(control, 1, 4)
        if not msg:  # the caller exited
            return
        if len(fds) == 4 and os.fork() == 0:
            code = 70
            try:
                control.close()
                Supervisor(*fds).run()
                code = 0
            except BaseException:  # noqa: BLE001 - last words of a forked child
                import traceback
                traceback.print_exc()
            finally:
                os._exit(code)
        for received in fds:
            os.close(received)


class Supervisor:
    def __init__(self, call_fd, *stdio):
        self.call = socket.socket(fileno=call_fd)
        self.stdio = stdio
        self.main = None
        self.status = None  # the main process's exit code once reaped
        self.stopping = False
        for fd in (call_fd, *stdio):
            os.set_inheritable(fd, False)
        self.wake, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, self.on_signal)
        if LIBC.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            # Without it orphans escape to init; the group kill below still holds.
            print(f"agentorch supervisor: no subreaper: {os.strerror(ctypes.get_errno())}",
                  file=sys.stderr)

    def on_signal(self, sig, _frame):
        if sig != signal.SIGCHLD:
            self.stopping = True

    def send(self, **message):
        with contextlib.suppress(OSError):  # the caller may be gone
            self.call.sendall(json.dumps(message).encode() + b"\n")

    def run(self):
        request, rest = self.request()
        if request is None:
            return
        try:
            os.chdir(request["cwd"])
        except OSError as exc:
            self.send(error=[exc.errno, exc.strerror, request["cwd"]])
            return
        try:
            self.main = spawn(request["argv"], request["env"], self.stdio)
        except OSError as exc:
            self.send(error=[exc.errno, exc.strerror, request["argv"][0]])
            return
        finally:
            for fd in self.stdio:
                os.close(fd)
        self.send(pid=self.main)
        try:
            self.watch(asked=b"term" in rest)
        finally:
            self.sweep()
        self.send(exit=self.status)

    def request(self):
        data = b""
        while b"\n" not in data:
            chunk = self.call.recv(65536)
            if not chunk:
                return None, b""
            data += chunk
        line, _, rest = data.partition(b"\n")
        return json.loads(line), rest

    def watch(self, asked):
        """Until the main process exits, or GRACE after a request to stop."""
        deadline = None
        listening = [self.call, self.wake]
        while True:
            if (asked or self.stopping) and deadline is None:
                deadline = time.monotonic() + GRACE
                self.terminate()
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select(listening, [], [], wait)
            if self.wake in ready:
                os.read(self.wake, 4096)
            if self.reap() is False or self.status is not None:
                return
            if self.call in ready:
                data = b""
                with contextlib.suppress(OSError):
                    data = self.call.recv(4096)
                if not data:  # the caller went away: nobody is left to wait for the command
                    listening.remove(self.call)
                asked = True
            if deadline is not None and time.monotonic() >= deadline:
                return

    def terminate(self):
        # The main process is not reaped yet, so its group id cannot have been reused.
        with contextlib.suppress(OSError):
            os.killpg(self.main, signal.SIGTERM)
        for pid in children():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)

    def reap(self):
        """Reap what has ended; False once no child is left at all."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return False
            if pid == 0:
                return True
            if pid == self.main:
                self.status = os.waitstatus_to_exitcode(status)

    def sweep(self):
        """SIGKILL every child until none is left: a killed child's own children are then
        re-parented here, and killed in the next round."""
        pause = 0.001
        while self.reap():
            for pid in children():
                with contextlib.suppress(OSError):  # not reaped yet, so the pid is still ours
                    os.kill(pid, signal.SIGKILL)
            if select.select([self.wake], [], [], pause)[0]:
                os.read(self.wake, 4096)
            pause = min(pause * 2, 0.05)


def spawn(argv, env, stdio):
    """Start ``argv`` with ``stdio`` as fds 0-2, in a new process group, searching the
    ``PATH`` of ``env`` as ``subprocess`` does."""
    actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(stdio)]
    name = argv[0]
    if os.path.dirname(name):
        candidates = [name]
    else:
        # Only where a file of that name exists: each failed spawn costs a fork.
        candidates = [path for path in (os.path.join(d, name) for d in os.get_exec_path(env))
                      if os.path.isfile(path)]
    failure = None
    for path in candidates:
        try:
            return os.posix_spawn(path, argv, env, file_actions=actions, setpgroup=0,
                                  setsigdef=RESET, setsigmask=())
        except OSError as exc:
            if failure is None or failure.errno in (errno.ENOENT, errno.ENOTDIR):
                failure = exc
    raise failure or FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)


def children():
    me = os.getpid()
    try:
        with open(f"/proc/{me}/task/{me}/children") as fh:
            return [int(pid) for pid in fh.read().split()]
    except FileNotFoundError:  # a kernel without CONFIG_PROC_CHILDREN: read every stat
        pass
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as fh:
                    stat = fh.read()
            except OSError:
                continue
            if int(stat.rpartition(b")")[2].split()[1]) == me:
                found.append(int(entry.name))
    return found


if __name__ == "__main__":
    serve(int(sys.argv[1]))
