"""How long an engine's change takes to reach the "Agent runs" sidebar, in a real JupyterLab.

    python bench/sidebar_latency.py [--tasks 60] [--workers 2] [--latency 0.05] [--repeat 3]

Starts its own JupyterLab (``tests/browser/lab.py``) and headless Chromium (Debian's, as the
browser tests use it; nothing is downloaded), opens the sidebar, and has another process
drive a run of ``--tasks`` independent, quick tasks (``TestWorker(latency=...)``, the run
lasts about two seconds) in a workspace under the server's root. In the page, a listener on
``window.jupyterapp.serviceManager.events.stream`` (connected after the sidebar's own, so it
sees an event once the sidebar has handled it) stores ``Date.now()`` for every agentorch
event, and a ``MutationObserver`` on the sidebar stores when each run row's progress text
(``done/total``) changed. When the run has ended, the tasks' ``updated_at`` is read from the
store: the engine's own time for each task's last change (its completion). Printed, in ms:

- event: a task's ``complete`` event reaching the page, minus the task's ``updated_at``
  (the engine's write, the store's batched commit, the UDP notice, the server's feed, the
  event bus and its websocket, the page's dispatch);
- run_event: the first ``run`` event whose totals count ``k`` tasks complete, minus the
  engine's k-th completion (the sidebar's progress follows these);
- sidebar: the row's progress text first showing ``k`` or more tasks complete, minus the
  engine's k-th completion. A run the sidebar has not listed yet gets its row only from a
  ``GET /runs`` (which waits for the engine's hold on the store file), so the first
  completions also pay for that;
- sidebar_after_row: the same, for the completions after the row appeared.

Also: when the run's first event and its row came, after its creation (``created_at``). Both
clocks are this machine's. Task events do not carry ``updated_at`` (their schema has no such
field), hence the read of the store afterwards. :func:`measure` is also what
``tests/browser/test_sidebar.py`` runs, on its own server and page.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# A run of quick independent tasks, driven in its own process: prints its id, then its end.
CHILD = r"""
import sys
import agentorch_nb as ao
from agentorch_nb.testing import Agents, TestDirector, TestStrategist, TestWorker

repo, n, workers, latency = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
specs = [ao.TaskSpec(f"quick {i}") for i in range(1, n + 1)]
orch = ao.Orchestrator(repo, config=ao.Config(max_concurrent_workers=workers),
                       agents=Agents(TestDirector(specs), TestWorker(latency=latency),
                                     TestStrategist()))
run = orch.start(f"{n} quick tasks")
print(run.id, flush=True)
print(run.wait_sync(300).value, flush=True)
"""

# Installed in the page once the sidebar is open: what arrived, and when the rows changed.
RECORDER = r"""
() => {
  const rec = window.__aoLatency = {events: [], dom: []};
  const AO = 'https://agentorch.dev/events/';
  window.jupyterapp.serviceManager.events.stream.connect((_, e) => {
    if (typeof e.schema_id === 'string' && e.schema_id.startsWith(AO)) {
      rec.events.push({t: Date.now(), kind: e.schema_id.slice(AO.length), run_id: e.run_id,
                       task_id: e.task_id ?? null, status: e.status ?? null,
                       counts: e.counts ?? null, updated_at: e.updated_at ?? null});
    }
  });
  const root = document.getElementById('agentorch-runs');
  const last = {};
  new MutationObserver(() => {
    const t = Date.now();
    for (const row of root.querySelectorAll('.ao-run')) {
      const id = row.dataset.runId;
      const text = row.querySelector('.ao-progress-text').textContent;
      if (last[id] !== text) {
        last[id] = text;
        rec.dom.push({t, run_id: id, text});
      }
    }
  }).observe(root, {subtree: true, childList: true, characterData: true});
}
"""


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def epoch_ms(value) -> float:
    """A store timestamp (naive UTC datetime) as milliseconds since the epoch."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value.replace(tzinfo=dt.UTC).timestamp() * 1000


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "min": min(values), "p50": percentile(values, 50),
            "p95": percentile(values, 95), "max": max(values)}


def measure(lab, page, repo: Path, *, tasks: int = 60, workers: int = 2,
            latency: float = 0.05, timeout: float = 120) -> dict:
    """Drive one run of ``tasks`` quick tasks in another process while ``page`` (a lab page
    with the sidebar open) records. Returns the figures of the module's doc: ``event``,
    ``run_event``, ``sidebar`` and ``sidebar_after_row`` as ``{"n", "min", "p50", "p95",
    "max"}`` in ms, and ``run_ms``, ``first_run_event_ms``, ``row_ms`` (after creation)."""
    from agentorch_nb.store import Store

    page.evaluate(RECORDER)
    proc = subprocess.run([sys.executable, "-c", CHILD, str(repo), str(tasks), str(workers),
                           str(latency)], env=lab.env, cwd=lab.root, capture_output=True,
                          text=True, timeout=timeout)
    lines = proc.stdout.split()
    if proc.returncode or lines[-1:] != ["completed"]:
        raise RuntimeError(f"the latency run failed:\n{proc.stdout}{proc.stderr[-3000:]}")
    run_id = lines[0]
    # The last run event (the totals after the last completion) may still be on its way.
    page.wait_for_function(
        "([id, n]) => window.__aoLatency.dom.some(d => d.run_id === id && d.text === `${n}/${n}`)",
        arg=[run_id, tasks], timeout=30_000)
    rec = page.evaluate("() => window.__aoLatency")

    store = Store.open(repo / ".agentorch" / "agentorch.duckdb", create=False)
    try:
        rows = store.rows("select task_id, status, updated_at from tasks where run_id = ?",
                          [run_id])
        (run,) = store.rows("select created_at from runs where run_id = ?", [run_id])
    finally:
        store.close()
    done_at = {r["task_id"]: epoch_ms(r["updated_at"]) for r in rows if r["status"] == "complete"}
    if len(done_at) != tasks:
        raise RuntimeError(f"{len(done_at)} of {tasks} tasks are complete in the store")
    completions = sorted(done_at.values())  # the engine's k-th completion at [k - 1]

    arrived: dict[str, float] = {}
    totals = []  # (time, tasks complete) as the run events said, in order of arrival
    for e in rec["events"]:
        if e["run_id"] != run_id:
            continue
        if e["kind"] == "task" and e["status"] == "complete":
            arrived.setdefault(e["task_id"], e["t"])
        elif e["kind"] == "run":
            totals.append((e["t"], (e["counts"] or {}).get("complete", 0)))
    event = [arrived[t] - done_at[t] for t in done_at if t in arrived]

    shown = []  # (time, tasks complete) as the row showed them, in order
    for d in rec["dom"]:
        if d["run_id"] == run_id and "/" in d["text"]:
            shown.append((d["t"], int(d["text"].split("/")[0])))

    def kth(seen: list[tuple[float, int]], since: float = float("-inf")) -> list[float]:
        """For each completion after ``since``: when ``seen`` first counted it, minus when
        the engine did."""
        out = []
        for k, t_engine in enumerate(completions, start=1):
            first = next((t for t, n in seen if n >= k), None)
            if first is not None and t_engine >= since:
                out.append(first - t_engine)
        return out

    regressions = sum(1 for (_, a), (_, b) in zip(shown, shown[1:]) if b < a)
    row_at = shown[0][0]
    created = epoch_ms(run["created_at"])
    return {"run_id": run_id, "tasks": tasks, "missing_events": tasks - len(event),
            "regressions": regressions, "run_ms": completions[-1] - created,
            "first_run_event_ms": totals[0][0] - created if totals else None,
            "row_ms": row_at - created,
            "event": summary(event), "run_event": summary(kth(totals)),
            "sidebar": summary(kth(shown)),
            "sidebar_after_row": summary(kth(shown, since=row_at) or [float("nan")])}


def describe(result: dict) -> str:
    def line(name: str) -> str:
        s = result[name]
        return (f"{name:>17}: p50 {s['p50']:6.1f} ms  p95 {s['p95']:6.1f} ms  "
                f"(min {s['min']:.1f}, max {s['max']:.1f}, n={s['n']})")
    head = (f"run {result['run_id']}: {result['tasks']} tasks in {result['run_ms']:.0f} ms; "
            f"its first run event {result['first_run_event_ms'] or float('nan'):.0f} ms and "
            f"its row {result['row_ms']:.0f} ms after its creation")
    if result["missing_events"]:
        head += f"; {result['missing_events']} complete events never arrived"
    if result["regressions"]:
        head += f"; the row's count went down {result['regressions']} times"
    return "\n".join([head] + [line(n) for n in ("event", "run_event", "sidebar",
                                                   "sidebar_after_row")])


def open_sidebar(page, lab) -> None:
    page.goto(f"{lab.url}/lab?reset&token={lab.token}")
    page.wait_for_function("() => window.jupyterapp && "
                           "window.jupyterapp.commands.hasCommand('agentorch:open-sidebar')")
    page.evaluate("async () => { await window.jupyterapp.restored;"
                  " await window.jupyterapp.commands.execute('agentorch:open-sidebar'); }")
    page.locator("#agentorch-runs .ao-queue .ao-empty").wait_for(state="visible")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=60)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--latency", type=float, default=0.05,
                        help="seconds each task's worker sleeps")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = parser.parse_args()

    import agentorch_nb as ao
    from playwright.sync_api import sync_playwright

    from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, VIEWPORT
    from tests.browser.lab import PAGE_HELPERS, JupyterLab

    base = Path(tempfile.mkdtemp(prefix="sidebar-latency-"))
    lab = JupyterLab.start(base, base / "jupyterlab.log")
    results = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            context = browser.new_context(viewport=VIEWPORT)
            context.add_init_script(PAGE_HELPERS)
            page = context.new_page()
            open_sidebar(page, lab)
            for i in range(args.repeat):
                repo = ao.init_workspace(lab.root / f"latency{i}").root
                time.sleep(1)  # let the page settle after the last run's refetches
                result = measure(lab, page, repo, tasks=args.tasks, workers=args.workers,
                                 latency=args.latency)
                results.append(result)
                print(describe(result), flush=True)
            browser.close()
    finally:
        lab.stop()
        shutil.rmtree(base, ignore_errors=True)
    if len(results) > 1:
        print(f"median over {len(results)} runs:")
        for name in ("event", "run_event", "sidebar", "sidebar_after_row"):
            print(f"{name:>17}: p50 {percentile([r[name]['p50'] for r in results], 50):6.1f} ms"
                  f"  p95 {percentile([r[name]['p95'] for r in results], 50):6.1f} ms")
        print(f"{'row after':>17}: {percentile([r['row_ms'] for r in results], 50):6.0f} ms "
              f"(max {max(r['row_ms'] for r in results):.0f}) after the run's creation")
    if args.json:
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
