"""The kill loop: run the fault scenario in a child process, SIGKILL it at a random moment
(the engine alone, or its whole process group with the git it runs), check the invariants,
resume in a new child, again and again, until a resume drives the run to its end.

Seeded: a run's seed fixes its repository, its tasks and its kill plan (when, which signal
target); only where each kill lands is left to the machine's timing.

    figures = run_harness(seed=1, kills=20)
    print(summary(figures))
"""

from __future__ import annotations

import json
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from .invariants import NAMES, Checker, Violation, read_store
from .scenario import Params, make_repo, make_scenario

ROOT = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("child.py")
RUN_TIMEOUT = 90.0  # the final process's run takes seconds; past this it is stuck
LINE_TIMEOUT = 60.0  # for the run id line of a process not killed before it


@dataclass
class Kill:
    group: bool  # os.killpg (engine and its git) or os.kill (the engine alone)
    before_line: bool  # at a moment counted from the spawn, maybe before the run id line
    delay: float
    stray: int = 0  # processes of the group still alive a while after the kill (then killed)
    caught: tuple[str, ...] = ()  # what the repository shows the kill interrupted

    def __str__(self) -> str:
        who = "group" if self.group else "engine alone"
        when = "after spawn" if self.before_line else "after the run id"
        return f"{who}, {self.delay:.2f} s {when}"


@dataclass
class RunReport:
    seed: int
    kills: list[Kill] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    processes: int = 0
    completed: bool = False
    seconds: float = 0.0
    directory: str = ""


class Child:
    """One process of the run: stdout lines arrive on a queue, stderr goes to a file."""

    def __init__(self, argv: list[str], cwd: Path, err: Path) -> None:
        path = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([*path, str(ROOT)])}
        self.err = err
        with open(err, "w") as fh:
            self.proc = subprocess.Popen([sys.executable, str(CHILD), *argv], cwd=cwd, env=env,
                                         stdout=subprocess.PIPE, stderr=fh, text=True,
                                         start_new_session=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.out: list[str] = []
        self.eof = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def next_line(self, timeout: float) -> str | None:
        """The next line; None at the end of the output or after ``timeout`` seconds."""
        if self.eof:
            return None
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            return None
        if line is None:
            self.eof = True
        else:
            self.out.append(line)
        return line

    def rest(self) -> list[str]:
        """Every line, once the process has ended."""
        while not self.eof:
            self.next_line(60)
        return self.out

    def stderr_tail(self, n: int = 12) -> str:
        lines = [line for line in self.err.read_text(errors="replace").splitlines()
                 if line.strip(" ^~")]  # not the carets under a traceback's line
        return "\n".join(lines[-n:])

    def kill(self, group: bool) -> int:
        """SIGKILL, reap, then wait until no process of its group is left (git children of a
        killed engine finish or die of SIGPIPE); returns how many had to be killed after 30 s."""
        pgid = self.proc.pid
        (os.killpg if group else os.kill)(pgid, signal.SIGKILL)
        self.proc.wait()
        deadline = time.monotonic() + 30
        while (left := group_members(pgid)) and time.monotonic() < deadline:
            time.sleep(0.005)
        if left:
            os.killpg(pgid, signal.SIGKILL)
        return len(left)


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] not in "ZX":
            found.append(int(entry))
    return found


def drive_run(seed: int, base: Path, *, kills: int | None = None, max_delay: float = 3.0,
              params: dict | None = None, log=None, trace=None) -> RunReport:
    """One scenario run in a fresh repository under ``base``: ``kills`` kills (default: 3 to 8,
    drawn from the seed), then a process that drives the run to its end."""
    started = time.monotonic()
    rng = random.Random(seed)
    wanted = rng.randint(3, 8) if kills is None else kills
    p = Params(seed=seed, **(params or {}))
    sc = make_scenario(p)
    here = base / f"run-{seed}"
    repo = make_repo(sc, here / "repo")
    journal = here / "journal"
    checker = Checker(sc, repo, journal)
    report = RunReport(seed, directory=str(here))
    run_id: str | None = None
    failures = 0

    seen: set[str] = set()

    def record(found: list[Violation], where: str) -> None:
        """One violation per invariant and check: its first finding, and how many more. A
        finding an earlier check of the run reported already (a file still missing) is not
        counted again."""
        fresh = [v for v in found if v.text not in seen]
        seen.update(v.text for v in fresh)
        for n in sorted({v.invariant for v in fresh}):
            items = [v.text for v in fresh if v.invariant == n]
            more = f"\n  (and {len(items) - 1} more: {'; '.join(items[1:4])[:600]})" \
                if len(items) > 1 else ""
            report.violations.append(Violation(n, items[0] + more, f"run seed {seed}, {where}"))
            if log:
                log(f"  run seed {seed}, {where}: [{n}] {items[0][:300]}"
                    f"{f' (+{len(items) - 1})' if len(items) > 1 else ''}")

    while True:
        n = report.processes
        report.processes += 1
        argv = ["start" if run_id is None else "resume", str(repo), str(journal), p.to_json()]
        child = Child(argv + [run_id or "-", str(RUN_TIMEOUT)], here, here / f"child-{n}.err")
        spawned = time.monotonic()
        final = len(report.kills) >= wanted
        kill = None if final else Kill(rng.random() < 0.5, rng.random() < 0.15, 0.0)
        if kill is not None:
            # From the spawn: during the imports, resume()'s repairs, or just after the id.
            kill.delay = (rng.uniform(0.3, 2.0) if kill.before_line
                          else 0.0 if rng.random() < 0.15 else rng.uniform(0, max_delay))
        deadline = time.monotonic() + (kill.delay if kill else RUN_TIMEOUT + 30)
        if kill is None or not kill.before_line:
            line = child.next_line(LINE_TIMEOUT)
            if line is None:  # it ended (or hangs) without its id: no kill, see what it says
                deadline = time.monotonic() + (LINE_TIMEOUT if child.eof else 0)
                kill = None if child.eof else kill
            elif kill is not None:
                deadline = time.monotonic() + kill.delay
        try:
            child.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            killed = False
        except subprocess.TimeoutExpired:
            if kill is None:  # the final process did not finish: stuck
                kill = Kill(True, False, RUN_TIMEOUT + 30)
                child.kill(True)
                record([Violation(1, f"the run did not end within {RUN_TIMEOUT + 30:.0f} s of "
                                     f"its resume; stderr:\n{child.stderr_tail()}")],
                       f"process {n}")
                break
            kill.stray = child.kill(kill.group)
            killed = True
        lines = child.rest()
        if trace:
            trace(f"  run seed {seed}, process {n} ({argv[0]}): "
                  f"{f'killed ({kill})' if killed else 'ended ' + (lines[-1] if lines else '')}"
                  f" after {time.monotonic() - spawned:.2f} s")
        printed = lines[0] if lines and lines[0].startswith("run-") else None
        resumed = printed is not None and argv[0] == "resume"  # its repairs of the repository ran
        if printed:
            checker.printed.add(printed)
            run_id = run_id or printed
        if killed:
            report.kills.append(kill)
            where = f"after kill {len(report.kills)} ({kill})"
            if run_id is None:  # killed before the id: the run may exist all the same
                known = _stored_runs(checker)
                run_id = known[0] if len(known) == 1 else None
            record(checker.check(run_id, final=False, resumed=resumed), where)
            kill.caught = tuple(sorted(checker.evidence))
            if not printed:
                kill.caught += ("start-up or resume, before the run id",)
            if run_id is not None and run_id not in _stored_runs(checker):
                run_id = None  # lost, nothing to resume: a user would start the run again
            continue
        result = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else None
        if result is not None and result["status"] == "completed":
            record(checker.check(run_id, final=True, resumed=resumed), "at the end")
            cleanup = Child(["cleanup", str(repo), str(journal), p.to_json()], here,
                            here / "cleanup.err")
            if cleanup.proc.wait() != 0:
                record([Violation(6, f"orch.cleanup() failed:\n{cleanup.stderr_tail()}")],
                       "at cleanup")
            record(checker.check_cleaned(), "after orch.cleanup()")
            report.completed = True
            break
        failures += 1
        if printed is None:
            record([Violation(4, f"process {n} could not {argv[0]} the run "
                                 f"{run_id or ''}:\n{child.stderr_tail()}")], f"process {n}")
        else:
            record([Violation(1, f"the run ended {result}, not completed:\n"
                                 f"{child.stderr_tail(6)}")], f"process {n}")
        record(checker.check(run_id, final=False, resumed=resumed), f"after process {n} ended")
        if failures >= 2:
            break
    report.seconds = time.monotonic() - started
    return report


def _stored_runs(checker: Checker) -> list[str]:
    try:
        return sorted(read_store(checker.store, None)["runs"])
    except Exception:  # noqa: BLE001 - an unreadable store is reported by the checks
        return []


@dataclass
class Figures:
    seed: int
    target: int
    reports: list[RunReport] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def kills(self) -> list[Kill]:
        return [k for r in self.reports for k in r.kills]

    @property
    def violations(self) -> list[Violation]:
        return [v for r in self.reports for v in r.violations]


def run_harness(seed: int = 1, kills: int = 200, jobs: int = 2, *, max_delay: float = 3.0,
                params: dict | None = None, workdir: str | Path | None = None,
                keep: bool = False, log=None, trace=None) -> Figures:
    """Runs until ``kills`` kills are done, ``jobs`` scenario runs at a time. A run's seed is
    ``seed * 1000 + i``. Run directories with violations are kept (and named in the
    violations), the others removed unless ``keep``."""
    started = time.monotonic()
    base = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="agentorch-faults-"))
    base.mkdir(parents=True, exist_ok=True)
    fig = Figures(seed, kills)
    planned, i = 0, 0
    with ThreadPoolExecutor(jobs) as pool:
        running: dict = {}
        while planned < kills or running:
            while planned < kills and len(running) < jobs:
                rs = seed * 1000 + i
                i += 1
                want = min(random.Random(rs).randint(3, 8), kills - planned)
                planned += want
                running[pool.submit(drive_run, rs, base, kills=want, max_delay=max_delay,
                                    params=params, log=log, trace=trace)] = want
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                want = running.pop(fut)
                report = fut.result()
                planned -= want - len(report.kills)  # a run may end before its last kill
                fig.reports.append(report)
                if not report.violations and not keep:
                    shutil.rmtree(report.directory, ignore_errors=True)
                if log:
                    log(f"run seed {report.seed}: {len(report.kills)} kills, "
                        f"{len(report.violations)} violations, {report.seconds:.1f} s"
                        f"{'' if report.completed else ', did not complete'}")
    if not keep and not any(r.violations for r in fig.reports):
        shutil.rmtree(base, ignore_errors=True)
    fig.seconds = time.monotonic() - started
    return fig


def summary(fig: Figures, details: int = 5) -> str:
    kills = fig.kills
    group = sum(k.group for k in kills)
    before = sum(k.before_line for k in kills)
    by = Counter(v.invariant for v in fig.violations)
    runs_with = Counter(v.invariant for r in fig.reports for v in {x.invariant: x for x in r.violations}.values())
    lines = [
        f"kills: {len(kills)} (engine alone {len(kills) - group}, process group {group}; "
        f"{before} timed from the spawn, possibly before the run id)",
        f"runs: {len(fig.reports)} ({sum(r.completed for r in fig.reports)} driven to the end), "
        f"processes: {sum(r.processes for r in fig.reports)}, "
        f"stray git processes killed: {sum(k.stray for k in kills)}",
        f"wall time: {fig.seconds:.0f} s",
        "what the kills interrupted, as the repository shows it: " + (", ".join(
            f"{what} {n}" for what, n in Counter(c for k in kills for c in k.caught).most_common())
            or "nothing visible"),
        "",
        f"{'invariant':<58} {'violations':>10} {'runs':>5}",
    ]
    for n, name in NAMES.items():
        lines.append(f"{n} {name:<56} {by.get(n, 0):>10} {runs_with.get(n, 0):>5}")
    lines.append(f"{'total':<58} {sum(by.values()):>10} "
                 f"{sum(1 for r in fig.reports if r.violations):>5}")
    shown = {}
    for v in fig.violations:  # the first of each invariant, then more up to ``details``
        shown.setdefault(v.invariant, v)
    extra = [v for v in fig.violations if v not in shown.values()]
    if fig.violations:
        lines += ["", "first violations (reproduce one run with "
                  "`python bench/faults.py --run-seed SEED --run-kills K`):"]
        for v in [*shown.values(), *extra][:max(details, len(shown))]:
            r = next(r for r in fig.reports if v in r.violations)
            lines.append(f"- {v}\n  (run directory {r.directory}; --run-seed {r.seed} "
                         f"--run-kills {len(r.kills)})")
    return "\n".join(lines)
