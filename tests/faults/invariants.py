"""What must hold after every kill, read from git and from the DuckDB file (one short-lived
read-only connection: the next process must find the file free).

1. no completed task is redone (a task `complete` on disk before a kill does not run again)
   or lost (it stays complete; at the end every task is complete);
2. main holds exactly the approved work: files added, changed and deleted by completed tasks,
   nothing else deleted or added, no conflict markers, every approved edit line once;
3. the main checkout is clean, no MERGE_HEAD, ``git fsck`` clean (right after a kill a merge
   the engine recorded as under way may be half-done: its repair is checked afterwards);
4. every agentorch merge on main has its ``merges`` row, every run id a process printed is in
   ``runs`` (resumable);
5. replaying the events gives the tables; ``seq`` runs 1..N;
6. at the end, after ``orch.cleanup()``: no worktree, no ``agentorch/*`` branch.

Right after a kill the store may lag git by the batch in flight, so "approved" there means
"complete on disk", and work of tasks that had started (the journal says so) may already be
on main; at the end every bound is exact.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import duckdb

from agentorch_nb.store.replay import replay

from .scenario import MARKERS, Scenario, read_journal

NAMES = {
    1: "no completed task redone or lost",
    2: "main holds exactly the approved work",
    3: "clean tree, no MERGE_HEAD, fsck clean",
    4: "merges rows for merges on main; runs resumable",
    5: "event replay gives the tables; seq 1..N",
    6: "no worktree or agentorch/* branch left",
}
_TASK_COMMIT = re.compile(r"agentorch run (\S+), task (\S+), attempt (\d+)")


@dataclass
class Violation:
    invariant: int
    text: str
    where: str = ""  # which run and which kill, filled in by the harness

    def __str__(self) -> str:
        return f"[{self.invariant}] {self.where}: {self.text}" if self.where else \
            f"[{self.invariant}] {self.text}"


def git(repo: Path, *args: str, check: bool = True) -> str:
    out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if check and out.returncode:
        raise RuntimeError(f"git {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


def blob(text: str) -> str:
    data = text.encode()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def read_store(path: Path, run_id: str | None) -> dict:
    """Everything the checks need of one run, in one read-only connection closed at once."""
    if not path.exists():
        return {"runs": {}}
    con = duckdb.connect(str(path), read_only=True)
    try:
        def rows(sql: str, params=()) -> list[dict]:
            cur = con.execute(sql, list(params))
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r)) for r in cur.fetchall()]

        tables = {r["table_name"] for r in rows("select table_name from information_schema.tables")}
        if "runs" not in tables:
            return {"runs": {}}
        data = {"runs": {r["run_id"]: r for r in rows("select run_id, status from runs")}}
        if run_id in data["runs"]:
            key = [run_id]
            data["tasks"] = rows("select task_id, title, status, profile, created_by from tasks "
                                 "where run_id = ?", key)
            data["deps"] = rows("select task_id, depends_on from task_deps where run_id = ?", key)
            data["events"] = rows("select seq, task_id, kind, payload from events where run_id = ? "
                                  "order by seq", key)
            data["merges"] = rows("select task_id, attempt, status, result_sha from merges "
                                  "where run_id = ?", key)
        return data
    finally:
        con.close()


class Checker:
    """The invariants of one scenario run, checked after each kill and at the end."""

    def __init__(self, sc: Scenario, repo: Path, journal: Path) -> None:
        self.sc = sc
        self.repo = repo
        self.journal = journal
        self.store = repo / ".agentorch" / "agentorch.duckdb"
        self.printed: set[str] = set()  # run ids a process printed
        self.done_at_kill: set[tuple[str, str]] = set()  # (run, task) complete at a check
        self.offset = 0  # journal bytes already checked
        self.started_in: dict[str, set[str]] = {}  # run id -> titles whose worker was called
        self.started: set[str] = set()  # those of the run being checked
        self.new_lines: list[dict] = []
        self.resumed = False
        self.residue: set[str] = set()  # what git left when killed mid-command, at the last check
        self.evidence: set[str] = set()  # what the last check saw a kill interrupt

    def check(self, run_id: str | None, final: bool = False,
              resumed: bool = False) -> list[Violation]:
        """``resumed``: a process resumed the run since the last check (its repairs ran)."""
        self.resumed = resumed
        out: list[Violation] = []
        try:
            data = read_store(self.store, run_id)
        except duckdb.Error as exc:
            return [Violation(5, f"the store cannot be read: {exc}")] + self._clean(final)
        for rid in sorted(self.printed - set(data["runs"])):
            out.append(Violation(4, f"run {rid} was printed by its process but is not in the "
                                    "runs table: it cannot be resumed"))
        self._read_journal()
        self.started = self.started_in.get(run_id, set()) if run_id in data["runs"] else set()
        if run_id not in data["runs"]:
            return out + self._git_checks(set(), final, [])
        tasks = {t["task_id"]: t for t in data["tasks"]}
        complete = {tid for tid, t in tasks.items() if t["status"] == "complete"}
        out += self._work_kept(run_id, tasks, complete, final)
        done_titles = {tasks[tid]["title"] for tid in complete}
        out += self._git_checks(done_titles, final, [])
        out += self._merge_rows(run_id, data, tasks, complete, final)
        out += self._replay(data, run_id)
        self.done_at_kill |= {(run_id, tid) for tid in complete}
        return out

    def _read_journal(self) -> None:
        """New journal lines: which tasks ran (and whether they had been complete already)."""
        lines, self.offset = read_journal(self.journal, self.offset)
        self.new_lines = lines
        for line in lines:
            self.started_in.setdefault(line["run_id"], set()).add(line["title"])

    # ------------------------------------------------------------------ 1
    def _work_kept(self, run_id, tasks, complete, final) -> list[Violation]:
        out = []
        for line in self.new_lines:
            if (line["run_id"], line["task_id"]) in self.done_at_kill:
                out.append(Violation(1, f"task {line['task_id']} ({line['title']}) was complete on "
                                        f"disk before a kill and ran again (attempt "
                                        f"{line['attempt']}, process {line['pid']})"))
        for tid in sorted(t for r, t in self.done_at_kill if r == run_id and t not in complete):
            status = tasks.get(tid, {}).get("status", "missing")
            out.append(Violation(1, f"task {tid} was complete on disk before a kill and is now {status}"))
        titles: dict[str, list[str]] = {}
        for tid, t in tasks.items():
            titles.setdefault(t["title"], []).append(tid)
        for title, tids in titles.items():
            if len(tids) > 1:
                out.append(Violation(1, f"task {title!r} exists {len(tids)} times: {tids}"))
        if final:
            for spec in self.sc.specs:
                if spec.title not in titles:
                    out.append(Violation(1, f"task {spec.title!r} of the plan is missing"))
            for tid, t in sorted(tasks.items()):
                if t["status"] != "complete":
                    out.append(Violation(1, f"task {tid} ({t['title']}) ended {t['status']}"))
        return out

    # ------------------------------------------------------------------ 2 and 3
    def _git_checks(self, done: set[str], final: bool, out: list[Violation]) -> list[Violation]:
        return out + self._main_tree(done, final) + self._clean(final)

    def _main_tree(self, done: set[str], final: bool) -> list[Violation]:
        out = []
        tree = {}
        for line in git(self.repo, "ls-tree", "-r", "main").splitlines():
            meta, path = line.split("\t", 1)
            tree[path] = meta.split()[2]
        allowed_any = self.started | done
        chains: dict[str, list[tuple[str, object]]] = {}
        for spec in self.sc.specs:
            eff = self.sc.effects[spec.title]
            if eff.kind != "edit":
                chains.setdefault(eff.path, []).append((spec.title, eff))
        for path in sorted(set(self.sc.initial) - set(self.sc.hot) | set(chains)):
            state = blob(self.sc.initial[path]) if path in self.sc.initial else None
            allowed, last_done = {state}, -1
            chain = chains.get(path, [])
            for i, (title, _) in enumerate(chain):
                if title in done:
                    last_done = i
            if last_done >= 0:
                eff = chain[last_done][1]
                allowed = {None if eff.kind == "delete" else blob(eff.text)}
            if not final:  # later steps already under way may be on main before the store says so
                allowed |= {None if eff.kind == "delete" else blob(eff.text)
                            for title, eff in chain[last_done + 1:] if title in allowed_any}
            actual = tree.get(path)
            if actual not in allowed:
                what = "missing" if actual is None else "present" if not allowed - {None} \
                    else f"different ({actual[:10]})"
                by = [t for t, _ in chain]
                out.append(Violation(2, f"{path} on main is {what}; tasks touching it: "
                                        f"{by or 'none'}, complete: {[t for t in by if t in done]}"))
        for path in sorted(set(tree) - set(self.sc.initial) - set(chains)):
            out.append(Violation(2, f"{path} is on main but no task adds it"))
        for n, path in enumerate(self.sc.hot):
            out += self._hot_file(path, tree, done, allowed_any, final)
        return out

    def _hot_file(self, path, tree, done, allowed_any, final) -> list[Violation]:
        if path not in tree:
            return [Violation(2, f"{path} is missing from main")]
        lines = git(self.repo, "show", f"main:{path}").splitlines()
        out = []
        if any(line.startswith(MARKERS) for line in lines):
            out.append(Violation(2, f"{path} on main holds conflict markers"))
        header = self.sc.initial[path].rstrip("\n")
        if not lines or lines[0] != header:
            out.append(Violation(2, f"{path} on main lost its first line"))
        body = [line for line in lines[1:] if not line.startswith(MARKERS)]
        for line in sorted({x for x in body if body.count(x) > 1}):
            out.append(Violation(2, f"{path} on main holds {line!r} {body.count(line)} times"))
        edits = {title: eff.text for title, eff in self.sc.effects.items()
                 if eff.kind == "edit" and eff.path == path}
        for title, text in sorted(edits.items()):
            if title in done and text not in body:
                out.append(Violation(2, f"{path} on main lacks the line of completed task {title!r}"))
        possible = {text for title, text in edits.items()
                    if title in done or (not final and title in allowed_any)}
        for line in sorted(set(body) - possible):
            out.append(Violation(2, f"{path} on main holds {line!r}, which no approved task wrote"))
        return out

    def _clean(self, final: bool) -> list[Violation]:
        """Right after a kill, what git itself leaves when killed mid-command (a merge the
        engine's marker says was under way, the bookkeeping of a worktree being added) is
        residue for the next resume to repair: a violation if it is still there after a resume,
        or at the end. Anything else is a violation at once."""
        out, residue = [], {}
        git_dir = self.repo / ".git"
        marker = git_dir / "agentorch-merging"
        merging = marker.read_text().strip() if marker.exists() and not final else None
        self.evidence = {what for what, seen in [
            ("a merge into main (marker)", marker.exists()),
            ("a git command (lock file left)", any(git_dir.glob("*.lock")) or any(
                git_dir.glob("worktrees/*/*.lock")) or any(git_dir.glob("refs/**/*.lock"))),
            ("git worktree add (initializing)", any(
                "initializing" in p.read_text() for p in git_dir.glob("worktrees/*/locked"))),
        ] if seen}
        dirty = git(self.repo, "status", "--porcelain", check=False).splitlines()
        if dirty and merging:
            residue[f"checkout dirty during the merge {merging}"] = f"main's checkout is dirty: {dirty[:5]}"
        elif dirty:
            out.append(Violation(3, f"main's checkout is dirty: {dirty[:5]}"))
        if (git_dir / "MERGE_HEAD").exists() and merging:
            residue[f"MERGE_HEAD during the merge {merging}"] = "MERGE_HEAD is left in the main checkout"
        elif (git_dir / "MERGE_HEAD").exists():
            out.append(Violation(3, "MERGE_HEAD is left in the main checkout"))
        fsck = subprocess.run(["git", "-C", str(self.repo), "fsck", "--no-progress", "--no-dangling"],
                              capture_output=True, text=True)
        problems = [line for line in (fsck.stdout + fsck.stderr).splitlines() if line.strip()]
        # git's bookkeeping of a worktree being added (.git/worktrees/<name>/...)
        half_made = [p for p in problems if "worktrees/" in p and not final]
        for p in half_made:
            residue[p] = f"git fsck: {p}"
        others = [p for p in problems if p not in half_made]
        if others or (fsck.returncode and not half_made):
            out.append(Violation(3, f"git fsck (exit {fsck.returncode}): {others[:5]}"))
        if self.resumed:
            for key in sorted(residue.keys() & self.residue):
                out.append(Violation(3, f"{residue[key]}: left by a kill, and still there after "
                                        "the resume that followed"))
        self.residue = set(residue)
        if final:
            if marker.exists():
                out.append(Violation(3, "a merge marker is left after the run ended"))
            locks = [str(p.relative_to(git_dir)) for p in git_dir.rglob("*.lock")
                     if p.name != "agentorch-merge.lock" and not _held_open(p)]
            if locks:
                out.append(Violation(3, f"git lock files no process holds are left after the "
                                        f"run ended: {locks[:5]}"))
        return out

    # ------------------------------------------------------------------ 4
    def _merge_rows(self, run_id, data, tasks, complete, final) -> list[Violation]:
        out = []
        on_main = set(git(self.repo, "rev-list", "main").split())
        rows: dict[str, list[dict]] = {}
        for r in data["merges"]:
            rows.setdefault(r["task_id"], []).append(r)
        merge_tasks: dict[str, list[str]] = {}
        for tid, t in tasks.items():
            if (t["created_by"] or "").startswith("merge:"):
                merge_tasks.setdefault(t["created_by"].split(":", 1)[1], []).append(tid)

        def integrated(tid: str) -> bool:
            mine = rows.get(tid, [])
            if any(r["status"] != "conflict" and r["result_sha"] in on_main for r in mine):
                return True
            return any(r["status"] == "conflict" for r in mine) and any(
                integrated(m) for m in merge_tasks.get(tid, []))

        for tid in sorted(complete):
            if not integrated(tid):
                out.append(Violation(4, f"task {tid} ({tasks[tid]['title']}) is complete, but no "
                                        f"merges row has its work on main: {rows.get(tid, [])}"))
        if final:
            log = git(self.repo, "log", "main", "--format=%H%n%B%x00")
            for entry in log.split("\0"):
                m = _TASK_COMMIT.search(entry)
                if not m:
                    continue
                sha = entry.strip().split("\n", 1)[0]
                if m.group(1) != run_id and m.group(1) not in data["runs"]:
                    out.append(Violation(4, f"commit {sha[:10]} on main is work of run "
                                            f"{m.group(1)}, which the store does not hold"))
                elif m.group(1) == run_id and m.group(2) not in complete:
                    out.append(Violation(4, f"commit {sha[:10]} on main is work of task "
                                            f"{m.group(2)}, which is not complete"))
        return out

    # ------------------------------------------------------------------ 5
    def _replay(self, data, run_id) -> list[Violation]:
        out = []
        seqs = [e["seq"] for e in data["events"]]
        if seqs != list(range(1, len(seqs) + 1)):
            gaps = [(a, b) for a, b in zip([0, *seqs], seqs) if b != a + 1]
            out.append(Violation(5, f"events' seq of run {run_id} is not 1..{len(seqs)}: "
                                    f"breaks at (previous, next) {gaps[:5]}"))
        state = replay(data["events"])
        table = {t["task_id"]: t["status"] for t in data["tasks"]}
        replayed = {tid: s.value for tid, s in state.status.items()}
        for tid in sorted(set(table) | set(replayed)):
            if table.get(tid) != replayed.get(tid):
                out.append(Violation(5, f"task {tid}: the tasks table says {table.get(tid)}, "
                                        f"replaying the events gives {replayed.get(tid)}"))
        deps = {(d["task_id"], d["depends_on"]) for d in data["deps"]}
        if deps != state.deps:
            out.append(Violation(5, f"task_deps and the events disagree: only in the table "
                                    f"{sorted(deps - state.deps)[:5]}, only in the events "
                                    f"{sorted(state.deps - deps)[:5]}"))
        status = data["runs"][run_id]["status"]
        if state.run_status is not None and state.run_status != status:
            out.append(Violation(5, f"the runs table says {status}, replaying the events gives "
                                    f"{state.run_status}"))
        return out

    # ------------------------------------------------------------------ 6
    def check_cleaned(self) -> list[Violation]:
        out = []
        worktrees = [line[9:] for line in git(self.repo, "worktree", "list", "--porcelain").splitlines()
                     if line.startswith("worktree ")]
        if len(worktrees) != 1:
            out.append(Violation(6, f"worktrees left after cleanup: {worktrees[1:6]}"))
        branches = git(self.repo, "branch", "--list", "agentorch/*", "--format=%(refname:short)").split()
        if branches:
            out.append(Violation(6, f"{len(branches)} agentorch/* branches left after cleanup: "
                                    f"{branches[:5]}"))
        left = self.repo / ".worktrees"
        dirs = [str(p.relative_to(self.repo)) for p in left.glob("*/*")] if left.exists() else []
        if dirs:
            out.append(Violation(6, f"worktree directories left on disk after cleanup: {dirs[:5]}"))
        return out


def _held_open(path: Path) -> bool:
    """Whether a process has ``path`` open: a running git (an auto-maintenance) holds its lock."""
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            if any(os.readlink(fd) == str(path) for fd in fd_dir.iterdir()):
                return True
        except OSError:
            continue
    return False
