"""The "Agent runs" sidebar (labextension/src) in a real JupyterLab: it is installed and
enabled, lists a run a notebook started and follows its progress live, starts a run of its
own as a batch job, raises a notification and a card when a task of a run driven by another
process waits for a human, retries that task, renders in the dark theme, and is reachable
from the keyboard.

The runs are real: engines in a notebook's kernel, in a papermill job the server starts,
and in subprocesses of this test given the server's environment (so their stores' change
notices reach the server's live feed). What the page shows is checked against the REST API
and the store. ``sidebar-queue.png`` and ``sidebar-dark.png`` in ``artifacts/`` are the
README's pictures.
"""

from __future__ import annotations

import importlib.util
import json
import queue
import re
import subprocess
import sys
import threading

import pytest

import agentorch_nb as ao
from agentorch_nb.testing import DEMO_OBJECTIVE

from .conftest import ARTIFACTS
from .lab import REPO, JupyterLab

expect = pytest.importorskip("playwright.sync_api").expect

API = "/agentorch/api/v1"
SIDEBAR = "#agentorch-runs"
SIDEBAR_WIDTH = 430  # px, for the screenshots: the default 250 wraps every objective

# A run whose first task cannot go on without a person: it fails unless guidance came with a
# retry, and has no retries of its own, so it waits for a human at once. Its dependants wait
# with it; the engine stays live (paused) and applies the sidebar's resolution when it comes.
# Prints the run's id, then how it ended.
HITL_CHILD = r"""
import sys
import agentorch_nb as ao

from agentorch_nb.testing import Agents, TestDirector, TestStrategist, TestWorker

def needs_a_person(task, ctx):
    if task.title == "Choose the storage engine" and not ctx.guidance:
        return "SQLite and DuckDB both meet the criteria: a person must choose"
    return None

specs = [
    ao.TaskSpec("Choose the storage engine", "pick the engine the service stores events in",
                ["the choice is recorded in DESIGN.md"], key="choose", max_retries=0),
    ao.TaskSpec("Sketch the HTTP API", key="api"),
    ao.TaskSpec("Write the schema", depends_on=["choose"], key="schema"),
    ao.TaskSpec("Write the first migration", depends_on=["schema"]),
]
orch = ao.Orchestrator(sys.argv[1], config=ao.Config(max_concurrent_workers=2),
                       agents=Agents(TestDirector(specs),
                                     TestWorker(latency=0.3, fail=needs_a_person),
                                     TestStrategist()))
run = orch.start(sys.argv[2])
print(run.id, flush=True)
print(run.wait_sync(240, stop_on_pause=False).value, flush=True)
"""
HITL_OBJECTIVE = "Store the service's events durably"
HITL_TASK, HITL_TITLE = "t1", "Choose the storage engine"
GUIDANCE = "Use DuckDB: the analysts query the events with SQL."


# ----------------------------------------------------------------------------- helpers
def lab_url(lab: JupyterLab) -> str:
    return f"{lab.url}/lab?reset&token={lab.token}"


def open_lab(page, lab: JupyterLab) -> list[str]:
    """JupyterLab with nothing open but the launcher, its layout restored. Returns the list
    the page's uncaught exceptions go to."""
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(lab_url(lab))
    page.wait_for_function("() => window.jupyterapp && "
                           "window.jupyterapp.commands.hasCommand('agentorch:open-sidebar')")
    page.evaluate("() => window.jupyterapp.restored")
    # The launcher comes a moment after the restore (the reset workspace is saved first).
    page.wait_for_function("() => Array.from(window.jupyterapp.shell.widgets('main'))"
                           ".some(w => w.id.startsWith('launcher') && w.isVisible)")
    return errors


def open_sidebar(page, width: int | None = None):
    """Open the sidebar with its command; wait until both its lists have been fetched."""
    page.evaluate("async () => { await window.jupyterapp.restored;"
                  " await window.jupyterapp.commands.execute('agentorch:open-sidebar'); }")
    sidebar = page.locator(SIDEBAR)
    expect(sidebar).to_be_visible()
    # Loaded: each list shows either its items or its "nothing here" line.
    for section, item in ((".ao-runs-section", ".ao-run"), (".ao-queue", ".ao-interrupt")):
        expect(sidebar.locator(f"{section} .ao-empty:visible, {section} {item}:visible")
               .first).to_be_visible()
    if width:
        widen_left_area(page, width)
    return sidebar


def widen_left_area(page, width: int) -> None:
    """Drag the handle between the left area and the main area to ``width`` px."""
    box = page.locator(SIDEBAR).bounding_box()
    handle = page.locator("#jp-main-split-panel > .lm-SplitPanel-handle").first
    hb = handle.bounding_box()
    x, y = hb["x"] + hb["width"] / 2, hb["y"] + hb["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(box["x"] + width, y, steps=5)
    page.mouse.up()
    page.wait_for_function("([sel, w]) => Math.abs(document.querySelector(sel)"
                           ".getBoundingClientRect().width - w) < 20", arg=[SIDEBAR, width])


def run_row(page, run_id: str):
    return page.locator(f'{SIDEBAR} .ao-run[data-run-id="{run_id}"]')


def card(page, run_id: str, task_id: str):
    return page.locator(f'{SIDEBAR} .ao-interrupt[data-run-id="{run_id}"]'
                        f'[data-task-id="{task_id}"]')


def screenshot(page, name: str) -> None:
    page.wait_for_timeout(300)  # the last style changes and a frame
    page.screenshot(path=ARTIFACTS / name)


def api(lab: JupyterLab, path: str):
    return lab.api("GET", API + path)


def ansi_free(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def luminance(css_colour: str, over: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> float:
    """Relative luminance (0 black .. 1 white) of an ``rgb()``/``rgba()`` colour, its alpha
    composited over ``over`` (0..1 channels)."""
    parts = [float(v) for v in re.findall(r"[\d.]+", css_colour)]
    rgb, alpha = [p / 255 for p in parts[:3]], parts[3] if len(parts) > 3 else 1.0
    rgb = [alpha * c + (1 - alpha) * o for c, o in zip(rgb, over)]
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def progress_recorder(page) -> None:
    """From now on, note each run row's progress text as it changes (and no reload)."""
    page.evaluate("""() => {
      const seen = window.__aoProgress = {};
      const root = document.querySelector('#agentorch-runs');
      const note = () => {
        for (const row of root.querySelectorAll('.ao-run')) {
          const id = row.dataset.runId;
          const text = row.querySelector('.ao-progress-text').textContent;
          const list = seen[id] || (seen[id] = []);
          if (list[list.length - 1] !== text) list.push(text);
        }
      };
      new MutationObserver(note).observe(root, {subtree: true, childList: true,
                                                characterData: true});
    }""")


class Child:
    """A run driven by a subprocess of this test, in the server's environment: the script
    prints the run's id, then its final status."""

    def __init__(self, lab: JupyterLab, script: str, *args: str, timeout: float = 60) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", script, *args], env=lab.env,
                                     cwd=lab.root, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr),
                         daemon=True).start()
        try:
            self.run_id = self.line(timeout)
        except BaseException:
            self.kill()
            raise

    def _read_stdout(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)  # the process closed its output: it has ended

    def line(self, timeout: float) -> str:
        """The next line the script printed."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            line = None
        if line is None:
            raise RuntimeError(f"the run's process printed nothing more (within {timeout:.0f} "
                               "s); its stderr:\n" + "".join(self.stderr)[-3000:])
        return line

    def ending(self, timeout: float = 120) -> str:
        """The run's final status, once the process has exited."""
        status = self.line(timeout)
        self.proc.wait(timeout)
        return status

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def children():
    """Runs driven by subprocesses; killed, if still going, when the module ends."""
    started: dict[str, Child] = {}
    yield started
    for child in started.values():
        child.kill()


# ------------------------------------------------------------------------------ tests
def test_the_extension_is_installed_and_enabled(lab, page):
    errors = open_lab(page, lab)
    config = page.evaluate(
        "() => JSON.parse(document.getElementById('jupyter-config-data').textContent)")
    federated = {e["name"]: e for e in config["federated_extensions"]}
    assert "agentorch-nb" in federated, sorted(federated)
    assert "agentorch-nb" not in config.get("disabledExtensions", [])
    assert page.evaluate("() => window.jupyterapp.isPluginActivated('agentorch-nb:plugin')")
    for command in ("agentorch:open-sidebar", "agentorch:new-run", "agentorch:refresh",
                    "agentorch:open-queue"):
        assert page.evaluate("c => window.jupyterapp.commands.hasCommand(c)", command)

    # The same answers as a user's shell gets, in the server's environment.
    def jupyter(*args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "jupyter", *args], env=lab.env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return ansi_free(out.stdout + out.stderr)

    labext = jupyter("labextension", "list")
    assert re.search(r"^\s*agentorch-nb v\S+ enabled OK", labext, re.M), labext
    serverext = jupyter("server", "extension", "list")
    assert re.search(r"^\s*agentorch_nb enabled\s*$", serverext, re.M), serverext
    assert re.search(r"^\s*agentorch_nb \S+ OK\s*$", serverext, re.M), serverext
    # And the server answers on the extension's API.
    assert "runs" in api(lab, "/runs")
    assert errors == []


def test_a_run_started_in_a_notebook_is_listed_and_followed_live(lab, page, open_notebook):
    lab.write_notebook("sidebar_run.ipynb", [
        "#md A run in this kernel: the sidebar follows it",
        "import agentorch_nb as ao\n"
        "from agentorch_nb.testing import Agents, TestDirector, TestStrategist, TestWorker\n"
        "ws = ao.init_workspace('nbproj')\n"
        "specs = [ao.TaskSpec(f'Step {i}') for i in range(1, 9)]\n"
        "orch = ao.Orchestrator(ws.root, config=ao.Config(max_concurrent_workers=2),\n"
        "                       agents=Agents(TestDirector(specs), TestWorker(latency=0.3),\n"
        "                                     TestStrategist()))",
        "run = orch.start('Eight steps, two at a time')\nprint(run.id)",
        "await run.wait()\nprint(run.status.value)",
    ])
    nb = open_notebook("sidebar_run.ipynb")
    nb.run_cell(1)
    open_sidebar(page, width=SIDEBAR_WIDTH)
    progress_recorder(page)
    page.evaluate("() => { window.__aoSamePage = true; }")

    nb.run_cell(2)
    run_id = nb.output_text(2).strip()
    row = run_row(page, run_id)
    expect(row).to_have_count(1)
    expect(row.locator(".ao-objective")).to_have_text("Eight steps, two at a time")
    expect(row.locator(".ao-progress-text")).to_have_text("8/8", timeout=60_000)
    expect(row).to_have_attribute("data-status", "completed")
    expect(row.locator(".ao-progress")).to_have_attribute("aria-label", "8 of 8 tasks complete")
    nb.run_cell(3)
    assert nb.output_text(3).strip() == "completed"

    # Live: the row went through the steps in between (the sidebar's safety-net refetch is
    # every 30 s; this run took a few), in the same page, never reloaded.
    seen = page.evaluate("id => window.__aoProgress[id]", run_id)
    between = [t for t in seen if re.fullmatch(r"[1-7]/8", t)]
    assert between, f"the row showed only {seen}"
    done = [int(t.split("/")[0]) for t in seen if t.endswith("/8")]
    assert done == sorted(done), f"the progress went backwards: {seen}"
    assert page.evaluate("() => window.__aoSamePage === true")
    detail = api(lab, f"/runs/{run_id}")
    assert detail["run"]["status"] == "completed"
    assert {t["status"] for t in detail["tasks"]} == {"complete"} and len(detail["tasks"]) == 8
    screenshot(page, "sidebar-runs.png")
    assert nb.page_errors == []


def test_a_run_started_from_the_sidebar_runs_as_a_job(lab, page):
    ao.init_workspace(lab.root / "sideproj")
    errors = open_lab(page, lab)
    sidebar = open_sidebar(page, width=SIDEBAR_WIDTH)
    sidebar.locator(".ao-new-run").click()
    form = sidebar.locator("form.ao-new-run-form")
    expect(form).to_be_visible()
    form.get_by_label("Objective").fill(DEMO_OBJECTIVE)
    form.get_by_label("Workspace (folder relative to the server root)").fill("sideproj")
    form.get_by_label("Model").fill("demo")
    form.get_by_label("Workers").fill("3")
    screenshot(page, "sidebar-new-run.png")
    form.locator(".ao-submit").click()

    expect(form).to_be_hidden()
    job = sidebar.locator(".ao-jobs .ao-job")
    expect(job).to_have_count(1)
    expect(job).to_contain_text("Started job")
    job_id, run_id = job.get_attribute("data-job-id"), job.get_attribute("data-run-id")
    assert job_id.startswith("job-") and run_id.startswith("run-")
    described = api(lab, f"/jobs/{job_id}")
    assert described["run_id"] == run_id and described["notebook"].startswith("sideproj-runs/")

    row = run_row(page, run_id)
    expect(row).to_have_count(1, timeout=120_000)  # once the job's kernel has started it
    expect(row.locator(".ao-objective")).to_have_text(DEMO_OBJECTIVE)
    expect(row).to_have_attribute("data-status", "completed", timeout=240_000)
    expect(job).to_have_attribute("data-status", "completed", timeout=60_000)
    expect(job).to_contain_text(f"(run {run_id}): completed")
    assert api(lab, f"/runs/{run_id}")["run"]["status"] == "completed"

    # The job's notebook: linked from the job and from the run, and it opens in the lab.
    link = job.locator("a.ao-notebook")
    expect(link).to_be_visible()
    expect(row.locator("a.ao-notebook")).to_be_visible()
    notebook = api(lab, f"/jobs/{job_id}")["notebook"]
    assert (lab.root / notebook).is_file()
    link.click()
    page.wait_for_function(
        "p => { const w = window.jupyterapp.shell.currentWidget;"
        " return !!(w && w.context && w.context.path === p); }", arg=notebook)
    executed = json.loads((lab.root / notebook).read_text())
    assert executed["metadata"]["papermill"]["parameters"]["run_id"] == run_id
    assert errors == []


def test_a_task_waiting_for_a_human_notifies_and_shows_in_the_queue(lab, page, children):
    repo = ao.init_workspace(lab.root / "hitlproj").root
    errors = open_lab(page, lab)
    sidebar = open_sidebar(page, width=SIDEBAR_WIDTH)
    expect(sidebar.locator(".ao-queue .ao-empty")).to_be_visible()
    status_item = page.locator(".ao-status-item")
    expect(status_item).to_be_hidden()  # shown only while something waits

    # Driven by another process, after the page has loaded the (empty) queue: new.
    child = children["hitl"] = Child(lab, HITL_CHILD, str(repo), HITL_OBJECTIVE)
    waiting = card(page, child.run_id, HITL_TASK)
    expect(waiting).to_have_count(1, timeout=60_000)
    expect(waiting.locator(".ao-interrupt-title")).to_have_text(HITL_TITLE)
    expect(waiting.locator(".ao-interrupt-objective")).to_have_text(HITL_OBJECTIVE)
    expect(waiting.locator(".ao-interrupt-reason")).to_contain_text("a person must choose")

    toast = page.locator(".Toastify__toast").filter(
        has_text=f'"{HITL_TITLE}" is waiting for a human')
    expect(toast).to_have_count(1)
    expect(toast).to_have_class(re.compile(r"jp-Notification-Toast-warning"))
    expect(toast.get_by_role("button", name="Open queue")).to_be_visible()

    expect(status_item).to_be_visible()
    expect(status_item).to_have_attribute("data-waiting", "1")
    expect(status_item).to_have_text("1 waiting")
    row = run_row(page, child.run_id)
    expect(row.locator(".ao-waiting")).to_be_visible()
    expect(row.locator(".ao-waiting-count")).to_have_text("1")
    expect(sidebar.locator(".ao-queue .ao-empty")).to_be_hidden()

    queue = api(lab, "/interrupts")["interrupts"]
    assert [(i["run_id"], i["task_id"]) for i in queue] == [(child.run_id, HITL_TASK)]
    screenshot(page, "sidebar-queue.png")

    # The status-bar item opens the queue, its first card's first action focused.
    page.evaluate("() => window.jupyterapp.shell.collapseLeft()")
    expect(sidebar).to_be_hidden()
    status_item.click()
    expect(sidebar).to_be_visible()
    expect(waiting.locator("button.ao-retry")).to_be_focused()
    assert errors == []


def test_the_sidebar_renders_in_the_dark_theme(lab, page):
    errors = open_lab(page, lab)
    sidebar = open_sidebar(page, width=SIDEBAR_WIDTH)
    colours = "() => { const s = getComputedStyle(document.querySelector('#agentorch-runs'));" \
              " return [s.backgroundColor, s.color]; }"
    light_bg, _ = page.evaluate(colours)
    assert luminance(light_bg) > 0.7, light_bg
    try:
        page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme',"
                      " {theme: 'JupyterLab Dark'})")
        page.wait_for_function("() => document.body.dataset.jpThemeName === 'JupyterLab Dark'"
                               " && document.body.dataset.jpThemeLight === 'false'")
        page.wait_for_function(f"bg => ({colours})()[0] !== bg", arg=light_bg)
        background, text = page.evaluate(colours)
        bg = luminance(background)
        assert bg < 0.3, background
        bg_rgb = tuple(float(v) / 255 for v in re.findall(r"[\d.]+", background)[:3])
        assert luminance(text, over=bg_rgb) > 0.6, text
        # Its parts follow the theme too: a run's card and the buttons are not light boxes.
        for part in (".ao-run", ".ao-refresh"):
            if sidebar.locator(part).count():
                colour = sidebar.locator(part).first.evaluate(
                    "n => getComputedStyle(n).backgroundColor")
                if not colour.endswith(", 0)"):  # transparent: the sidebar's shows through
                    assert luminance(colour) < 0.3, (part, colour)
        screenshot(page, "sidebar-dark.png")
    finally:
        page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme',"
                      " {theme: 'JupyterLab Light'})")
        page.wait_for_function("() => document.body.dataset.jpThemeLight === 'true'")
    assert errors == []


def test_retry_from_the_sidebar_completes_the_waiting_task(lab, page, children):
    child = children.get("hitl")
    if child is None:
        pytest.skip("needs the run of test_a_task_waiting_for_a_human_notifies_...")
    errors = open_lab(page, lab)
    sidebar = open_sidebar(page, width=SIDEBAR_WIDTH)
    waiting = card(page, child.run_id, HITL_TASK)
    expect(waiting).to_have_count(1)

    waiting.locator("button.ao-retry").click()
    form = waiting.locator("form.ao-retry-form")
    expect(form).to_be_visible()
    expect(form.locator(".ao-retry-description")).to_have_value(
        "pick the engine the service stores events in")
    expect(form.locator(".ao-retry-criteria")).to_have_value(
        "the choice is recorded in DESIGN.md")
    form.get_by_label("Guidance for the next attempt").fill(GUIDANCE)
    form.get_by_role("button", name="Retry task").click()

    # The other process's engine applies it; the task completes, and the rest after it.
    expect(waiting).to_have_count(0, timeout=60_000)
    row = run_row(page, child.run_id)
    expect(row).to_have_attribute("data-status", "completed", timeout=60_000)
    expect(row.locator(".ao-progress-text")).to_have_text("4/4")
    expect(row.locator(".ao-waiting")).to_be_hidden()
    expect(sidebar.locator(".ao-queue .ao-empty")).to_be_visible()
    expect(page.locator(".ao-status-item")).to_be_hidden()
    assert child.ending() == "completed"

    detail = api(lab, f"/runs/{child.run_id}")
    assert detail["run"]["status"] == "completed" and not detail["run"]["live"]
    task = next(t for t in detail["tasks"] if t["id"] == HITL_TASK)
    assert task["status"] == "complete" and task["guidance"] == GUIDANCE
    # Recorded as a resolution that came over REST, from the server's user.
    resolutions = ao.sql("select source, payload from resolutions where run_id = ? and "
                         "task_id = ?", [child.run_id, HITL_TASK],
                         store=lab.root / "hitlproj" / ".agentorch" / "agentorch.duckdb")
    rows = resolutions.to_dict("records")
    assert len(rows) == 1 and rows[0]["source"].startswith("rest:"), rows
    assert GUIDANCE in str(rows[0]["payload"])
    screenshot(page, "sidebar-retried.png")
    assert errors == []


def test_the_new_run_button_is_reached_with_tab_and_opens_with_enter(lab, page):
    errors = open_lab(page, lab)
    sidebar = open_sidebar(page)
    form = sidebar.locator("form.ao-new-run-form")
    expect(form).to_be_hidden()
    # From the sidebar's own tab in the left bar, as a keyboard user gets there.
    page.locator('.jp-SideBar.jp-mod-left .lm-TabBar-tab[data-id="agentorch-runs"]').focus()
    path = []
    for _ in range(30):
        page.keyboard.press("Tab")
        focused = page.evaluate("() => document.activeElement.className || "
                                "document.activeElement.tagName")
        path.append(focused)
        if "ao-new-run" in focused.split():
            break
    else:
        pytest.fail(f"Tab never reached New run; it went through {path}")
    print(f"\nTab from the sidebar's tab to New run: {len(path)} presses")
    page.keyboard.press("Enter")
    expect(form).to_be_visible()
    expect(sidebar.locator(".ao-new-run")).to_have_attribute("aria-expanded", "true")
    expect(form.get_by_label("Objective")).to_be_focused()
    page.keyboard.press("Escape")
    expect(form).to_be_hidden()
    expect(sidebar.locator(".ao-new-run")).to_be_focused()
    assert errors == []


def test_event_to_sidebar_latency(lab, page):
    """Not a timing assertion: prints the figures (run pytest with -s to see them)."""
    spec = importlib.util.spec_from_file_location("sidebar_latency",
                                                  REPO / "bench" / "sidebar_latency.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    repo = ao.init_workspace(lab.root / "latencyproj").root
    errors = open_lab(page, lab)
    open_sidebar(page)
    result = bench.measure(lab, page, repo, tasks=60, workers=2, latency=0.05)
    print("\nengine -> page latency (a task's updated_at in the store -> Date.now() in the "
          "page), bench/sidebar_latency.py:\n" + bench.describe(result))
    assert result["missing_events"] == 0
    assert result["sidebar"]["n"] == 60
    expect(run_row(page, result["run_id"]).locator(".ao-progress-text")).to_have_text("60/60")
    assert errors == []
