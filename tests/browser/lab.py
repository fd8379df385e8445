"""A real JupyterLab server and the notebook pages the browser tests drive.

`JupyterLab.start` runs ``python -m jupyterlab`` on 127.0.0.1 with a random token, its own
config, data, runtime, settings and workspace directories (the labextensions pip put in
``sys.prefix/share/jupyter`` are still found: that path comes after ``JUPYTER_DATA_DIR``,
it is not replaced by it), and nothing that reaches the network: no news feed, no update
check, a read-only extension manager. `Notebook` drives one notebook in a Playwright page
through ``window.jupyterapp`` (exposed with ``LabApp.expose_app_in_browser``).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

REPO = Path(__file__).resolve().parents[2]
# Both are prebuilt (federated) extensions installed by pip; without them no widget renders.
REQUIRED_LABEXTENSIONS = ("@jupyter-widgets/jupyterlab-manager", "anywidget")

# User settings the server starts with (JSON, in <settings dir>/<plugin path>.jupyterlab-settings).
USER_SETTINGS = {
    # "Would you like to get notified about official Jupyter news?" is asked while fetchNews
    # is "none", even when the server's news_url is None; "false" neither asks nor fetches.
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false",
                                                    "checkForUpdates": False},
    "@jupyterlab/extensionmanager-extension/plugin": {"enabled": False},
    # Every cell stays attached to the DOM, so a cell far down is still there to query.
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
}

# Injected into every page: small accessors over window.jupyterapp, by notebook path.
PAGE_HELPERS = r"""
window.__labtest = {
  panel(path) {
    const app = window.jupyterapp;
    if (!app) return null;
    for (const w of app.shell.widgets('main')) {
      if (w.context && w.context.path === path && w.content && w.content.model) return w;
    }
    return null;
  },
  kernelStatus(path) {
    const p = this.panel(path);
    const k = p && p.sessionContext.session && p.sessionContext.session.kernel;
    return k ? k.status : null;
  },
  cells(path) {
    return this.panel(path).content.widgets.map((c, index) => {
      const code = c.model.type === 'code';
      return {index, type: c.model.type, source: c.model.sharedModel.getSource(),
              count: code ? c.model.executionCount : null,
              state: code ? c.model.executionState : null,
              outputs: code ? c.model.outputs.toJSON() : []};
    });
  },
  // Started, not awaited: a run command's promise settles only when its cells have run.
  command(path, id, args) {
    const app = window.jupyterapp;
    app.shell.activateById(this.panel(path).id);
    app.commands.execute(id, args || {}).catch((e) => console.error(`${id} failed`, e));
  },
  select(path, index) {
    const nb = this.panel(path).content;
    nb.activeCellIndex = index;
    nb.deselectAll();
  },
  // Code through the notebook's own kernel connection, outside the notebook's cells.
  async execute(path, code) {
    const kernel = this.panel(path).sessionContext.session.kernel;
    const future = kernel.requestExecute({code, store_history: false, stop_on_error: true});
    const out = [];
    let error = null;
    future.onIOPub = (msg) => {
      const c = msg.content;
      switch (msg.header.msg_type) {
        case 'stream': out.push(c.text); break;
        case 'execute_result': case 'display_data': out.push(c.data['text/plain'] || ''); break;
        case 'error': error = {ename: c.ename, evalue: c.evalue, traceback: c.traceback}; break;
      }
    };
    await future.done;
    return {out: out.join(''), error};
  },
};
"""

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class CellError(AssertionError):
    """A cell (or code sent to the kernel) raised; the message is its traceback."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class JupyterLab:
    """A running ``jupyter lab``; ``root`` is its root_dir, where notebooks are written."""

    root: Path
    url: str
    token: str
    proc: subprocess.Popen
    log_path: Path
    # The server's environment (its JUPYTER_* folders): a process given it is seen by the
    # server as one of its own (agentorch's change notices find the server's live feed).
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def start(cls, base: Path, log_path: Path, timeout: float = 90) -> JupyterLab:
        dirs = {name: base / name for name in
                ("root", "config", "data", "runtime", "ipython", "settings", "workspaces")}
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        for plugin, values in USER_SETTINGS.items():
            path = dirs["settings"] / f"{plugin}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER_TOKEN", "JPY_"))}
        env.update(
            JUPYTER_CONFIG_DIR=str(dirs["config"]), JUPYTER_DATA_DIR=str(dirs["data"]),
            JUPYTER_RUNTIME_DIR=str(dirs["runtime"]), IPYTHONDIR=str(dirs["ipython"]),
            # The kernels import this checkout's agentorch_nb even where it is not installed.
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        )
        port, token = _free_port(), secrets.token_hex(16)
        cmd = [
            sys.executable, "-m", "jupyterlab", "--no-browser",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={dirs['root']}",
            "--ServerApp.allow_root=True",  # CI runs as root
            "--ServerApp.terminals_enabled=False",
            f"--LabApp.user_settings_dir={dirs['settings']}",
            f"--LabApp.workspaces_dir={dirs['workspaces']}",
            "--LabApp.expose_app_in_browser=True",  # window.jupyterapp, for the page helpers
            # Offline and quiet: no news feed, no update check, no PyPI extension listing.
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",
        ]
        log = log_path.open("w")
        proc = subprocess.Popen(cmd, env=env, cwd=dirs["root"], stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        lab = cls(dirs["root"], f"http://127.0.0.1:{port}", token, proc, log_path, env)
        try:
            lab._wait_until_up(timeout)
            lab._check_labextensions()
        except BaseException:
            lab.stop()
            raise
        return lab

    def _wait_until_up(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self.proc.returncode}:\n"
                                   + self.log_tail())
            try:
                self.api("GET", "/api/status")
                return
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"jupyter lab did not answer /api/status within "
                                       f"{timeout:.0f} s:\n{self.log_tail()}") from None
                time.sleep(0.1)

    def _check_labextensions(self) -> None:
        html = self.get(f"/lab?token={self.token}")
        config = json.loads(re.search(r'id="jupyter-config-data"[^>]*>(.*?)</script>',
                                      html, re.S).group(1))
        found = {e["name"] for e in config.get("federated_extensions", [])}
        missing = [name for name in REQUIRED_LABEXTENSIONS if name not in found]
        if missing:
            raise RuntimeError(f"JupyterLab does not see the labextensions {missing} (it sees "
                               f"{sorted(found)}): pip install anywidget jupyterlab_widgets")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """Shut the server down (its kernels with it), then kill its process group."""
        if self.proc.poll() is None:
            try:
                self.api("POST", "/api/shutdown")
                self.proc.wait(15)
            except Exception:
                pass
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue

    # -- REST --------------------------------------------------------------------------------

    def get(self, path: str) -> str:
        with urllib.request.urlopen(self.url + path, timeout=10) as r:
            return r.read().decode()

    def api(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Authorization": f"token {self.token}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            text = r.read()
        return json.loads(text) if text else None

    def shutdown_kernels(self) -> None:
        for session in self.api("GET", "/api/sessions"):
            self.api("DELETE", f"/api/sessions/{session['id']}")
        for kernel in self.api("GET", "/api/kernels"):
            self.api("DELETE", f"/api/kernels/{kernel['id']}")

    # -- notebooks in the server's root --------------------------------------------------------

    def write_notebook(self, name: str, cells: list[str]) -> str:
        """Write a notebook of code cells (a cell starting with ``#md`` is markdown)."""
        import nbformat

        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                     "language": "python"}
        nb.cells = [nbformat.v4.new_markdown_cell(c[3:].strip()) if c.startswith("#md")
                    else nbformat.v4.new_code_cell(c) for c in cells]
        nbformat.write(nb, self.root / name)
        return name

    def copy_notebook(self, src: Path, name: str | None = None) -> str:
        """Copy ``src`` into the root without its outputs, so every count is this run's."""
        import nbformat

        nb = nbformat.read(src, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        name = name or src.name
        nbformat.write(nb, self.root / name)
        return name

    def page_url(self, path: str) -> str:
        # ?reset: start from an empty workspace, not with the last test's notebooks open.
        return f"{self.url}/lab/tree/{path}?reset&token={self.token}"


@dataclass
class Notebook:
    """One notebook open in a page. Cells are addressed by index, as in the file."""

    page: Page
    lab: JupyterLab
    path: str
    external_requests: list[str] = field(default_factory=list)  # anything not to the server
    page_errors: list[str] = field(default_factory=list)  # uncaught exceptions in the page

    def open(self, timeout: float = 60) -> Notebook:
        self.page.on("request", self._note_request)
        self.page.on("pageerror", lambda e: self.page_errors.append(str(e)))
        self.page.goto(self.lab.page_url(self.path))
        self.page.wait_for_function("p => window.__labtest.panel(p) !== null", arg=self.path,
                                    timeout=timeout * 1000)
        self.page.evaluate("() => window.jupyterapp.shell.collapseLeft()")
        self.wait_for_kernel_idle(timeout)
        return self

    def _note_request(self, request) -> None:
        if not request.url.startswith((self.lab.url, "data:", "blob:", "about:")):
            self.external_requests.append(request.url)

    def _js(self, method: str, *args: Any) -> Any:
        return self.page.evaluate(f"([p, ...a]) => window.__labtest.{method}(p, ...a)",
                                  [self.path, *args])

    def wait_for_kernel_idle(self, timeout: float = 60) -> None:
        self.page.wait_for_function("p => window.__labtest.kernelStatus(p) === 'idle'",
                                    arg=self.path, timeout=timeout * 1000)

    def cells(self) -> list[dict[str, Any]]:
        return self._js("cells")

    def index_of(self, text: str, cell_type: str = "code") -> int:
        """The index of the first cell of ``cell_type`` whose source contains ``text``."""
        for cell in self.cells():
            if cell["type"] == cell_type and text in cell["source"]:
                return cell["index"]
        raise LookupError(f"no {cell_type} cell of {self.path} contains {text!r}")

    def command(self, command_id: str, args: dict | None = None) -> None:
        """Start a JupyterLab command on this notebook (``notebook:run-all-cells``, ...)."""
        self._js("command", command_id, args or {})

    def run_all(self, timeout: float = 120) -> None:
        """Run every cell (JupyterLab's Run All) and wait until each code cell has run."""
        self.command("notebook:clear-all-cell-outputs")
        before = {c["index"]: c["count"] for c in self.cells()}
        self.command("notebook:run-all-cells")
        self._wait_executed(lambda c: c["source"].strip() != "", before, timeout)

    def run_cells(self, indices, timeout: float = 120) -> None:
        """Run the given code cells one after the other, each when the one before has
        finished; markdown and empty cells are passed over."""
        cells = self.cells()
        for i in indices:
            if cells[i]["type"] == "code" and cells[i]["source"].strip():
                self.run_cell(i, timeout)

    def run_cell(self, index: int, timeout: float = 120) -> None:
        before = {c["index"]: c["count"] for c in self.cells()}
        self._js("select", index)
        self.command("notebook:run-cell")
        self._wait_executed(lambda c: c["index"] == index, before, timeout)

    def _wait_executed(self, wanted, before: dict[int, Any], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            cells = [c for c in self.cells() if c["type"] == "code" and wanted(c)]
            for c in cells:
                for out in c["outputs"]:
                    if out["output_type"] == "error":
                        raise CellError(f"cell {c['index']} of {self.path} raised:\n"
                                        + _ANSI.sub("", "\n".join(out["traceback"])))
            pending = [c["index"] for c in cells
                       if c["state"] != "idle" or c["count"] is None
                       or c["count"] == before.get(c["index"])]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"cells {pending} of {self.path} had not finished after "
                                   f"{timeout:.0f} s")
            self.page.wait_for_timeout(100)

    def output_text(self, index: int) -> str:
        """Stream and ``text/plain`` outputs of a cell, as the notebook model holds them."""
        cell = self.cells()[index]
        parts = []
        for out in cell["outputs"]:
            if out["output_type"] == "stream":
                text = out["text"]
            else:
                text = out.get("data", {}).get("text/plain", "")
            parts.append("".join(text) if isinstance(text, list) else text)
        return "".join(parts)

    def execute(self, code: str) -> str:
        """Run ``code`` in the notebook's kernel (not as a cell) and return what it printed."""
        result = self._js("execute", code)
        if result["error"]:
            raise CellError(_ANSI.sub("", "\n".join(result["error"]["traceback"])))
        return result["out"]

    # -- locating things on the page -------------------------------------------------------------

    def cell(self, index: int) -> Locator:
        return self.page.locator(".jp-NotebookPanel:visible .jp-Notebook .jp-Cell").nth(index)

    def outputs(self, index: int) -> Locator:
        """The rendered outputs of a cell: widgets' DOM is inside, so search from here."""
        return self.cell(index).locator(".jp-OutputArea-output")
