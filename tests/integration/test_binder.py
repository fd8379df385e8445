"""The closest stand-in for a Binder build that needs no Docker.

Binder builds the repository with repo2docker from ``binder/`` (root config files are then
ignored): Python from ``binder/runtime.txt``, ``pip install -r binder/requirements.txt``, then
``binder/postBuild`` from the repository's root, and opens ``?urlpath=lab/tree/notebooks/demo.ipynb``.
Here: (a) ``repo2docker --no-build`` prints the Dockerfile it would build; (b) a fresh venv gets
the requirements and runs postBuild on a copy of the repository's files as git would check
them out (so the JupyterLab extension is built from source, as on Binder; node >= 20 needed);
(c) JupyterLab from that venv serves the demo notebook and lists the agentorch-nb extension;
(d) the demo notebook runs in that venv, top to bottom, in under two minutes.

The venv takes one to two minutes to install with a warm pip cache.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[2]
BINDER = REPO / "binder"
DEMO_SECONDS = 120

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_binder_files_say_what_binder_needs():
    """Fast checks of binder/: Python 3.11, every dependency of the project, an executable
    bash postBuild that stops at the first error and installs the project, no start script
    that would not hand over to Jupyter."""
    assert (BINDER / "runtime.txt").read_text().strip() == "python-3.11"
    required = {_name(r) for r in (BINDER / "requirements.txt").read_text().splitlines()
                if r.strip() and not r.startswith("#")}
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert {_name(d) for d in project} - required == set()
    post = BINDER / "postBuild"
    assert os.access(post, os.X_OK) and post.read_text().startswith("#!/usr/bin/env bash")
    assert "set -euo pipefail" in post.read_text() and "pip install" in post.read_text()
    start = BINDER / "start"
    assert not start.exists() or start.read_text().rstrip().endswith('exec "$@"')


def repo_files(dest: Path) -> Path:
    """The repository's files as a checkout would have them (tracked, plus new files not
    ignored): no built extension, no node_modules."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def run(cmd: list, timeout: float, **kw) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    assert out.returncode == 0, f"{cmd} exited {out.returncode}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    return repo_files(tmp_path_factory.mktemp("binder") / "repo")


@pytest.fixture(scope="module")
def venv(tmp_path_factory, checkout) -> dict:
    """A fresh venv with binder/requirements.txt, then binder/postBuild run in the checkout."""
    root = tmp_path_factory.mktemp("venv") / "env"
    timings = {}
    started = time.monotonic()
    run([sys.executable, "-m", "venv", str(root)], 120)
    bindir = root / "bin"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "JUPYTER", "VIRTUAL_ENV", "PIP_"))}
    env.update(PATH=f"{bindir}{os.pathsep}{env['PATH']}", VIRTUAL_ENV=str(root),
               PIP_DISABLE_PIP_VERSION_CHECK="1")
    run([str(bindir / "python"), "-m", "pip", "install", "-q", "-r",
         str(checkout / "binder" / "requirements.txt")], 600, env=env)
    timings["requirements"] = time.monotonic() - started
    if shutil.which("node") is None:  # postBuild would need node to build the extension
        shutil.copytree(REPO / "agentorch_nb" / "labextension", checkout / "agentorch_nb" / "labextension")
    started = time.monotonic()
    run(["bash", "binder/postBuild"], 600, cwd=checkout, env=env)
    timings["postBuild"] = time.monotonic() - started
    print(f"binder venv: requirements {timings['requirements']:.0f} s, "
          f"postBuild {timings['postBuild']:.0f} s")
    return {"root": root, "bin": bindir, "env": env, "timings": timings}


def test_repo2docker_would_build_python_311_and_run_postbuild(tmp_path, checkout):
    try:
        import repo2docker  # noqa: F401
        r2d = [sys.executable, "-m", "repo2docker"]
    except ImportError:
        tool = tmp_path / "r2d"
        subprocess.run([sys.executable, "-m", "venv", str(tool)], check=True, timeout=120)
        got = subprocess.run([str(tool / "bin" / "pip"), "install", "-q", "jupyter-repo2docker"],
                             capture_output=True, text=True, timeout=300)
        if got.returncode != 0:
            pytest.skip(f"jupyter-repo2docker does not install here: {got.stderr[-500:]}")
        r2d = [str(tool / "bin" / "python"), "-m", "repo2docker"]
    # As mybinder.org runs it: the notebook user is jovyan, uid 1000.
    out = run(r2d + ["--no-build", "--debug", "--user-id", "1000", "--user-name", "jovyan",
                     str(checkout)], 120)
    dockerfile = out.stdout + out.stderr
    assert "Building conda environment for python=3.11" in dockerfile
    assert 'pip install --no-cache-dir -r "binder/requirements.txt"' in dockerfile
    assert "COPY --chown=1000:1000 src/ ${REPO_DIR}/" in dockerfile  # postBuild may write there
    assert dockerfile.index("COPY --chown=1000:1000 src/") < dockerfile.index("RUN ./binder/postBuild")


def test_postbuild_installs_the_project_with_its_extensions(venv):
    py = str(venv["bin"] / "python")
    out = run([py, "-c", "import agentorch_nb, sys; print(agentorch_nb.__file__, sys.version_info[:2])"],
              60, env=venv["env"], cwd="/")
    assert str(venv["root"]) in out.stdout  # installed into the venv, not imported from a checkout
    labext = run([str(venv["bin"] / "jupyter"), "labextension", "list"], 120, env=venv["env"])
    assert re.search(r"agentorch-nb .*enabled.*OK", labext.stdout + labext.stderr)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_jupyterlab_from_the_venv_serves_the_demo_with_the_extension(tmp_path, venv, checkout):
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(venv["env"], JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), IPYTHONDIR=str(tmp_path / "ipython"))
    log = (tmp_path / "lab.log").open("w")
    proc = subprocess.Popen(
        [str(venv["bin"] / "python"), "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={checkout}", "--ServerApp.allow_root=True",
         "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         "--LabApp.extension_manager=readonly"],
        env=env, cwd=checkout, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"token {token}"}

    def get(path: str) -> tuple[int, str]:
        req = urllib.request.Request(url + path, headers=headers)
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()

    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                get("/api/status")
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, (tmp_path / "lab.log").read_text()[-3000:]
                assert time.monotonic() < deadline, (tmp_path / "lab.log").read_text()[-3000:]
                time.sleep(0.2)
        status, body = get("/api/contents/notebooks/demo.ipynb")
        assert status == 200 and json.loads(body)["type"] == "notebook"
        # The page Binder opens (?urlpath=lab/tree/notebooks/demo.ipynb) lists the extension.
        status, page = get("/lab/tree/notebooks/demo.ipynb")
        config = json.loads(re.search(r'id="jupyter-config-data"[^>]*>(.*?)</script>', page, re.S).group(1))
        assert "agentorch-nb" in {e["name"] for e in config["federated_extensions"]}
        status, body = get("/agentorch/api/v1/runs")  # the server extension answers too
        assert status == 200
    finally:
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):  # the server's group
            try:
                os.killpg(proc.pid, sig)
                proc.wait(wait)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue
        log.close()


def test_the_demo_notebook_runs_in_the_venv_within_two_minutes(tmp_path, venv, checkout):
    spec = json.loads(run([str(venv["bin"] / "jupyter"), "kernelspec", "list", "--json"], 60,
                          env=venv["env"]).stdout)["kernelspecs"]["python3"]
    argv0 = spec["spec"]["argv"][0]
    assert argv0 in ("python", "python3") or argv0.startswith(str(venv["root"])), spec
    out = tmp_path / "demo-out.ipynb"
    started = time.monotonic()
    run([str(venv["bin"] / "papermill"), str(checkout / "notebooks" / "demo.ipynb"), str(out),
         "--cwd", str(tmp_path), "-k", "python3"], DEMO_SECONDS + 60, env=venv["env"], cwd=tmp_path)
    elapsed = time.monotonic() - started
    print(f"demo notebook in the binder venv: {elapsed:.0f} s")
    assert elapsed < DEMO_SECONDS
    nb = nbformat.read(out, as_version=4)
    texts = [o.get("data", {}).get("text/plain", "") for c in nb.cells for o in c.get("outputs", [])]
    assert "<RunStatus.COMPLETED: 'completed'>" in texts
    assert any(t.startswith("<Chart gantt") for t in texts)
