"""Crash safety (issue 10): SIGKILL the engine, alone or with its git, at random moments, and
resume; a killed engine must never destroy work, and every crash must be resumable."""

import subprocess

import pytest

from tests.faults.harness import run_harness, summary
from tests.faults.invariants import Checker
from agentorch_nb.testing import keep_both
from tests.faults.scenario import Params, make_repo, make_scenario


@pytest.mark.slow
def test_twenty_kills_destroy_no_work_and_every_crash_resumes(tmp_path):
    fig = run_harness(seed=7, kills=20, jobs=2, workdir=tmp_path, params={"tasks": 24})
    assert len(fig.kills) >= 20
    assert all(r.completed for r in fig.reports), summary(fig)
    assert not fig.violations, summary(fig)


def test_the_checks_see_a_deleted_file_and_a_merge_left_half_done(tmp_path):
    """The harness is only worth its figures if it notices what a user would."""
    sc = make_scenario(Params(seed=3, tasks=6, files=20))
    repo = make_repo(sc, tmp_path / "repo")
    checker = Checker(sc, repo, tmp_path / "journal")
    assert checker.check(None) == []

    git = ["git", "-C", str(repo)]
    victim = sorted(p for p in sc.initial if p.startswith("src/"))[0]
    subprocess.run(git + ["rm", "-q", victim], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "lose a file"], check=True)
    (repo / ".git" / "MERGE_HEAD").write_text(subprocess.run(
        git + ["rev-parse", "HEAD"], capture_output=True, text=True).stdout)
    found = {v.invariant: v.text for v in checker.check(None)}
    assert f"{victim} on main is missing" in found[2]
    assert "MERGE_HEAD" in found[3]


def test_a_merge_worker_keeps_both_sides():
    text = "head\n<<<<<<< HEAD\nours\n=======\ntheirs\n>>>>>>> main\ntail\n"
    assert keep_both(text) == "head\nours\ntheirs\ntail\n"
