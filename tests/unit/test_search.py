"""search_codebase is git grep over the worktree: tracked and untracked files, never ignored,
binary or symlinked ones; the same answers in a plain directory. Real repositories, real
processes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from agentorch_nb.model import Profile
from agentorch_nb.tools import ToolEnv, call_tool

from tests.conftest import make_repo


async def search(root: Path, **arguments):
    return await call_tool("search_codebase", arguments, env=ToolEnv(root=root, profile=Profile.CODE))


async def test_search_sees_what_git_would_commit_and_nothing_else(tmp_path):
    root = make_repo(tmp_path / "wt")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("needle outside\n")
    (root / "src" / "deep").mkdir(parents=True)
    (root / "src" / "deep" / "a.py").write_text("x = 1  # needle in a tracked file\n")
    (root / "notes.md").write_text("a needle not yet added\n")
    (root / ".gitignore").write_text("build/\n")
    (root / "build").mkdir()
    (root / "build" / "out.py").write_text("needle in a build product\n")
    (root / "node_modules" / "pkg").mkdir(parents=True)
    (root / "node_modules" / "pkg" / "i.js").write_text("needle in a dependency\n")
    os.symlink(outside / "secret.txt", root / "link.txt")
    os.symlink(outside, root / "linked_dir")
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@localhost"]
    subprocess.run(git + ["add", "src", ".gitignore"], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "src"], check=True)

    found = await search(root, pattern="needle")
    assert found.ok and found.content.splitlines() == [
        "notes.md:1: a needle not yet added", "src/deep/a.py:1: x = 1  # needle in a tracked file"]
    only_py = await search(root, pattern="needle", glob="*.py")
    assert only_py.content == "src/deep/a.py:1: x = 1  # needle in a tracked file"
    inside = await search(root, pattern="needle", path="node_modules")  # asked for by name
    assert inside.content == "node_modules/pkg/i.js:1: needle in a dependency"
    dashed = await search(root, pattern="-n needle")  # a pattern is never taken for an option
    assert dashed.ok and dashed.content == "(no matches)"
    numbered = await search(root, pattern=r"x = \d+\s", regex=True)
    assert numbered.content.startswith("src/deep/a.py:1:")


async def test_search_in_a_plain_directory(tmp_path):
    root = tmp_path / "plain"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "one.txt").write_text("first line\n" + "long needle " * 40 + "\n")
    (root / "two.txt").write_text("NEEDLE\n")
    found = await search(root, pattern="needle", case_sensitive=False)
    lines = found.content.splitlines()
    assert [line.split(":")[0] for line in lines] == ["sub/one.txt", "two.txt"]
    assert lines[0].startswith("sub/one.txt:2: long needle") and lines[0].endswith(" [...]")
    assert len(lines[0]) < 340  # a long line is cut, not shown whole
