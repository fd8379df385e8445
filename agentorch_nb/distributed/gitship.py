"""The repository between the engine and the nodes, as git bundles.

A node keeps one clone per repository (``NodeRepo``), fed by bundles holding only what it
lacks: the engine asks which commits the clone's refs point at, and bundles the target's
tip (and, for a merge task, the commit it integrates) minus everything reachable from
those. An attempt's approved commit comes back the same way, minus what the engine sent,
and is fetched into the user's repository onto the attempt's branch; git checks that the
bundle's prerequisites are present and that the branch then names the commit the node
reported, before the engine trusts it.

Nothing here assumes a filesystem shared with the engine: bundles travel as bytes through
Ray's object store. Every function blocks on git and is called in a thread.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

from ..exceptions import WorkspaceError


class ShipError(WorkspaceError):
    """A bundle could not be made, applied or verified."""


# A delta search between big blobs (binaries, data) costs far more than it saves in a bundle
# sent once over a cluster's network: 28 s instead of 5 s for 200 MB of data files.
BUNDLE_CONFIG = ("-c", "core.bigFileThreshold=1m")


def git(cwd: str | os.PathLike, *args: str, input: bytes | None = None) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, input=input, capture_output=True,
                          env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    if done.returncode != 0:
        raise ShipError(f"git {' '.join(args[:3])} failed in {cwd}: "
                        f"{done.stderr.decode(errors='replace').strip()}")
    return done.stdout.decode(errors="replace").strip()


def repo_key(root: Path) -> str:
    """Which repository a clone on a node mirrors: the engine's host and path."""
    return hashlib.sha1(f"{socket.gethostname()}:{root}".encode()).hexdigest()[:16]


# ------------------------------------------------------------------ engine side
def present(root: Path, shas: Iterable[str]) -> list[str]:
    """Those of ``shas`` that name commits in the repository at ``root``."""
    wanted = sorted(set(shas))
    if not wanted:
        return []
    out = git(root, "cat-file", "--batch-check", input="\n".join(wanted).encode() + b"\n")
    return [line.split()[0] for line in out.splitlines() if line.split()[1:2] == ["commit"]]


def ref_for(root: Path, sha: str) -> str:
    """A ref pointing at ``sha`` (a bundle carries refs, not bare commits)."""
    refs = git(root, "for-each-ref", "--points-at", sha, "--format=%(refname)").split()
    if not refs:
        raise ShipError(f"no branch of {root} points at {sha[:10]}: it cannot be sent to a node")
    return refs[0]


def make_bundle(root: Path, refs: list[str], exclude: Iterable[str]) -> bytes:
    """A bundle of ``refs`` without what ``exclude`` (commits, or refs) already reaches. An
    excluded commit this repository lacks is left out of the exclusions (asked only then:
    it costs a git process)."""
    exclude = sorted(set(exclude))
    with tempfile.TemporaryDirectory(prefix="agentorch-bundle-") as tmp:
        path = Path(tmp) / "out.bundle"
        try:
            git(root, *BUNDLE_CONFIG, "bundle", "create", "-q", str(path), *refs,
                *(f"^{x}" for x in exclude))
        except ShipError:
            if not exclude:
                raise
            git(root, *BUNDLE_CONFIG, "bundle", "create", "-q", str(path), *refs,
                *(f"^{sha}" for sha in present(root, exclude)))
        return path.read_bytes()


def fetch_commit(root: Path, data: bytes, branch: str, sha: str) -> None:
    """Put an attempt's commit ``sha`` from a node's bundle on ``branch`` of the user's
    repository, and check that git shows it there."""
    with tempfile.TemporaryDirectory(prefix="agentorch-bundle-") as tmp:
        path = Path(tmp) / "in.bundle"
        path.write_bytes(data)
        git(root, "fetch", "-q", "--no-tags", str(path), f"+refs/heads/{branch}:refs/heads/{branch}")
    got = git(root, "rev-parse", "--verify", "-q", f"refs/heads/{branch}^{{commit}}")
    if got != sha:
        raise ShipError(f"the node's bundle put {got[:10]} on {branch}, not {sha[:10]}")


# -------------------------------------------------------------------- node side
class NodeRepo:
    """A node's clone of one repository: objects and refs only (its own checkout is never
    made); attempts' worktrees hang off it. Its ``target`` branch follows the engine's."""

    def __init__(self, path: Path, target: str) -> None:
        self.path, self.target = path, target
        self.lock = threading.Lock()  # bundles in and worktrees made or removed take turns
        self._workspace = None
        if not (path / ".git").exists():
            path.mkdir(parents=True, exist_ok=True)
            git(path, "init", "-q", "-b", target)

    def heads(self) -> list[str]:
        """The commits the clone's refs point at."""
        out = git(self.path, "for-each-ref", "--format=%(objectname)")
        return sorted(set(out.split()))

    def receive(self, data: bytes | None, updates: dict[str, str]) -> None:
        """Add a bundle's objects, then point ``updates``' refs at their commits."""
        with self.lock:
            if data:
                with tempfile.TemporaryDirectory(prefix="agentorch-bundle-") as tmp:
                    path = Path(tmp) / "in.bundle"
                    path.write_bytes(data)
                    git(self.path, "bundle", "unbundle", str(path))
            commands = "".join(f"update {ref} {sha}\n" for ref, sha in updates.items())
            git(self.path, "update-ref", "--stdin", input=commands.encode())

    def workspace(self):
        from ..workspace import Workspace

        if self._workspace is None:
            self._workspace = Workspace(self.path, self.target)
        return self._workspace

    def bundle_back(self, branch: str, exclude: Iterable[str]) -> bytes:
        """An attempt's branch, without what the engine has (``exclude``, and the target
        branch, which came from the engine)."""
        return make_bundle(self.path, [f"refs/heads/{branch}"],
                           [*exclude, f"refs/heads/{self.target}"])
