"""schemathesis against the live API of a real JupyterLab server: generated requests, valid
and not, to every operation of the OpenAPI document, and no server error among the answers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import agentorch_nb as ao
from tests.browser.lab import JupyterLab

from .conftest import team

pytestmark = pytest.mark.slow
# Jupyter itself answers OPTIONS with 200 and undeclared methods with 405 without an Allow
# header; those are the server's, not this API's.
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_schema_conformance,negative_data_rejection")


def schemathesis() -> str:
    found = shutil.which("schemathesis") or str(Path(sys.executable).with_name("schemathesis"))
    if not Path(found).exists():
        pytest.skip("schemathesis is not installed (pip install -e '.[test]')")
    return found


@pytest.mark.timeout(600)
async def test_schemathesis_finds_no_server_error(tmp_path):
    # Its stateful phase follows links from GET /runs to POST .../restart: real batch jobs.
    (tmp_path / "lab" / "config").mkdir(parents=True)
    (tmp_path / "lab" / "config" / "jupyter_server_config.json").write_text(
        json.dumps({"AgentorchApp": {"max_jobs": 1}}))
    lab = JupyterLab.start(tmp_path / "lab", tmp_path / "lab.log")
    try:
        orch = ao.Orchestrator(ao.init_workspace(lab.root / "proj").root, agents=team())
        run = orch.start("Build the thing")
        await run.wait(timeout=30)
        run.cancel()
        await run.wait(timeout=30)
        orch.store.close()
        out = subprocess.run(
            [schemathesis(), "run", f"{lab.url}/agentorch/api/v1/openapi.json",
             "-H", f"Authorization: token {lab.token}", "--checks", CHECKS,
             "--max-examples", "10", "--seed", "1", "--request-timeout", "60",
             "--generation-database", "none",
             "--url", f"{lab.url}/agentorch/api/v1"],
            cwd=tmp_path,
            capture_output=True, text=True, timeout=900)
        (tmp_path / "schemathesis.txt").write_text(out.stdout + out.stderr)
        assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    finally:
        lab.stop()
