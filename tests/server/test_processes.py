"""The server steering and starting runs in other processes: a resolution posted over REST
and applied by the engine of another process, and a run started as a papermill batch job."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from tests.integration import child_run

from .test_api import until

pytestmark = pytest.mark.slow


async def test_a_resolution_over_rest_is_applied_by_an_engine_in_another_process(
        api, workspace, tmp_path):
    journal = tmp_path / "journal"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(Path(child_run.__file__)), "hitl", str(workspace), str(journal),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        run_id = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode().strip()

        async def waiting():
            code, queue = await api("GET", "interrupts")
            return [i for i in queue["interrupts"] if i["run_id"] == run_id]
        (item,) = await until(waiting, timeout=60, every=0.2)
        assert item["task_id"] == "t1"
        code, out = await api("POST", "runs", run_id, "tasks", "t1", "resolve",
                              body={"action": "retry", "guidance": "use the first design"})
        assert (code, out) == (200, {"status": "applied"})  # the engine answered: applied
        code, out = await api("POST", "runs", run_id, "tasks", "t1", "resolve",
                              body={"action": "retry"})
        assert code == 409  # no longer waiting
        final = (await asyncio.wait_for(proc.stdout.readline(), 120)).decode().strip()
        assert final == "completed"
        code, detail = await api("GET", "runs", run_id)
        assert detail["run"]["status"] == "completed" and not detail["run"]["live"]
        assert detail["tasks"][0]["guidance"] == "use the first design"
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def test_a_run_started_over_rest_runs_as_a_batch_job_to_its_end(api, workspace, jp_root_dir):
    code, out = await api("POST", "runs", body={
        "objective": "Create a Python package `wordstats` with a `count_words(text)` function",
        "workspace": "proj", "model": "demo", "workers": 3})
    assert code == 202, out
    job = out["job"]
    assert job["status"] == "running" and job["notebook"].startswith("proj-runs/")

    async def listed():
        code, page = await api("GET", "runs")
        return [r for r in page["runs"] if r["id"] == job["run_id"]]
    (run,) = await until(listed, timeout=120, every=0.5)  # the run is known while it goes
    assert run["job"] == job["id"]

    async def ended():
        code, now = await api("GET", "jobs", job["id"])
        return now if now["status"] != "running" else None
    done = await until(ended, timeout=400, every=1.0)
    assert done["status"] == "completed", done["error"]
    code, detail = await api("GET", "runs", job["run_id"])
    assert detail["run"]["status"] == "completed"
    assert detail["run"]["notebook"] == job["notebook"]
    executed = json.loads((Path(jp_root_dir) / job["notebook"]).read_text())
    assert executed["metadata"]["papermill"]["parameters"]["run_id"] == job["run_id"]
    assert (workspace / "wordstats").is_dir()  # merged into main

    # A finished run restarted over REST: a job that resumes it (and finds nothing left to do).
    code, out = await api("POST", "runs", job["run_id"], "restart")
    assert code == 202, out
    again = out["job"]
    assert again["run_id"] == job["run_id"] and again["id"] != job["id"]
    job = again
    done = await until(ended, timeout=300, every=1.0)
    assert done["status"] == "completed", done["error"]
    code, jobs = await api("GET", "jobs")
    assert {j["id"] for j in jobs["jobs"]} >= {again["id"]} and len(jobs["jobs"]) == 2
