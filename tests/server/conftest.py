"""A real Jupyter server (pytest-jupyter) with the agentorch_nb extension, on the loop
pytest-asyncio runs the test on, and workspaces with runs under its root directory."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from jupyter_server.serverapp import ServerApp

import agentorch_nb as ao
from agentorch_nb import live
from agentorch_nb.testing import Agents, TestDirector, TestStrategist, TestWorker

from .spec import check

# pytest-jupyter's fixtures for this folder only (pytest_plugins must live in the top conftest,
# and would then reach every test of the suite).
from pytest_jupyter.jupyter_core import *  # noqa: E402,F403
from pytest_jupyter.jupyter_server import *  # noqa: E402,F403

API = ("agentorch", "api", "v1")


@pytest.fixture
async def jp_asyncio_loop():
    """The server runs on the test's own loop (the project uses asyncio_mode = "auto")."""
    return asyncio.get_running_loop()


@pytest.fixture
async def jp_server_cleanup():
    """pytest-jupyter's own cleanup needs a loop that is not running: do it on ours."""
    yield
    app = ServerApp.instance()
    await app._cleanup()  # stops the extensions: the feed's listener, the scanner
    if hasattr(app, "kernel_manager"):
        app.kernel_manager.context.destroy()
    ServerApp.clear_instance()
    live.clear()


@pytest.fixture
def jp_server_config():
    return {"ServerApp": {"jpserver_extensions": {"agentorch_nb": True}},
            "AgentorchApp": {"scan_interval": 1.0}}


@pytest.fixture
async def ao_app(jp_serverapp):
    """The extension, started as a real server starts it once its loop runs."""
    await jp_serverapp.extension_manager.start_all_extensions()
    return jp_serverapp.extension_manager.extension_points["agentorch_nb"].app


@pytest.fixture
def api(jp_fetch, ao_app):
    """``await api("GET", "runs", ...)``: (status, JSON body), errors returned, not raised;
    every answer is checked against the OpenAPI document."""
    from tornado.httpclient import HTTPClientError

    async def call(method: str, *path: str, body=None, params=None, headers=None):
        kwargs = {"method": method, "params": params or {}, "headers": headers or {}}
        if body is not None:
            kwargs["body"] = body if isinstance(body, str) else json.dumps(body)
        elif method in ("POST", "PATCH", "PUT"):
            kwargs["body"] = "{}"
        if method == "DELETE":
            kwargs["allow_nonstandard_methods"] = True
        try:
            r = await jp_fetch(*API, *path, **kwargs)
        except HTTPClientError as exc:
            r = exc.response
        check(r.request.url, method, r.request.body, r.code, r.body)
        return r.code, json.loads(r.body)
    return call


def needs_human(task, ctx):
    if task.title.startswith("needs a human") and not ctx.guidance:
        return "cannot choose between the two designs alone"
    return None


def team(latency: float = 0.0) -> Agents:
    specs = [ao.TaskSpec("plain work"), ao.TaskSpec("needs a human", max_retries=0),
             ao.TaskSpec("after the human", depends_on=["t2"])]
    return Agents(TestDirector(specs), TestWorker(latency=latency, fail=needs_human),
                  TestStrategist())


@pytest.fixture
def workspace(jp_root_dir) -> Path:
    path = Path(jp_root_dir) / "proj"
    ao.init_workspace(path)
    return path


@pytest.fixture
async def paused_run(workspace):
    """A run in this process, paused: t2 waits for a human, t3 waits for t2."""
    orch = ao.Orchestrator(workspace, agents=team(), config=ao.Config(flush_interval=0.01))
    run = orch.start("Build the thing")
    await run.wait(timeout=30)
    await run.engine.store.flush()
    return run
