"""Deterministic agents: for tests, benchmarks and the offline demo.

They follow the same protocols as the LLM agents and run through the same engine, store
and Phoenix/HITL paths; only the thinking is replaced by rules you give them.

>>> team = Agents(TestDirector(random_dag(5, seed=1)), TestWorker(), TestStrategist())
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path

from .engine.protocols import Agents, Context
from .model import Profile, Task, TaskSpec, Verdict, WorkResult

__all__ = ["Agents", "FileWorker", "TestDirector", "TestStrategist", "TestWorker", "demo_agents",
           "keep_both", "random_dag", "resolve_conflicts", "DEMO_OBJECTIVE"]

Rule = Callable[[Task, Context], "str | None"]


class TestDirector:
    """Plans a fixed list of task specs (or whatever ``plan_fn(objective)`` returns)."""

    __test__ = False

    def __init__(self, specs: list[TaskSpec] | Callable[[str], list[TaskSpec]]) -> None:
        self.specs = specs

    async def plan(self, objective: str, ctx: Context) -> list[TaskSpec]:
        specs = self.specs(objective) if callable(self.specs) else list(self.specs)
        ctx.log("director", f"Planned {len(specs)} tasks for: {objective}")
        return specs


class TestWorker:
    """Sleeps for ``latency`` (seconds, or a function of the task and context), then succeeds
    unless ``fail`` returns a reason. Writes one line per call to ``journal`` if given, so a
    test can count how often each task really ran."""

    __test__ = False

    def __init__(self, latency: float | Callable[[Task, Context], float] = 0.0,
                 fail: Rule | None = None, journal: str | Path | None = None,
                 new_tasks: Callable[[Task], list[TaskSpec]] | None = None) -> None:
        self.latency = latency
        self.fail = fail
        self.journal = Path(journal) if journal else None
        self.new_tasks = new_tasks
        self.calls: list[tuple[str, int]] = []

    async def run(self, task: Task, ctx: Context) -> WorkResult:
        self.calls.append((task.id, ctx.attempt))
        if self.journal is not None:
            with self.journal.open("a") as f:
                f.write(f"{task.id} {ctx.attempt}\n")
        ctx.log("user", f"Task {task.id}: {task.title}\n{ctx.phoenix_brief()}".strip())
        delay = self.latency(task, ctx) if callable(self.latency) else self.latency
        if delay:
            await asyncio.sleep(delay)
        reason = self.fail(task, ctx) if self.fail else None
        if reason:
            ctx.log("assistant", f"Gave up: {reason}")
            return WorkResult(summary=f"attempt {ctx.attempt} failed", ok=False, error=reason)
        ctx.log("assistant", f"Done: {task.title}")
        extra = self.new_tasks(task) if self.new_tasks else []
        return WorkResult(summary=f"{task.title} (attempt {ctx.attempt})", new_tasks=extra)


class FileWorker:
    """Writes files into its attempt's worktree: ``files(task)`` maps paths to their new text
    (None deletes the file). A ``merge`` task resolves the conflicts left in its worktree
    with :func:`resolve_conflicts`. Writes ``task attempt`` lines to ``journal`` if given."""

    __test__ = False

    def __init__(self, files: Callable[[Task], dict[str, str | None]],
                 journal: str | Path | None = None) -> None:
        self.files = files
        self.journal = Path(journal) if journal else None

    async def run(self, task: Task, ctx: Context) -> WorkResult:
        root = await ctx.worktree()
        if self.journal is not None:
            with self.journal.open("a") as f:
                f.write(f"{task.id} {ctx.attempt}\n")
        if task.profile == Profile.MERGE:
            resolved = await asyncio.to_thread(resolve_conflicts, root)
            return WorkResult(f"resolved {', '.join(resolved) or 'nothing'}")
        for name, text in self.files(task).items():
            path = root / name
            if text is None:
                path.unlink(missing_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
        return WorkResult(f"wrote {', '.join(self.files(task)) or 'nothing'}")


def resolve_conflicts(root: Path) -> list[str]:
    """Resolve every conflict git left in the worktree at ``root`` with :func:`keep_both`: the
    scripted merge worker's rule for files that are lists of lines. Returns the files."""
    import subprocess

    out = subprocess.run(["git", "-C", str(root), "diff", "--name-only", "--diff-filter=U"],
                         capture_output=True, text=True, check=True).stdout.split()
    for name in out:
        path = root / name
        path.write_text(keep_both(path.read_text()))
    return out


def keep_both(text: str) -> str:
    """``text`` with each conflict (``<<<<<<<`` ... ``>>>>>>>``, diff3 style too) replaced by
    both sides' lines: ours, then those of theirs not already kept."""
    kept: list[str] = []
    side, ours, theirs = None, [], []
    for line in text.splitlines(keepends=True):
        if line.startswith("<<<<<<< "):
            side, ours, theirs = "ours", [], []
        elif line.startswith("||||||| ") and side == "ours":
            side = "base"
        elif line.rstrip("\n") == "=======" and side in ("ours", "base"):
            side = "theirs"
        elif line.startswith(">>>>>>> ") and side == "theirs":
            kept += ours + [t for t in theirs if t not in ours]
            side = None
        elif side == "ours":
            ours.append(line)
        elif side == "theirs":
            theirs.append(line)
        elif side is None:
            kept.append(line)
    return "".join(kept)


class TestStrategist:
    """Approves unless ``reject`` returns feedback."""

    __test__ = False

    def __init__(self, reject: Rule | None = None) -> None:
        self.reject = reject

    async def review(self, task: Task, result: WorkResult, ctx: Context) -> Verdict:
        feedback = self.reject(task, ctx) if self.reject else None
        ctx.log("strategist", feedback or "approved")
        return Verdict(approved=not feedback, feedback=feedback or "meets the acceptance criteria")


def random_dag(n: int, *, seed: int = 0, max_deps: int = 3, window: int = 20) -> list[TaskSpec]:
    """``n`` task specs; each depends on up to ``max_deps`` of the ``window`` tasks before it."""
    rng = random.Random(seed)
    profiles = [Profile.CODE, Profile.TEST, Profile.WRITE, Profile.RESEARCH]
    specs = []
    for i in range(n):
        lo = max(0, i - window)
        deps = rng.sample(range(lo, i), min(i - lo, rng.randint(0, max_deps))) if i else []
        specs.append(TaskSpec(title=f"task {i + 1}", key=f"k{i}", profile=rng.choice(profiles),
                              acceptance_criteria=[f"criterion of task {i + 1}"],
                              depends_on=[f"k{d}" for d in sorted(deps)]))
    return specs


DEMO_OBJECTIVE = ("Create a Python package `wordstats` with a `count_words(text)` function, "
                  "a command-line entry and pytest tests")


def _demo_plan(objective: str) -> list[TaskSpec]:
    T = TaskSpec
    return [
        T("Lay out the wordstats package", "pyproject.toml and wordstats/__init__.py",
          ["package imports"], Profile.CODE, key="layout", phase="build"),
        T("Implement count_words(text)", "split on whitespace, count words case-insensitively",
          ["count_words('a b a') == {'a': 2, 'b': 1}"], Profile.CODE, ["layout"], "build", key="core"),
        T("Command-line entry", "python -m wordstats FILE prints the counts",
          ["CLI prints counts"], Profile.CODE, ["core"], "build", key="cli"),
        T("Design the test plan", "which behaviours the tests must pin down",
          ["plan covers empty input"], Profile.TEST_ARCHITECT, ["layout"], "test", key="plan"),
        T("Write pytest tests", "tests for count_words and the CLI",
          ["tests cover empty input", "tests pass"], Profile.TEST, ["core", "plan"], "test", key="tests"),
        T("Write the README", "usage of the function and the CLI",
          ["README shows both"], Profile.WRITE, ["cli"], "docs", key="readme"),
        T("Integration check", "run the CLI on a sample file and the test-suite",
          ["all tests pass"], Profile.TEST, ["cli", "tests"], "test", key="check"),
    ]


def demo_agents(latency: float = 0.15) -> Agents:
    """The offline demo team: plans the wordstats objective; the tests task is rejected by
    QA once (so the demo shows a Phoenix retry) and approved the second time."""

    def reject(task: Task, ctx: Context) -> str | None:
        if task.title == "Write pytest tests" and ctx.attempt == 1:
            return "the tests do not cover empty input"
        return None

    return Agents(TestDirector(_demo_plan), TestWorker(latency=latency), TestStrategist(reject))
