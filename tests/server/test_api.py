"""The REST API in a real Jupyter server: every route, its auth, its errors, and commands
acted on by the engine that drives the run."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from tornado.httpclient import HTTPClientError
from tornado.web import RequestHandler

import agentorch_nb as ao
from agentorch_nb.server.handlers import routes

from .conftest import API


async def until(predicate, timeout: float = 30.0, every: float = 0.05):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not true within {timeout} s")
        await asyncio.sleep(every)


def implements(handler, method: str) -> bool:
    return getattr(handler, method.lower()) is not getattr(RequestHandler, method.lower())


def served() -> set[tuple[str, str]]:
    """(path template, method) of every route, ``{name}`` for its parameters."""
    found = set()
    for pattern, handler in routes():
        path = pattern.replace("\\.", ".").removeprefix("/agentorch/api/v1")
        choices = re.search(r"\(\?P<action>([a-z|]+)\)", path)
        paths = [path.replace(choices.group(0), a) for a in choices.group(1).split("|")] \
            if choices else [path]
        for one in paths:
            one = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", one)
            found |= {(one, m) for m in ("get", "post", "patch", "delete") if implements(handler, m)}
    return found


async def test_every_route_refuses_a_request_without_a_token(http_server_client, jp_base_url, ao_app):
    routes_ = served()
    for path, method in routes_:
        url = jp_base_url + "agentorch/api/v1" + re.sub(r"\{attempt\}", "1", re.sub(r"\{(?!attempt)\w+\}", "x", path))
        body = "{}" if method in ("post", "patch") else None
        with pytest.raises(HTTPClientError) as err:
            await http_server_client.fetch(url, method=method.upper(), body=body,
                                           allow_nonstandard_methods=True)
        assert err.value.code == 403, (method, url, err.value.code)
    assert len(routes_) == 19


async def test_a_cookie_without_the_xsrf_token_cannot_change_anything(
        http_server_client, jp_base_url, jp_auth_header, paused_run, api):
    token = jp_auth_header["Authorization"].split()[-1]
    # Logging in with the token in the URL gives a session cookie, as a browser gets.
    r = await http_server_client.fetch(f"{jp_base_url}api/status?token={token}")
    cookies = "; ".join(c.split(";")[0] for c in r.headers.get_list("Set-Cookie"))
    assert cookies
    url = f"{jp_base_url}agentorch/api/v1/runs/{paused_run.id}/cancel"
    with pytest.raises(HTTPClientError) as err:
        await http_server_client.fetch(url, method="POST", body="{}", headers={"Cookie": cookies})
    assert err.value.code == 403
    assert paused_run.status == ao.RunStatus.PAUSED


async def test_runs_are_listed_with_progress_cost_and_the_waiting_count(api, paused_run, ao_app):
    code, page = await api("GET", "runs")
    assert code == 200 and page["total"] == 1
    (run,) = page["runs"]
    assert run["id"] == paused_run.id and run["status"] == "paused" and run["live"]
    assert run["counts"] == {"complete": 1, "waiting_human": 1, "blocked": 1} or \
        run["counts"].get("complete") == 1 and run["waiting"] == 1
    assert run["store"] in {ref.id for ref in ao_app.index}
    code, stores = await api("GET", "stores")
    assert [s["id"] for s in stores["stores"]] == [run["store"]]
    assert stores["stores"][0]["workspace"] == "proj"
    code, page = await api("GET", "runs", params={"limit": 1, "offset": 1})
    assert code == 200 and page["runs"] == [] and page["total"] == 1


async def test_a_run_comes_with_its_tasks_and_dependencies(api, paused_run):
    code, detail = await api("GET", "runs", paused_run.id)
    assert code == 200
    assert [t["id"] for t in detail["tasks"]] == ["t1", "t2", "t3"]
    assert [t["status"] for t in detail["tasks"]][:2] == ["complete", "waiting_human"]
    assert {"task_id": "t3", "depends_on": "t2"} in detail["dependencies"]


async def test_the_human_queue_shows_what_a_person_needs(api, paused_run):
    code, queue = await api("GET", "interrupts")
    assert code == 200
    (item,) = queue["interrupts"]
    assert item["task_id"] == "t2" and item["run_id"] == paused_run.id
    assert "cannot choose" in (item["reason"] + (item["qa_feedback"] or ""))
    code, per_run = await api("GET", "runs", paused_run.id, "interrupts")
    assert per_run["interrupts"] == queue["interrupts"]


async def test_two_stores_are_one_queue(api, paused_run, jp_root_dir):
    from .conftest import team

    second = ao.Orchestrator(ao.init_workspace(jp_root_dir / "nested" / "two").root, agents=team())
    run2 = second.start("Another thing")
    await run2.wait(timeout=30)
    await second.store.flush()
    code, queue = await api("GET", "interrupts")
    assert sorted(i["run_id"] for i in queue["interrupts"]) == sorted([paused_run.id, run2.id])
    assert len({i["store"] for i in queue["interrupts"]}) == 2
    code, page = await api("GET", "runs")
    assert page["total"] == 2


async def test_retry_through_rest_is_applied_by_the_engine_and_recorded_as_rest(api, paused_run):
    code, out = await api("POST", "runs", paused_run.id, "tasks", "t2", "resolve",
                          body={"action": "retry", "guidance": "take the first design"})
    assert (code, out) == (200, {"status": "applied"})
    assert await paused_run.wait(timeout=30) == ao.RunStatus.COMPLETED
    res = ao.sql("select source, action from resolutions where run_id = ?", [paused_run.id])
    assert res.action.tolist() == ["retry"]
    assert re.fullmatch(r"rest:\S+", res.source[0])


async def test_bad_requests_get_4xx_and_change_nothing(api, paused_run):
    rid = paused_run.id
    bad = [
        (("POST", "runs", rid, "tasks", "t1", "resolve"), {"action": "retry"}, 409, "waiting_human"),
        (("POST", "runs", rid, "tasks", "t2", "resolve"), {"action": "explode"}, 400, ""),
        (("POST", "runs", rid, "tasks", "t2", "resolve"), {"action": "retry", "sneaky": 1}, 400, ""),
        (("POST", "runs", rid, "tasks", "t2", "resolve"), "{not json", 400, "not JSON"),
        (("POST", "runs", rid, "tasks", "t9", "resolve"), {"action": "retry"}, 404, "t9"),
        (("POST", "runs", "run-nope", "tasks", "t2", "resolve"), {"action": "retry"}, 404, "run-nope"),
        (("GET", "runs", rid), None, 404, "unknown store"),
        (("GET", "runs"), None, 400, "limit"),
        (("POST", "runs"), {"objective": "x", "workspace": "../outside"}, 403, "outside"),
        (("POST", "runs"), {"objective": "", "workspace": "proj"}, 400, "objective"),
        (("POST", "runs"), {"objective": "a\x00b", "workspace": "proj"}, 400, "NUL"),
        (("POST", "runs"), {"objective": "x", "workspace": "x" * 5000}, 400, ""),
        (("POST", "runs"), {"objective": "x", "workspace": "nowhere"}, 400, "does not exist"),
        (("PATCH", "runs", rid, "tasks", "t1"), {}, 400, ""),
        (("PATCH", "runs", rid, "tasks", "t3"), {"remove_dependencies": ["t1"]}, 409, "t1"),
        (("PATCH", "runs", rid, "tasks", "t1"), {"add_dependencies": ["t2"]}, 409, "complete"),
    ]
    params = {("GET", "runs", rid): {"store": "s-nope"}, ("GET", "runs"): {"limit": "many"}}
    for path, body, status, words in bad:
        code, out = await api(*path, body=body, params=params.get(path))
        assert code == status, (path, body, code, out)
        assert words in out["message"], (path, out)
    code, detail = await api("GET", "runs", rid)
    assert [t["status"] for t in detail["tasks"]][:2] == ["complete", "waiting_human"]
    assert ao.sql("select count(*) as n from resolutions").n[0] == 0


async def test_batch_jobs_beyond_max_jobs_are_refused_with_429(api, workspace, ao_app):
    ao_app.max_jobs = 0
    code, out = await api("POST", "runs", body={"objective": "x", "workspace": "proj"})
    assert code == 429 and "max_jobs" in out["message"]
    assert ao_app.jobs.jobs == {}


async def test_a_dependency_cycle_is_refused_with_409_naming_it(api, paused_run):
    code, out = await api("PATCH", "runs", paused_run.id, "tasks", "t2",
                          body={"add_dependencies": ["t3"]})
    assert code == 409
    assert out["cycle"] == ["t2", "t3", "t2"] and "t2 -> t3 -> t2" in out["message"]
    code, out = await api("PATCH", "runs", paused_run.id, "tasks", "t3",
                          body={"add_dependencies": ["t1"]})
    assert (code, out) == (200, {"status": "applied"})
    code, detail = await api("GET", "runs", paused_run.id)
    assert {"task_id": "t3", "depends_on": "t1"} in detail["dependencies"]


async def test_abandon_with_its_dependents(api, paused_run):
    code, out = await api("DELETE", "runs", paused_run.id, "tasks", "t2", params={"cascade": "true"})
    assert (code, out) == (200, {"status": "applied"})
    code, detail = await api("GET", "runs", paused_run.id)
    assert [t["status"] for t in detail["tasks"]] == ["complete", "abandoned", "abandoned"]


async def test_spawn_interrupt_and_cancel(api, paused_run):
    rid = paused_run.id
    code, out = await api("POST", "runs", rid, "tasks", "t1", "interrupt")
    assert code == 409 and "complete" in out["message"]  # there is no attempt to stop
    code, out = await api("POST", "runs", rid, "tasks", "t2", "resolve",
                          body={"action": "spawn", "title": "a smaller step", "replace": False})
    assert (code, out) == (200, {"status": "applied"})
    code, out = await api("POST", "runs", rid, "cancel")
    assert (code, out) == (200, {"status": "applied"})
    assert await paused_run.wait(timeout=30) == ao.RunStatus.CANCELLED
    code, out = await api("POST", "runs", rid, "cancel")
    assert code == 409 and "cancelled" in out["message"]


async def test_messages_are_paged_and_an_attempt_has_its_diff(api, paused_run):
    rid = paused_run.id
    code, page = await api("GET", "runs", rid, "tasks", "t1", "messages", params={"limit": 1})
    assert code == 200 and page["total"] >= 1 and len(page["messages"]) == 1
    code, rest = await api("GET", "runs", rid, "tasks", "t1", "messages",
                           params={"offset": 1, "limit": 500})
    assert len(rest["messages"]) == page["total"] - 1
    code, diff = await api("GET", "runs", rid, "tasks", "t1", "attempts", "1", "diff")
    assert code == 200 and diff["outcome"] == "approved"
    code, out = await api("GET", "runs", rid, "tasks", "t1", "attempts", "7", "diff")
    assert code == 404


async def test_commands_to_a_run_no_engine_drives_are_pending(api, paused_run):
    code, out = await api("POST", "runs", paused_run.id, "cancel")
    await paused_run.wait(timeout=30)
    code, out = await api("POST", "runs", paused_run.id, "replan")
    assert (code, out) == (200, {"status": "pending"})
    code, page = await api("GET", "runs")
    assert page["runs"][0]["live"] is False


async def test_the_openapi_document_describes_every_route(api):
    code, spec = await api("GET", "openapi.json")
    assert code == 200 and spec["openapi"].startswith("3.")
    assert spec["servers"][0]["url"].endswith("/agentorch/api/v1")
    documented = {(p, m) for p, ops in spec["paths"].items() for m in ops}
    assert documented == served()


async def test_a_dashboard_notebook_opens_the_run(api, paused_run, jp_root_dir):
    code, out = await api("POST", "runs", paused_run.id, "dashboard")
    assert code == 200 and out["path"] == f"proj-runs/dashboard-{paused_run.id}.ipynb"
    nb = json.loads((jp_root_dir / out["path"]).read_text())
    assert f"orch.run({paused_run.id!r})" in "".join(nb["cells"][1]["source"])


def test_job_notebooks_go_beside_the_workspace_or_out_of_git_when_it_is_the_root(tmp_path):
    import subprocess

    from agentorch_nb.server.jobs import notebook_dir

    root = ao.init_workspace(tmp_path / "root").root
    inner = ao.init_workspace(root / "apps" / "one").root
    assert notebook_dir(inner, root) == root / "apps" / "one-runs"
    folder = notebook_dir(root, root)
    assert folder == root / "agentorch-runs"
    folder.mkdir()
    (folder / "run-x.ipynb").write_text("{}")
    status = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True,
                            text=True, check=True).stdout
    assert "agentorch-runs" not in status


async def test_a_damaged_store_is_reported_and_the_others_still_served(api, paused_run, jp_root_dir,
                                                                       ao_app):
    bad = jp_root_dir / "broken" / ".agentorch" / "agentorch.duckdb"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a database at all")
    await ao_app.index.scan()  # the next walk finds it
    code, page = await api("GET", "runs")
    assert code == 200 and [r["id"] for r in page["runs"]] == [paused_run.id]
    (problem,) = page["unavailable"]
    assert "not a DuckDB database" in problem["message"]
    code, queue = await api("GET", "interrupts")
    assert code == 200 and len(queue["interrupts"]) == 1 and len(queue["unavailable"]) == 1
