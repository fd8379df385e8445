"""Git workspace benchmark: worktree creation, commit, merge and removal at 1, 10 and 50
parallel tasks, ``Workspace`` against plain sequential git.

    python bench/git_bench.py                      # 1 (x5), 10 (x3), 50 (x2) tasks (~1 min)
    python bench/git_bench.py --quick              # 1 (x3), 10 (x2) tasks (~15 s)
    python bench/git_bench.py --tmpdir /dev/shm    # on tmpfs: git's cost without the disk's

(Timings for a 2-core VM whose disk creates a file in ~1 ms; ``worktree add`` of the
201-file repository then takes 40-200 ms there and ~20 ms on tmpfs.)

What it measures
----------------
For each size N, a fresh repository in a temp directory holding a small realistic project
(200 files of ~1 KB in 6 directories, one commit on ``main``). ``agentorch_nb.Workspace``
is driven the way the engine drives it: every call in ``asyncio.to_thread`` on the loop's
default executor (``min(32, cpus + 4)`` threads, so at most 6 git calls at once on 2 cores),
and all N calls of a phase started at once:

    create   N x create_worktree(run, task, 1)
    commit   N x (write one distinct file; commit_all)   -- all in their own worktrees
    merge    N x merge(approved sha)  -- requested together, serialized on the merge lock
    remove   N x remove_worktree(wt)
    cleanup  1 x cleanup(run)          -- what the engine does at the end of a run

Each size is repeated (xN above) on fresh repositories, Workspace and baseline back to
back, alternating which goes first. The baseline, on its own fresh copy of the repository,
does the same work with plain sequential ``subprocess.run(["git", ...])`` calls and no
Workspace: ``git worktree add -b``; write + ``git add -A`` + ``git commit``;
``git merge --no-edit``; ``git worktree remove --force`` + ``git branch -D``.

How to read it
--------------
``total s`` is the wall time of the phase (first call started -> last call returned), the
median over the repetitions; ``ms/task`` is total / N; ``call p50``/``call max`` are the
durations of the single calls as measured inside their threads, so for the concurrent
Workspace they include waiting for a lock held by another call (not waiting for a free
executor thread). For ``merge`` and ``remove``, which hold a lock for their whole body,
per-task ms is the real cost of one call and call p50/max mostly show queueing.
``git/task`` counts git processes per task. The LOCKS lines split the Workspace calls' time
into waiting for and holding its worktree lock (add/remove/prune) and its merge lock; "held
99% of the phase" means the phase ran one call at a time however many were started. The GIT
lines break each Workspace call into its git processes (count per task x mean ms; the means
grow under concurrency, as processes share the 2 cores and the disk).

``ws/base`` = Workspace phase time / baseline phase time, the median over the repetitions
of the back-to-back pairs ("range": lowest-highest pair; a wide range means the disk's
speed changed during the run, so trust the --tmpdir /dev/shm ratios more for git's own
costs). Because the baseline is sequential and the Workspace is concurrent, a ratio below 1
means concurrency won more than the Workspace's extra git calls cost; above 1 means the
extra safety (clean-tree check, ancestor check, prune, diff of changed files, one git
process each) costs more than parallelism gains. On 2 cores parallelism can gain at most
~2x; git processes are the unit of cost (a few ms each), so the SPAWN line (one ``git
rev-parse HEAD`` through the package's GitPython wrapper vs ``subprocess.run``) is the
floor of every call.

Correctness is checked after every size, for both approaches: all N files on ``main``,
every merge reported ok, ``git status --porcelain`` empty, no ``agentorch/*`` branch left,
``git worktree list`` showing only the main worktree and no worktree directory left.
Exit status 0 when all checks pass, else 1 with an ERROR line per failure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agentorch_nb import workspace as wsmod  # noqa: E402
from agentorch_nb.workspace import AUTHOR, Workspace, _git  # noqa: E402

RUN = "bench"
TARGET = "main"
ERRORS: list[str] = []
GIT_ENV = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}


# -------------------------------------------------------------------- helpers
def git(cwd: Path, *args: str) -> str:
    """Plain git CLI call (the baseline's only tool, and the bench's own setup/checks)."""
    out = subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"git {' '.join(args)} failed in {cwd}: {out.stderr.strip()}")
    return out.stdout.strip()


def make_repo(path: Path, files: int = 200) -> Path:
    """A small project: ``files`` files of ~1 KB spread over 6 directories, one commit."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", TARGET)
    dirs = ["src/core", "src/util", "src/api", "tests", "docs", "scripts"]
    for i in range(files):
        d = path / dirs[i % len(dirs)]
        d.mkdir(parents=True, exist_ok=True)
        body = "".join(f"line {j} of file {i}: some ordinary source text here\n" for j in range(20))
        (d / f"mod_{i:03d}.py").write_text(body)
    (path / "README.md").write_text("# bench project\n")
    git(path, "add", "-A")
    git(path, *AUTHOR, "commit", "-q", "-m", "Initial commit")
    return path


def task_file(i: int) -> str:
    return f"tasks/task_{i:03d}.txt"


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


class Phase:
    def __init__(self, total: float, calls: list[float], procs: int = 0) -> None:
        self.total = total
        self.calls = calls
        self.procs = procs  # git processes started
        self.git: dict[str, list[float]] = {}  # Workspace only: subcommand -> durations

    def per_task(self) -> float:
        return self.total / len(self.calls)


class TimedLock:
    """Stands in for one of Workspace's ``threading.Lock``s: records wait and hold times."""

    def __init__(self, inner: threading.Lock) -> None:
        self.inner = inner
        self.waits: list[float] = []
        self.holds: list[float] = []
        self._local = threading.local()

    def __enter__(self):
        t = time.perf_counter()
        self.inner.acquire()
        self._local.t = time.perf_counter()
        self.waits.append(self._local.t - t)
        return self

    def __exit__(self, *exc) -> None:
        self.holds.append(time.perf_counter() - self._local.t)
        self.inner.release()

    def reset(self) -> tuple[list[float], list[float]]:
        w, h = self.waits, self.holds
        self.waits, self.holds = [], []
        return w, h


# ------------------------------------------------------------------ Workspace
async def gather_timed(fn, args_list: list[tuple]) -> tuple[Phase, list]:
    """Start every ``fn(*args)`` at once, each in ``asyncio.to_thread``; time them."""

    def timed(*args):
        t = time.perf_counter()
        result = fn(*args)
        return result, time.perf_counter() - t

    t0 = time.perf_counter()
    out = await asyncio.gather(*(asyncio.to_thread(timed, *a) for a in args_list))
    total = time.perf_counter() - t0
    return Phase(total, [d for _, d in out]), [r for r, _ in out]


class GitCounter:
    """Counts and times the git processes the Workspace starts, by subcommand (wraps the
    module's ``_git``, which every Workspace method calls through the module global)."""

    def __init__(self) -> None:
        self.calls: dict[str, list[float]] = {}
        self._guard = threading.Lock()
        self._orig = wsmod._git

    def __enter__(self) -> GitCounter:
        def counted(cwd, *args, **kwargs):
            rest = list(args)
            while rest and rest[0] == "-c":
                rest = rest[2:]
            t = time.perf_counter()
            try:
                return self._orig(cwd, *args, **kwargs)
            finally:
                d = time.perf_counter() - t
                with self._guard:
                    name = " ".join(rest[:2] if rest[:1] == ["worktree"] else rest[:1])
                    self.calls.setdefault(name, []).append(d)

        wsmod._git = counted
        return self

    def __exit__(self, *exc) -> None:
        wsmod._git = self._orig

    def take(self) -> dict[str, list[float]]:
        with self._guard:
            c, self.calls = self.calls, {}
        return c


async def run_workspace(root: Path, n: int) -> tuple[dict[str, Phase], dict, list]:
    with GitCounter() as counter:
        return await _run_workspace(root, n, counter)


async def _run_workspace(root: Path, n: int,
                         counter: GitCounter) -> tuple[dict[str, Phase], dict, list]:
    ws = Workspace(root)
    counter.take()
    # instrument the two locks (bench-local: this repository's git dir is unique)
    wt_lock = TimedLock(ws._wt_lock)
    ws._wt_lock = wt_lock
    key = str(ws.git_dir)
    with wsmod._locks_guard:
        merge_lock = TimedLock(wsmod._locks.setdefault(key, threading.Lock()))
        wsmod._locks[key] = merge_lock  # type: ignore[assignment]
    phases: dict[str, Phase] = {}
    locks: dict[str, tuple] = {}

    phases["create"], wts = await gather_timed(
        ws.create_worktree, [(RUN, f"t{i:03d}", 1) for i in range(n)])
    locks["create"] = wt_lock.reset()
    phases["create"].git = counter.take()
    phases["create"].procs = sum(map(len, phases["create"].git.values()))

    def write_commit(wt, i):
        p = wt.path / task_file(i)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"work of task {i}\n")
        return ws.commit_all(wt, f"task {i}\n\nagentorch run {RUN}, task t{i:03d}, attempt 1")

    phases["commit"], shas = await gather_timed(write_commit, [(wt, i) for i, wt in enumerate(wts)])
    locks["commit"] = wt_lock.reset()
    phases["commit"].git = counter.take()
    phases["commit"].procs = sum(map(len, phases["commit"].git.values()))
    for i, sha in enumerate(shas):
        if not sha:
            ERRORS.append(f"workspace n={n}: commit_all of task {i} returned no commit")
    phases["merge"], results = await gather_timed(
        ws.merge, [(sha, f"agentorch: merge {RUN}/t{i:03d}") for i, sha in enumerate(shas) if sha])
    locks["merge"] = merge_lock.reset()
    phases["merge"].git = counter.take()
    phases["merge"].procs = sum(map(len, phases["merge"].git.values()))
    phases["remove"], _ = await gather_timed(ws.remove_worktree, [(wt,) for wt in wts])
    locks["remove"] = wt_lock.reset()
    phases["remove"].git = counter.take()
    phases["remove"].procs = sum(map(len, phases["remove"].git.values()))
    phases["cleanup"], _ = await gather_timed(ws.cleanup, [(RUN,)])
    locks["cleanup"] = wt_lock.reset()
    phases["cleanup"].git = counter.take()
    phases["cleanup"].procs = sum(map(len, phases["cleanup"].git.values()))
    with wsmod._locks_guard:
        wsmod._locks[key] = merge_lock.inner  # type: ignore[assignment]
    return phases, locks, results


# ------------------------------------------------------------------- baseline
def run_baseline(root: Path, n: int) -> dict[str, Phase]:
    wt_dir = root.parent / (root.name + "-worktrees")
    base = git(root, "rev-parse", "HEAD")
    paths = [wt_dir / f"t{i:03d}-a1" for i in range(n)]
    branches = [f"agentorch/{RUN}/t{i:03d}/a1" for i in range(n)]
    phases: dict[str, Phase] = {}

    def seq(step, items) -> Phase:
        calls = []
        t0 = time.perf_counter()
        for item in items:
            t = time.perf_counter()
            step(*item)
            calls.append(time.perf_counter() - t)
        return Phase(time.perf_counter() - t0, calls)

    def create(path, branch):
        git(root, "worktree", "add", "-q", "-b", branch, str(path), base)

    def commit(path, i):
        p = path / task_file(i)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"work of task {i}\n")
        git(path, "add", "-A")
        git(path, *AUTHOR, "commit", "-q", "-m", f"task {i}")

    def merge(branch, i):
        git(root, *AUTHOR, "merge", "-q", "--no-edit", "-m", f"merge t{i:03d}", branch)

    def remove(path, branch):
        git(root, "worktree", "remove", "--force", str(path))
        git(root, "branch", "-D", "-q", branch)

    phases["create"] = seq(create, list(zip(paths, branches)))
    phases["commit"] = seq(commit, [(p, i) for i, p in enumerate(paths)])
    phases["merge"] = seq(merge, [(b, i) for i, b in enumerate(branches)])
    phases["remove"] = seq(remove, list(zip(paths, branches)))
    for name, per_task in (("create", 1), ("commit", 2), ("merge", 1), ("remove", 2)):
        phases[name].procs = per_task * n
    return phases


# ---------------------------------------------------------------- correctness
def verify(label: str, root: Path, n: int, extra_dirs: list[Path]) -> None:
    def err(msg: str) -> None:
        ERRORS.append(f"{label}, n={n}: {msg}")

    tree = set(git(root, "ls-tree", "-r", "--name-only", TARGET).splitlines())
    missing = [task_file(i) for i in range(n) if task_file(i) not in tree]
    if missing:
        err(f"{len(missing)} task files missing on {TARGET}, e.g. {missing[:3]}")
    for i in range(n):
        f = root / task_file(i)
        if task_file(i) in tree and (not f.exists() or f.read_text() != f"work of task {i}\n"):
            err(f"{task_file(i)} in the main checkout does not hold task {i}'s work")
            break
    status = git(root, "status", "--porcelain")
    if status:
        err(f"git status --porcelain not empty: {status.splitlines()[:3]}")
    branches = git(root, "branch", "--list", "agentorch/*")
    if branches:
        err(f"agentorch branches left: {branches.split()[:3]}")
    listed = [ln for ln in git(root, "worktree", "list", "--porcelain").splitlines()
              if ln.startswith("worktree ")]
    if listed != [f"worktree {root}"]:
        err(f"git worktree list shows {len(listed)} worktrees: {listed[:3]}")
    for d in extra_dirs:
        left = [p for p in d.glob("*") if p.exists()] if d.exists() else []
        if left:
            err(f"{len(left)} worktree directories left in {d}, e.g. {left[0]}")
    if git(root, "branch", "--show-current") != TARGET:
        err(f"main checkout is not on {TARGET}")


# ---------------------------------------------------------------------- floor
def spawn_floor(root: Path, k: int = 40) -> tuple[float, float]:
    """ms per ``git rev-parse HEAD``: through the package's wrapper, and subprocess.run."""
    _git(root, "rev-parse", "HEAD")
    git(root, "rev-parse", "HEAD")
    t = time.perf_counter()
    for _ in range(k):
        _git(root, "rev-parse", "HEAD")
    a = (time.perf_counter() - t) / k
    t = time.perf_counter()
    for _ in range(k):
        git(root, "rev-parse", "HEAD")
    b = (time.perf_counter() - t) / k
    return a * 1e3, b * 1e3


# ----------------------------------------------------------------------- main
PHASES = ["create", "commit", "merge", "remove", "cleanup"]
REPS_FULL = {1: 5, 10: 3, 50: 2}
REPS_QUICK = {1: 3, 10: 2}


def med(values: list[float]) -> float:
    return statistics.median(values)


def report(n: int, reps: list[tuple[dict, dict, dict, list]]) -> None:
    """One table for size n; ``reps`` holds (ws phases, base phases, ws locks, merge results)
    of each repetition. Totals are medians over the repetitions, call p50/max are over all
    calls of all repetitions, ws/base is the median of the per-repetition ratios (each pair
    ran back to back, so slow spells of the disk hit both sides alike)."""
    k = len(reps)
    print(f"\n=== {n} task{'s' if n != 1 else ''} ({k} repetition{'s' if k != 1 else ''}, "
          "Workspace concurrent | baseline sequential) ===")
    print(f"{'phase':8s} {'total s':>8s} {'ms/task':>8s} {'call p50':>9s} {'call max':>9s}"
          f" {'git/task':>8s} | {'total s':>8s} {'ms/task':>8s} {'call p50':>9s} {'call max':>9s}"
          f" {'git/task':>8s} | {'ws/base':>7s} {'range':>11s}")
    for name in PHASES:
        ws = [r[0][name] for r in reps]
        calls = [c for ph in ws for c in ph.calls]
        line = (f"{name:8s} {med([ph.total for ph in ws]):8.3f}"
                f" {med([ph.per_task() for ph in ws]) * 1e3:8.1f} {pct(calls, .5) * 1e3:9.1f}"
                f" {max(calls) * 1e3:9.1f} {ws[0].procs / len(ws[0].calls):8.1f}")
        if name not in reps[0][1]:
            line += f" | {'-':>8s} {'-':>8s} {'-':>9s} {'-':>9s} {'-':>8s} | {'-':>7s} {'-':>11s}"
        else:
            base = [r[1][name] for r in reps]
            bcalls = [c for ph in base for c in ph.calls]
            ratios = [w.total / b.total for w, b in zip(ws, base)]
            spread = f"{min(ratios):.2f}-{max(ratios):.2f}" if k > 1 else ""
            line += (f" | {med([ph.total for ph in base]):8.3f}"
                     f" {med([ph.per_task() for ph in base]) * 1e3:8.1f}"
                     f" {pct(bcalls, .5) * 1e3:9.1f} {max(bcalls) * 1e3:9.1f}"
                     f" {base[0].procs / len(base[0].calls):8.1f}"
                     f" | {med(ratios):7.2f} {spread:>11s}")
        print(line)
    parts = []
    for name in PHASES:
        waits = [w for r in reps for w in r[2][name][0]]
        holds = [h for r in reps for h in r[2][name][1]]
        if holds and name != "commit":
            lock = "merge lock" if name == "merge" else "worktree lock"
            busy = med([sum(r[2][name][1]) / r[0][name].total for r in reps])
            parts.append(f"{name:7s} {lock:13s} wait p50 {pct(waits, .5) * 1e3:6.1f} max "
                         f"{max(waits) * 1e3:6.1f} ms | held p50 {pct(holds, .5) * 1e3:6.1f} ms, "
                         f"held {busy:4.0%} of the phase")
    print("LOCKS   " + "\n        ".join(parts))
    parts = []
    for name in PHASES:
        per: dict[str, list[float]] = {}
        for r in reps:
            for cmd, ds in r[0][name].git.items():
                per.setdefault(cmd, []).extend(ds)
        calls = sum(len(r[0][name].calls) for r in reps)
        items = sorted(per.items(), key=lambda kv: -sum(kv[1]))
        parts.append(f"{name:7s} " + (", ".join(
            f"{cmd} {len(ds) / calls:.0f}x {statistics.mean(ds) * 1e3:.1f}" for cmd, ds in items)
            or "-"))
    print("GIT     (Workspace's git processes per task: count x mean ms, in-thread)\n        "
          + "\n        ".join(parts))
    kinds: dict[str, int] = {}
    for r in reps:
        for m in r[3]:
            kinds[m.status] = kinds.get(m.status, 0) + 1
    print("MERGES  " + ", ".join(f"{kk} {v}" for kk, v in sorted(kinds.items()))
          + (f" (over {k} repetitions)" if k > 1 else ""))


def one_rep(tmp: Path, n: int, rep: int) -> tuple[dict, dict, dict, list] | None:
    tag = f"{n}-{rep}"
    ws_root = make_repo(tmp / f"ws-{tag}")
    base_root = make_repo(tmp / f"base-{tag}")
    base_dirs = [tmp / f"base-{tag}-worktrees"]
    base = None
    if rep % 2 == 0:  # alternate which side goes first
        base = run_baseline(base_root, n)
    try:
        ws, locks, results = asyncio.run(run_workspace(ws_root, n))
    except Exception as exc:  # noqa: BLE001 - report as an ERROR line, exit 1
        ERRORS.append(f"workspace n={n} rep {rep}: {type(exc).__name__}: {str(exc).strip()[:500]}")
        return None
    if base is None:
        base = run_baseline(base_root, n)
    for i, r in enumerate(results):
        if not r.ok:
            ERRORS.append(f"workspace n={n} rep {rep}: merge {i} ended {r.status}: {r.conflicts}")
    if len(results) != n:
        ERRORS.append(f"workspace n={n} rep {rep}: {len(results)} merges for {n} tasks")
    verify(f"baseline rep {rep}", base_root, n, base_dirs)
    verify(f"workspace rep {rep}", ws_root, n, [ws_root / ".worktrees" / RUN])
    shutil.rmtree(ws_root, ignore_errors=True)
    shutil.rmtree(base_root, ignore_errors=True)
    shutil.rmtree(base_dirs[0], ignore_errors=True)
    return ws, base, locks, results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sizes 1 and 10 only")
    parser.add_argument("--tmpdir", help="where to make the repositories (default: the system "
                        "temp dir; /dev/shm takes the disk out of the numbers)")
    args = parser.parse_args()
    plan = REPS_QUICK if args.quick else REPS_FULL
    start = time.perf_counter()
    gitv = git(Path.cwd(), "--version")
    workers = min(32, (os.cpu_count() or 1) + 4)
    print(f"git_bench: {gitv}, Python {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"default executor {workers} threads, sizes {list(plan)}, repo of 201 files")
    tmp = Path(tempfile.mkdtemp(prefix="agentorch-gitbench-", dir=args.tmpdir)).resolve()
    print(f"repositories in {tmp}")
    try:
        a, b = spawn_floor(make_repo(tmp / "floor"))
        print(f"SPAWN   git rev-parse HEAD: {a:.1f} ms via workspace._git (GitPython), "
              f"{b:.1f} ms via subprocess.run")
        for n, k in plan.items():
            reps = []
            for rep in range(k):
                done = one_rep(tmp, n, rep)
                if done is not None:
                    reps.append(done)
            if reps:
                report(n, reps)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n(total {time.perf_counter() - start:.1f} s)")
    for e in ERRORS:
        print(f"ERROR {e}")
    return 1 if ERRORS else 0


if __name__ == "__main__":
    sys.exit(main())
