"""``agentorch doctor`` / :func:`doctor`: what a run needs, checked, each problem with its fix.

Rows: git; the workspace (a repository with a commit, on a branch, no uncommitted changes);
the store (path, size, schema version, whether another process holds it); each model the
run's roles use and its keys (:mod:`agentorch_nb.llm.preflight`); the Jupyter server and lab
extensions; Chromium, which only the browser tests need. ``error`` rows stop a run from
starting; ``warn`` rows only cost a feature.

    import agentorch_nb as ao
    ao.doctor("path/to/repo", ao.Config(models=ao.Models(worker_model="openai/gpt-4o-mini")))
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import textwrap
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from .config import Config
from .exceptions import AgentorchError, WorkspaceError
from .llm.preflight import check_models
from .store import SCHEMA_VERSION, default_path
from .store.sharing import lock_error, touch

STORE_WAIT = 3.0  # seconds to wait for a holder to let go (an engine yields within 2 s)
TEXT_WIDTH = 72  # the found and fix column wraps here


class Level(StrEnum):
    OK = "ok"
    WARN = "warn"  # a feature is missing; runs work
    ERROR = "error"  # a run cannot start, or cannot call its models


@dataclass
class Check:
    name: str
    level: Level
    detail: str
    fix: str = ""


@dataclass
class Checkup:
    """Every check, in order. ``ok``: no ``error`` row. ``str()`` is the table."""

    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def problems(self) -> list[Check]:
        return [c for c in self.checks if c.level == Level.ERROR]

    def check(self, name: str) -> Check:
        """The row whose name is or starts with ``name`` (``"model"``: the first model's)."""
        return next(c for c in self.checks if c.name == name or c.name.startswith(name + " "))

    def __str__(self) -> str:
        return table(self.checks)

    def __repr__(self) -> str:
        if self.ok:
            return "<Checkup: ready>"
        n, names = len(self.problems), ", ".join(c.name for c in self.problems)
        return f"<Checkup: {n} problem{'s' if n > 1 else ''}: {names}>"


def doctor(workspace: str | os.PathLike = ".", config: Config | None = None, *,
           store: str | os.PathLike | None = None, quiet: bool = False) -> Checkup:
    """Check what a run on ``workspace`` with ``config`` needs; print the table (unless
    ``quiet``) and return it."""
    config = config or Config()
    checks = [git_check()]
    root, found_ws = workspace_check(Path(workspace))
    checks.append(found_ws)
    checks.append(store_check(Path(store) if store else default_path(root)))
    checks += model_checks(config, root)
    checks += jupyter_checks()
    checks.append(chromium_check())
    found = Checkup(checks)
    if not quiet:
        print(found)
    return found


def table(checks: list[Check], width: int = TEXT_WIDTH) -> str:
    """One row per check (check, status, what was found); a row that is not ok carries its
    fix on the lines below it, in the last column."""
    w0 = max(len("check"), *(len(c.name) for c in checks))
    w1 = max(len("status"), *(len(c.level) for c in checks))
    pad = " " * (w0 + w1 + 4)
    lines = [f"{'check':<{w0}}  {'status':<{w1}}  found"]
    for c in checks:
        found = wrap(c.detail, width) or [""]
        lines.append(f"{c.name:<{w0}}  {c.level:<{w1}}  {found[0]}")
        lines += [pad + more for more in found[1:]]
        if c.fix:
            lines += [pad + part for part in wrap("fix: " + c.fix, width, "     ")]
    return "\n".join(lines)


def wrap(text: str, width: int, indent: str = "") -> list[str]:
    # Paths and commands stay whole on one line, however long.
    return textwrap.wrap(text, width, subsequent_indent=indent, break_long_words=False,
                         break_on_hyphens=False)


# ------------------------------------------------------------------ the checks
def git_check() -> Check:
    try:
        out = subprocess.run(["git", "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check("git", Level.ERROR, f"git cannot be run: {exc}",
                     "install git 2.30 or newer (apt-get install git) and put it on PATH")
    return Check("git", Level.OK, out.stdout.strip() or out.stderr.strip())


def workspace_check(path: Path) -> tuple[Path, Check]:
    """(the repository's root, or ``path`` when it is none; its check)."""
    from .workspace import Workspace

    try:
        ws = Workspace(path)
    except WorkspaceError as exc:
        found, _, fix = str(exc).partition(": ")
        return path.expanduser().resolve(), Check("workspace", Level.ERROR, found, fix)
    dirty = ws.dirty_files()
    if dirty:
        shown = ", ".join(dirty[:5]) + (" ..." if len(dirty) > 5 else "")
        return ws.root, Check("workspace", Level.ERROR,
                              f"{ws.root} on {ws.target}: uncommitted changes ({shown})",
                              "commit or stash them: a run starts from a clean tree, and never "
                              "touches your own changes")
    return ws.root, Check("workspace", Level.OK, f"{ws.root} on {ws.target}, clean")


def store_check(path: Path) -> Check:
    """Size and schema version of the store file, and whether this process can write it now."""
    import duckdb

    path = path.expanduser().resolve()
    if not path.exists():
        return Check("store", Level.OK, f"{path}: not created yet (the first run creates it)")
    size = sum(p.stat().st_size for p in (path, Path(f"{path}.wal")) if p.exists())
    where = f"{path} ({size / 1e6:.1f} MB)"
    deadline = time.monotonic() + STORE_WAIT
    while True:
        try:
            con = duckdb.connect(str(path))  # read-write: what a run needs
            break
        except duckdb.Error as exc:
            if not lock_error(exc):
                return Check("store", Level.ERROR, f"{where}: cannot be opened: {exc}",
                             "point store= at an agentorch store, or at a new path")
            if time.monotonic() > deadline:
                return Check("store", Level.ERROR, f"{where}: held by {holder(str(exc))}",
                             "close that process's DuckDB session (ao.sql() lets go after each "
                             "query); runs wait for the file up to Config.lock_timeout")
            touch(f"{path}.waiting")  # asks an agentorch holder to let go soon
            time.sleep(0.1)
    try:
        version = con.execute("select max(version) from schema_version").fetchone()[0]
    except duckdb.Error:
        return Check("store", Level.ERROR, f"{where}: a DuckDB file, but not an agentorch store",
                     "point store= at an agentorch store, or at a path that does not exist yet")
    finally:
        con.close()
    found = f"{where}, schema {version}, free"
    if version > SCHEMA_VERSION:
        return Check("store", Level.ERROR, f"{found}: newer than this agentorch_nb ({SCHEMA_VERSION})",
                     "upgrade agentorch_nb")
    if version < SCHEMA_VERSION:
        found += f" (migrated to {SCHEMA_VERSION} when a run opens it)"
    return Check("store", Level.OK, found)


def holder(error: str) -> str:
    """``process 1234 (python3)`` from DuckDB's lock error, or ``another process``."""
    import re

    pid = re.search(r"PID (\d+)", error)
    if not pid:
        return "another process"
    name = ""
    with contextlib.suppress(OSError):
        name = f" ({Path(f'/proc/{pid.group(1)}/comm').read_text().strip()})"
    return f"process {pid.group(1)}{name}"


def model_checks(config: Config, workspace: Path) -> list[Check]:
    try:
        found = check_models(config.models, workspace=workspace if workspace.is_dir() else None,
                             guardian=config.enable_guardian)
    except AgentorchError as exc:
        return [Check("models", Level.ERROR, str(exc), "fix Config.models")]
    return [Check(f"model {c.model}", Level.OK if c.ok else Level.ERROR,
                  f"{c.used_by}: {c.detail}", c.fix) for c in found]


def jupyter_checks() -> list[Check]:
    """The server extension (``agentorch_nb``, the REST API) and the lab extension
    (``agentorch-nb``, the sidebar), as Jupyter's own configuration says, read in-process."""
    from jupyter_core.paths import jupyter_config_path, jupyter_path
    from jupyter_server.extension.config import ExtensionConfigManager

    server = ExtensionConfigManager(read_config_path=jupyter_config_path())
    checks = [Check("jupyter server extension", Level.OK, "agentorch_nb enabled (REST API)")
              if server.enabled("agentorch_nb") else
              Check("jupyter server extension", Level.WARN, "agentorch_nb is not enabled: no REST "
                    "API, sidebar or server-started runs",
                    "jupyter server extension enable agentorch_nb")]
    from jupyterlab_server.config import get_page_config

    page = get_page_config(jupyter_path("labextensions"))
    names = {e["name"] for e in page.get("federated_extensions", [])}
    disabled = [k for k, v in (page.get("disabledExtensions") or {}).items()
                if v and k.split(":")[0] == "agentorch-nb"]
    if "agentorch-nb" not in names:
        checks.append(Check("jupyter lab extension", Level.WARN, "agentorch-nb is not installed: "
                            "no runs sidebar in JupyterLab", "pip install agentorch_nb (the wheel "
                            "carries it); from a clone, pip install . with node 20 on PATH"))
    elif disabled:
        checks.append(Check("jupyter lab extension", Level.WARN, f"agentorch-nb is disabled "
                            f"({', '.join(disabled)})", "jupyter labextension enable agentorch-nb"))
    else:
        checks.append(Check("jupyter lab extension", Level.OK, "agentorch-nb enabled (sidebar)"))
    return checks


def chromium_check() -> Check:
    """Where the browser tests look for Chromium (tests/browser/conftest.py)."""
    path = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
    if os.path.isfile(path) and os.access(path, os.X_OK):
        return Check("chromium", Level.OK, f"{path} (for the browser tests)")
    return Check("chromium", Level.WARN, f"no Chromium at {path}: only the browser tests "
                 "(tests/browser) need it", "apt-get install chromium, or set CHROMIUM_PATH")
