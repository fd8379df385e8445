"""The wheel carries the prebuilt JupyterLab extension ("Agent runs" sidebar), the server
extension's config and the package data the server needs, and installs into a fresh venv
where JupyterLab and Jupyter Server both list the extensions as enabled.

These build a wheel (pip fetches the build requirements from the registry) and, for the
fresh-venv test, install it with all its dependencies: slow.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BUILT = ROOT / "agentorch_nb" / "labextension"
LABEXT = "share/jupyter/labextensions/agentorch-nb"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _data(name: str) -> str:
    """Where shared data lands inside the wheel."""
    return f"agentorch_nb-0.1.0.data/data/{name}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> dict:
    """Build the wheel once. With the extension already built, build it with no node on
    PATH: the build hook must skip npm (skip-if-exists) rather than need it."""
    out = tmp_path_factory.mktemp("wheel")
    prebuilt = (BUILT / "static" / "style.js").exists() and (BUILT / "package.json").exists()
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    if prebuilt:
        nonode = tmp_path_factory.mktemp("nonode-bin")  # an empty PATH: no node, npm, jlpm
        env["PATH"] = str(nonode)
    elif shutil.which("node") is None:
        pytest.skip("the extension is not built and there is no node to build it")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    (path,) = out.glob("agentorch_nb-*.whl")
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        package_json = json.loads(zf.read(_data(f"{LABEXT}/package.json")))
    return {"path": path, "names": names, "package_json": package_json, "nonode": prebuilt}


def test_wheel_has_prebuilt_labextension(wheel):
    names = wheel["names"]
    assert _data(f"{LABEXT}/package.json") in names
    assert _data(f"{LABEXT}/install.json") in names
    static = [n for n in names if n.startswith(_data(f"{LABEXT}/static/")) and n.endswith(".js")]
    assert static, sorted(names)
    assert _data(f"{LABEXT}/static/style.js") in names
    meta = wheel["package_json"]
    assert meta["name"] == "agentorch-nb"  # = _jupyter_labextension_paths()'s dest
    # The entry point JupyterLab loads is in the wheel.
    assert _data(f"{LABEXT}/{meta['jupyterlab']['_build']['load']}") in names
    # ...and the same bundle is package data (for `jupyter labextension develop`).
    assert "agentorch_nb/labextension/package.json" in names
    assert "agentorch_nb/labextension/static/style.js" in names


def test_wheel_enables_server_extension(wheel):
    assert _data("etc/jupyter/jupyter_server_config.d/agentorch_nb.json") in wheel["names"]
    config = json.loads((ROOT / "jupyter-config/server-config/agentorch_nb.json").read_text())
    assert config == {"ServerApp": {"jpserver_extensions": {"agentorch_nb": True}}}


def test_wheel_has_package_data(wheel):
    names = wheel["names"]
    notebook = ROOT / "agentorch_nb/notebooks/run_objective.ipynb"
    if notebook.exists():
        assert "agentorch_nb/notebooks/run_objective.ipynb" in names
    for pattern in ("server/*.json", "server/events/*"):
        for path in (ROOT / "agentorch_nb").glob(pattern):
            assert path.relative_to(ROOT).as_posix() in names
    # The TypeScript sources and the npm tree stay out of the wheel.
    assert not any(n.startswith(("labextension/", "node_modules/")) or "/node_modules/" in n
                   for n in names)


def test_wheel_built_without_node(wheel):
    if not wheel["nonode"]:
        pytest.skip("the extension was not built yet: this build needed node")
    # The fixture built it with an empty PATH: getting here is the proof.


@pytest.mark.timeout(1200)
def test_fresh_venv_lists_both_extensions(wheel, tmp_path):
    """A real fresh venv (not --system-site-packages): pip installs the wheel and all its
    dependencies from the registry, then both Jupyter extension lists show ours enabled."""
    venv = tmp_path / "v"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    bin_ = venv / "bin"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JUPYTER_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(PATH=f"{bin_}{os.pathsep}{env.get('PATH', '')}", PIP_DISABLE_PIP_VERSION_CHECK="1",
               VIRTUAL_ENV=str(venv))
    proc = subprocess.run([str(bin_ / "python"), "-m", "pip", "install", "-q", str(wheel["path"])],
                          env=env, capture_output=True, text=True, timeout=1100)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    def run(*cmd: str) -> str:
        done = subprocess.run([str(bin_ / cmd[0]), *cmd[1:]], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)
        return ANSI.sub("", done.stdout + done.stderr)

    labext = run("jupyter-labextension", "list")
    assert re.search(r"agentorch-nb v\S+ enabled OK \(python, agentorch_nb\)", labext), labext
    assert str(venv / LABEXT.rsplit("/", 1)[0]) in labext, labext
    server = run("jupyter-server", "extension", "list")
    assert re.search(r"agentorch_nb enabled", server), server
    assert re.search(r"agentorch_nb \S+ OK", server), server
