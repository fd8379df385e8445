"""The run the fault harness kills: a repository and tasks that really change it.

Everything follows from ``Params`` (its seed above all), so the harness process and every
child process that drives the run derive the same repository, tasks and effects.

Tasks (titles ``<kind> k<i>``, unique):
- ``add``: writes ``added/k<i>.txt``;
- ``modify``: rewrites one of the initial files (each its own);
- ``delete``: deletes an initial file, or the file an earlier ``add`` task (a dependency)
  created;
- ``edit``: appends its line to the end of one of a few ``hot/*.txt`` files. Edits of one
  file cut from the same tip collide, so their merges conflict and the engine hands the
  conflict to a ``merge`` task, whose worker keeps both sides' lines.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

import agentorch_nb as ao
from agentorch_nb import Profile, TaskSpec, WorkResult
from agentorch_nb.testing import keep_both

MARKERS = ("<<<<<<< ", "=======", ">>>>>>> ", "||||||| ")
OBJECTIVE = "fault scenario"


@dataclass(frozen=True)
class Params:
    seed: int
    tasks: int = 36
    files: int = 300
    hot: int = 3
    workers: int = 4
    latency: tuple[float, float] = (0.02, 0.15)  # seconds a worker takes, drawn per attempt
    max_retries: int = 12  # every kill interrupts the attempts under way: each one counts

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Params:
        data = json.loads(text)
        data["latency"] = tuple(data["latency"])
        return cls(**data)

    def config(self) -> ao.Config:
        return ao.Config(max_concurrent_workers=self.workers, max_retries=self.max_retries,
                         worker_timeout=60, qa_timeout=60, plan_timeout=60)


@dataclass(frozen=True)
class Effect:
    kind: str  # add, modify, delete, edit
    path: str
    text: str = ""  # the file's content (add, modify) or the appended line (edit)


@dataclass
class Scenario:
    params: Params
    initial: dict[str, str]  # path -> content, hot files included
    hot: list[str]
    specs: list[TaskSpec]
    effects: dict[str, Effect] = field(default_factory=dict)  # task title -> effect

    def effect(self, title: str) -> Effect | None:
        return self.effects.get(title)


def make_scenario(p: Params) -> Scenario:
    rng = random.Random(p.seed)
    initial = {f"src/d{i // 25:02d}/f{i:04d}.txt": f"file {i} of scenario {p.seed}\n"
               for i in range(p.files)}
    hot = [f"hot/h{n}.txt" for n in range(p.hot)]
    for n, path in enumerate(hot):
        initial[path] = f"# hot file {n}: edit tasks append their lines below\n"
    spare = sorted(path for path in initial if path.startswith("src/"))
    rng.shuffle(spare)  # initial files for modify and delete tasks, each used once
    undeleted: list[int] = []  # add tasks whose file no task deletes yet
    sc = Scenario(p, initial, hot, [])
    for i in range(p.tasks):
        key = f"k{i}"
        window = list(range(max(0, i - 10), i))
        deps = set(rng.sample(window, min(len(window), rng.randint(0, 2))))
        kind = rng.choices(["edit", "add", "modify", "delete", "remove"], [30, 30, 15, 10, 15])[0]
        if kind == "remove" and not undeleted:
            kind = "add"
        if kind in ("modify", "delete") and not spare:
            kind = "edit"
        if kind == "edit":
            eff = Effect("edit", rng.choice(hot), f"{key}: the line of task {key}")
        elif kind == "add":
            eff = Effect("add", f"added/{key}.txt", f"added by task {key} of scenario {p.seed}\n")
            undeleted.append(i)
        elif kind == "modify":
            eff = Effect("modify", spare.pop(), f"rewritten by task {key}\n")
        elif kind == "delete":
            eff = Effect("delete", spare.pop())
        else:
            made = undeleted.pop(rng.randrange(len(undeleted)))
            eff = Effect("delete", f"added/k{made}.txt")
            deps.add(made)
        title = f"{eff.kind} {key}"
        sc.effects[title] = eff
        sc.specs.append(TaskSpec(title, f"{eff.kind} {eff.path}", [f"{eff.path} is done"],
                                 Profile.CODE, [f"k{d}" for d in sorted(deps)], key=key))
    return sc


def make_repo(sc: Scenario, path: Path) -> Path:
    """A git repository on ``main`` holding the scenario's initial files in one commit."""
    path.mkdir(parents=True)
    for rel, text in sc.initial.items():
        f = path / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    git = ["git", "-C", str(path)]
    subprocess.run(git + ["init", "-q", "-b", "main"], check=True)
    subprocess.run(git + ["config", "user.name", "faults"], check=True)
    subprocess.run(git + ["config", "user.email", "faults@localhost"], check=True)
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "initial files"], check=True)
    return path


def apply(effect: Effect, root: Path) -> None:
    """Do a task's work in its worktree. Idempotent: an attempt that continues a cut-off
    one finds part of it done already."""
    target = root / effect.path
    if effect.kind in ("add", "modify"):
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(effect.text)
    elif effect.kind == "delete":
        target.unlink(missing_ok=True)
    else:
        text = target.read_text()
        if effect.text not in text.splitlines():
            target.write_text(text + ("" if text.endswith("\n") or not text else "\n")
                              + effect.text + "\n")


def resolve_conflicts(root: Path) -> list[str]:
    """Remove every conflict block in the worktree, keeping both sides' lines (ours first,
    then theirs not already kept). Returns the files it resolved."""
    resolved = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in filenames:
            path = Path(dirpath) / name
            try:
                text = path.read_text()
            except (UnicodeDecodeError, OSError):
                continue
            if "<<<<<<< " not in text:
                continue
            path.write_text(keep_both(text))
            resolved.append(str(path.relative_to(root)))
    return resolved


class FaultWorker:
    """Does the scenario's tasks for real in the attempt's worktree, with a random latency
    split around the file writes, and journals every call (flushed to disk before any work)
    so the harness knows what ran even when the process is killed a moment later."""

    def __init__(self, sc: Scenario, journal: Path) -> None:
        self.sc = sc
        self.journal = journal
        self.rng = random.Random()  # timing only: kills land at random moments anyway

    async def run(self, task, ctx) -> WorkResult:
        with open(self.journal, "a") as f:
            f.write(f"{ctx.run_id}\t{task.id}\t{ctx.attempt}\t{task.title}\t{os.getpid()}\n")
            f.flush()
            os.fsync(f.fileno())
        lo, hi = self.sc.params.latency
        await asyncio.sleep(self.rng.uniform(lo, hi) / 2)
        root = await ctx.worktree()
        if task.profile == Profile.MERGE:
            done = f"resolved {', '.join(resolve_conflicts(root)) or 'nothing'}"
        else:
            effect = self.sc.effects[task.title]
            apply(effect, root)
            done = f"{effect.kind} {effect.path}"
        await asyncio.sleep(self.rng.uniform(lo, hi) / 2)
        return WorkResult(summary=done)


def read_journal(path: Path, offset: int = 0) -> tuple[list[dict], int]:
    """Complete journal lines from byte ``offset``; the offset after the last of them."""
    if not path.exists():
        return [], offset
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1
    rows = []
    for line in data[:end].decode().splitlines():
        run_id, tid, attempt, title, pid = line.split("\t")
        rows.append({"run_id": run_id, "task_id": tid, "attempt": int(attempt), "title": title,
                     "pid": int(pid)})
    return rows, offset + end
