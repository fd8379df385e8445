"""The DAG view's front end (agentorch_nb/widgets/dag.js) in headless Chromium: status
changes as diffs against status changes as whole snapshots.

    python bench/dag_widget_bench.py [--tasks 2000] [--changes 5000]   # ~1 min
    python bench/dag_widget_bench.py --check [--screenshots DIR]       # the interactions, ~5 s

Needs Playwright for Python and Chromium at /usr/bin/chromium (``--chromium`` for another).
Nothing goes over the network: bench/dag_harness.html, dag.js and dag.css are served from
127.0.0.1 and every other request is refused. The harness plays JupyterLab's part: a fake
anywidget model whose messages come from here, through ``page.evaluate``, as JSON text
(a kernel's comm messages are parsed in the page too, so parsing is part of the cost).

The graph is a random layered DAG like ``agentorch_nb.testing.random_dag`` (each task
depends on up to 3 of the 20 before it; ~1.5 edges per task), laid out by
``agentorch_nb.widgets._layout`` as the widget does (or, without it, by longest path and one
barycentre sweep here). After the snapshot, random status changes are streamed:

- diff: each change is one ``diff`` message for one task, ``--batch`` messages per
  ``page.evaluate``; the view applies each batch in one animation frame.
- full, per change: each change resends the whole ``snapshot`` and each one is drawn, one
  per frame. This is what a widget syncing the graph as one big trait does: every change
  of the trait re-renders the view.
- full, batched: whole snapshots again, ``--full-batch`` per ``page.evaluate``; the view
  draws only the last snapshot of a frame, so this is the cheapest a full-state protocol
  gets in the page. Every snapshot is still sent and parsed.

Columns, all measured in the page (Playwright's own transfer of the messages, ~10 MB/s,
is left out: it stands for the kernel -> browser path, whose cost "bytes/change" shows):

- changes/s: changes divided by the time from each batch reaching the page to its frame
  being painted (parsing, the view's frame callback, style, layout, paint, and waiting for
  the frame, which includes raster of the previous one). The sustained rate of applied,
  drawn changes.
- changes/s busy: the same over main-thread time only (parse and dispatch + the view's frame
  callback + that frame's style, layout and paint): what the view could absorb back to back.
- bytes/change: ``len(json.dumps(message))`` per change.
- p95 frame ms: 95th percentile of the intervals between animation frames while the mode
  ran (16.7 is 60 fps); p95 busy ms: of main-thread time per delivered batch.

After the modes it drags the background across the view, fitted (2,000 nodes a few pixels
each) and zoomed in to labels, and prints the p95 frame interval of each. Chromium runs
with ``--disable-gpu``: raster is in software on the CPU, so frames cost more than on a
desktop with a GPU; compare the rows, not the absolute times.

Each mode ends by reading the page: the number of ``g.ao-node`` and ``path.ao-edge``
elements, and for sampled tasks ``data-status`` and the rect's fill must match the last
change sent, and the view must not have asked for a sync (which would mean it dropped
diffs). Exit status 1 if any check fails.
"""

from __future__ import annotations

import argparse
import http.server
import importlib.util
import json
import random
import statistics
import sys
import threading
from collections import defaultdict
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
FILES = {
    "/": (ROOT / "bench" / "dag_harness.html", "text/html"),
    "/dag.js": (ROOT / "agentorch_nb" / "widgets" / "dag.js", "text/javascript"),
    "/dag.css": (ROOT / "agentorch_nb" / "widgets" / "dag.css", "text/css"),
}
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
PALETTE = {"planned": "#9ca3af", "ready": "#64748b", "active": "#3b82f6",
           "awaiting_qa": "#f97316", "complete": "#22c55e", "failed": "#ef4444",
           "waiting_human": "#eab308", "abandoned": "#d1d5db"}
STATUSES = list(PALETTE)
PROFILES = ["code", "test", "write", "research"]
WORDS = ("add parse config test cli flag json docs refactor cache retry schema store "
         "worker merge lint type check report index query").split()


# ---- serving the harness ---------------------------------------------------------------

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the http.server API)
        entry = FILES.get(self.path.split("?")[0])
        if entry is None:
            self.send_error(404)
            return
        body = entry[0].read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", f"{entry[1]}; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def serve() -> http.server.ThreadingHTTPServer:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)  # port 0: a free one
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def open_harness(browser, port: int, *, theme: str = "light") -> Page:
    page = browser.new_page(viewport={"width": 1000, "height": 700})
    origin = f"http://127.0.0.1:{port}/"
    # Offline by construction: anything but the local server is refused.
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(origin)
               else route.abort())
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    page.errors = errors  # type: ignore[attr-defined]
    page.goto(f"{origin}?theme={theme}")
    page.wait_for_function("window.aoReady === true")
    return page


# ---- the graph ---------------------------------------------------------------------------

def project_layout():
    """agentorch_nb.widgets._layout.layout, loaded from its file (it needs only the standard
    library, the package's __init__ would import the whole orchestrator); None if absent."""
    path = ROOT / "agentorch_nb" / "widgets" / "_layout.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("_agentorch_layout", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.layout


def random_graph(n: int, seed: int) -> tuple[list[dict], list[list[str]], int, int, str]:
    """Nodes (with layer and order) and edges [dependency, dependent] of a random DAG, the
    number of layers, the widest layer, and which layout placed them."""
    rng = random.Random(seed)
    deps: list[list[int]] = []
    for i in range(n):
        lo = max(0, i - 20)
        deps.append(sorted(rng.sample(range(lo, i), min(i - lo, rng.randint(0, 3)))) if i else [])
    edges = [[f"t{d + 1}", f"t{i + 1}"] for i in range(n) for d in deps[i]]
    titles = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6))) for _ in range(n)]
    profiles = [rng.choice(PROFILES) for _ in range(n)]

    def node(i: int, layer: int, order: float) -> dict:
        return {"id": f"t{i + 1}", "title": titles[i], "status": "planned",
                "profile": profiles[i], "layer": layer, "order": order}

    layout = project_layout()
    if layout is not None:
        pos = layout([f"t{i + 1}" for i in range(n)], [tuple(e) for e in edges])
        nodes = [node(i, *pos[f"t{i + 1}"]) for i in range(n)]
        layers = 1 + max(p.layer for p in pos.values())
        width = 1 + max(int(p.order) for p in pos.values())
        return nodes, edges, layers, width, "agentorch_nb.widgets._layout"

    # Without the project's layout: longest path, then one barycentre sweep.
    layer = [0] * n
    for i in range(n):  # indices are a topological order
        layer[i] = 1 + max((layer[d] for d in deps[i]), default=-1)
    by_layer: dict[int, list[int]] = defaultdict(list)
    for i in range(n):
        by_layer[layer[i]].append(i)
    order = [0.0] * n
    for lay in sorted(by_layer):
        # One barycentre sweep: a task sits near the mean row of its dependencies.
        members = sorted(by_layer[lay], key=lambda i: (statistics.fmean(order[d] for d in deps[i])
                                                       if deps[i] else 0.0, i))
        for row, i in enumerate(members):
            order[i] = float(row)
    nodes = [node(i, layer[i], order[i]) for i in range(n)]
    return nodes, edges, len(by_layer), max(len(m) for m in by_layer.values()), "the bench's own"


class Graph:
    """The kernel's side: the graph, its version, and the messages a change turns into."""

    def __init__(self, n: int, seed: int) -> None:
        self.nodes, self.edges, self.layers, self.width, self.layout = random_graph(n, seed)
        self.index = {node["id"]: node for node in self.nodes}
        self.version = 0

    def snapshot(self) -> dict:
        return {"kind": "snapshot", "version": self.version, "nodes": self.nodes,
                "edges": self.edges, "layers": self.layers, "width": self.width}

    def change(self, task: str, status: str) -> dict:
        base = self.version
        self.version += 1
        self.index[task]["status"] = status
        return {"kind": "diff", "version": self.version, "base": base,
                "nodes": [{"id": task, "status": status}], "add_edges": [], "remove_edges": []}


def random_changes(graph: Graph, count: int, rng: random.Random) -> list[tuple[str, str]]:
    ids = list(graph.index)
    out = []
    for _ in range(count):
        task = rng.choice(ids)
        out.append((task, rng.choice([s for s in STATUSES if s != graph.index[task]["status"]])))
    return out


# ---- measuring -------------------------------------------------------------------------

def p95(values: list[float]) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]


def run_mode(page: Page, name: str, batches: list[list[str]], changes: int) -> dict:
    nbytes = sum(len(text) for batch in batches for text in batch)
    page.evaluate("ao.framesStart()")
    busy: list[float] = []
    shown: list[float] = []
    for batch in batches:
        t = page.evaluate("texts => ao.deliver(texts)", batch)
        busy.append(t["dispatch"] + t["apply"] + t["render"])
        shown.append(t["wall"])
    frames = page.evaluate("ao.framesStop()")
    return {"mode": name, "changes": changes, "rate": changes / (sum(shown) / 1000),
            "busy_rate": changes / (sum(busy) / 1000), "bytes": nbytes / changes,
            "p95_frame": p95(frames), "p95_busy": p95(busy)}


def pan(page: Page) -> float:
    """p95 frame interval while the background is dragged across the view."""
    page.evaluate("ao.framesStart()")
    page.mouse.move(700, 400)
    page.mouse.down()
    for i in range(60):
        page.mouse.move(700 - 8 * i, 400 - 3 * (i % 10))
    page.mouse.up()
    return p95(page.evaluate("ao.framesStop()"))


def verify(page: Page, graph: Graph, rng: random.Random, label: str) -> list[str]:
    """What the page shows against what was sent; a list of failures."""
    problems = []
    shown = page.evaluate("""() => ({
        nodes: document.querySelectorAll('g.ao-node[data-id][data-status]').length,
        edges: document.querySelectorAll('path.ao-edge[data-from][data-to]').length,
        syncs: ao.sent().filter(m => m.kind === 'sync').length})""")
    if shown["nodes"] != len(graph.nodes):
        problems.append(f"{label}: {shown['nodes']} nodes in the DOM, {len(graph.nodes)} sent")
    if shown["edges"] != len(graph.edges):
        problems.append(f"{label}: {shown['edges']} edges in the DOM, {len(graph.edges)} sent")
    if shown["syncs"] != 1:
        problems.append(f"{label}: the view asked for a sync {shown['syncs'] - 1} more time(s): "
                        "it found a version gap and dropped diffs")
    sample = rng.sample(graph.nodes, min(25, len(graph.nodes)))
    got = page.evaluate("""ids => ids.map(id => {
        const g = document.querySelector(`g.ao-node[data-id="${id}"]`);
        return g && [g.getAttribute('data-status'), g.querySelector('rect').getAttribute('fill')];
    })""", [node["id"] for node in sample])
    for node, seen in zip(sample, got):
        want = [node["status"], PALETTE[node["status"]]]
        if seen != want:
            problems.append(f"{label}: {node['id']} shows {seen}, last sent {want}")
    return problems


def bench(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    graph = Graph(args.tasks, args.seed)
    problems: list[str] = []
    results = []
    with sync_playwright() as p, _served() as port:
        browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        page = open_harness(browser, port)
        page.evaluate("s => ao.mount(s)", {"palette": PALETTE, "selected": "", "link_mode": False,
                                           "error": "", "height": 600})
        if page.evaluate("ao.sent()") != [{"kind": "sync"}]:
            problems.append("the view did not ask for a sync when it rendered")

        text = json.dumps(graph.snapshot())
        first = page.evaluate("texts => ao.deliver(texts)", [text])
        print(f"{args.tasks} tasks, {len(graph.edges)} edges, {graph.layers} layers, "
              f"up to {graph.width} per layer ({graph.layout} layout); snapshot "
              f"{len(text) / 1024:.0f} KiB, first draw "
              f"{first['dispatch'] + first['apply'] + first['render']:.0f} ms (parse "
              f"{first['dispatch']:.0f}, DOM {first['apply']:.0f}, style/layout/paint "
              f"{first['render']:.0f})\n")

        # The message texts are made before each mode starts, so Python's json.dumps is
        # not in the timings.
        texts = [json.dumps(graph.change(t, s)) for t, s in random_changes(graph, args.changes, rng)]
        batches = [texts[i:i + args.batch] for i in range(0, len(texts), args.batch)]
        results.append(run_mode(page, "diff", batches, len(texts)))
        problems += verify(page, graph, rng, "diff")

        for name, size in (("full, per change", 1), ("full, batched", args.full_batch)):
            texts = []
            for task, status in random_changes(graph, args.full_changes, rng):
                graph.change(task, status)
                texts.append(json.dumps(graph.snapshot()))
            batches = [texts[i:i + size] for i in range(0, len(texts), size)]
            results.append(run_mode(page, name, batches, len(texts)))
            problems += verify(page, graph, rng, name)

        pans = [pan(page)]
        page.mouse.move(480, 350)
        for _ in range(25):  # to scale 1 or more: labels, arrowheads, halos are drawn
            page.mouse.wheel(0, -120)
            page.evaluate("ao.afterFrame()")
        pans.append(pan(page))
        scale = page.evaluate("document.querySelector('.ao-viewport')"
                              ".transform.baseVal.consolidate().matrix.a")

        if not page.evaluate("ao.unmount()"):
            problems.append("the view left handlers on the model after its cleanup")
        problems += [f"page error: {e}" for e in page.errors]  # type: ignore[attr-defined]
        browser.close()

    print(f"{'mode':<18}{'changes':>8}{'changes/s':>11}{'changes/s busy':>16}"
          f"{'bytes/change':>14}{'p95 frame ms':>14}{'p95 busy ms':>13}")
    for r in results:
        print(f"{r['mode']:<18}{r['changes']:>8}{r['rate']:>11,.0f}{r['busy_rate']:>16,.0f}"
              f"{r['bytes']:>14,.0f}{r['p95_frame']:>14.1f}{r['p95_busy']:>13.1f}")
    diff = results[0]
    for full in results[1:]:
        print(f"diff vs {full['mode']}: {diff['rate'] / full['rate']:,.0f}x the changes/s "
              f"({diff['busy_rate'] / full['busy_rate']:,.0f}x busy), 1/"
              f"{full['bytes'] / diff['bytes']:,.0f} of the bytes per change, p95 frame "
              f"{diff['p95_frame']:.1f} vs {full['p95_frame']:.1f} ms")
    print(f"pan (drag): p95 frame {pans[0]:.1f} ms fitted, {pans[1]:.1f} ms at scale {scale:.1f}")
    for problem in problems:
        print("ERROR", problem)
    if not problems:
        print("\nchecked: node and edge counts, sampled statuses and fills, no dropped diffs, cleanup")
    return 1 if problems else 0


# ---- the interaction check -------------------------------------------------------------

def _small_graph() -> dict:
    rows = [("t1", "Write the parser", "complete", "code", 0, 0),
            ("t2", "Design the JSON output format for every command", "active", "write", 0, 1),
            ("t3", "Tests of the parser", "awaiting_qa", "test", 1, 0),
            ("t4", "--json flag", "planned", "code", 1, 1),
            ("t5", "Docs", "waiting_human", "write", 2, 0),
            ("t6", "Release notes", "abandoned", "write", 3, 0.5)]
    keys = ("id", "title", "status", "profile", "layer", "order")
    return {"kind": "snapshot", "version": 1, "layers": 4, "width": 2,
            "nodes": [dict(zip(keys, row)) for row in rows],
            "edges": [["t1", "t3"], ["t1", "t4"], ["t2", "t4"], ["t3", "t5"], ["t4", "t6"], ["t5", "t6"]]}


SMALL = _small_graph()


def check(args: argparse.Namespace) -> int:
    failures: list[str] = []

    def expect(ok: bool, what: str) -> None:
        print(("ok    " if ok else "FAIL  ") + what)
        if not ok:
            failures.append(what)

    def send(page: Page, msg: dict) -> None:
        page.evaluate("texts => ao.deliver(texts)", [json.dumps(msg)])

    node = 'g.ao-node[data-id="{}"]'.format
    with sync_playwright() as p, _served() as port:
        browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        for theme in ("light", "dark"):
            page = open_harness(browser, port, theme=theme)
            page.evaluate("s => ao.mount(s)", {"palette": PALETTE, "selected": "", "link_mode": False,
                                               "error": "", "height": 420})
            expect(page.evaluate("ao.sent()") == [{"kind": "sync"}], f"[{theme}] render sends sync")
            send(page, SMALL)
            page.evaluate("ao.afterFrame()")  # the ResizeObserver's fit
            expect(page.locator("g.ao-node").count() == 6, f"[{theme}] 6 nodes drawn")
            expect(page.locator("path.ao-edge").count() == 6, f"[{theme}] 6 edges drawn")
            expect(page.locator(node("t3") + " rect").get_attribute("fill") == PALETTE["awaiting_qa"],
                   f"[{theme}] rect fill comes from the palette")
            expect(page.locator(".ao-legend .ao-legend-item").count() == len(PALETTE),
                   f"[{theme}] legend lists the palette")
            ends = page.evaluate("""() => ['t4', 't5'].map(d => document.querySelector(
                `path.ao-edge[data-from="${d}"][data-to="t6"]`).getPointAtLength(1e9).y)""")
            expect(ends[0] != ends[1], f"[{theme}] two arrows into t6 end at different points {ends}")
            if args.screenshots:
                Path(args.screenshots).mkdir(parents=True, exist_ok=True)
                page.evaluate("ao.pySet('selected', 't4')")
                page.screenshot(path=str(Path(args.screenshots) / f"dag_{theme}.png"))
                page.evaluate("ao.pySet('selected', '')")
            if theme == "dark":
                page.close()
                continue

            page.click(node("t3"))
            expect(page.evaluate("ao.state('selected')") == "t3", "a click selects the node")
            expect(page.evaluate("ao.model.saves.at(-1).selected") == "t3", "... and saves it")
            expect("ao-selected" in page.get_attribute(node("t3"), "class"), "... and highlights it")
            page.evaluate("ao.pySet('selected', 't5')")
            expect("ao-selected" not in page.get_attribute(node("t3"), "class")
                   and "ao-selected" in page.get_attribute(node("t5"), "class"),
                   "the highlight follows Python's selected")

            page.click(".ao-link-toggle")
            expect(page.evaluate("ao.state('link_mode')") is True
                   and page.get_attribute(".ao-link-toggle", "aria-pressed") == "true",
                   "the toggle turns link mode on")
            page.click(node("t2"))
            expect("ao-picked" in page.get_attribute(node("t2"), "class"), "first click picks the dependency")
            page.click(node("t5"))
            expect(page.evaluate("ao.sent().at(-1)") == {"kind": "add_dependency", "task": "t5",
                                                         "depends_on": "t2"},
                   "second click sends add_dependency(task=t5, depends_on=t2)")
            expect(page.locator("path.ao-edge").count() == 6, "... without adding the edge locally")

            sent = page.evaluate("ao.sent().length")
            page.click(node("t6"))
            page.click(node("t1"))
            banner = page.locator(".ao-dag-error")
            expect(banner.is_visible() and banner.inner_text().startswith(
                "refused: this dependency would close the cycle t1 -> t6 -> t4 -> t1"),
                f"a cycle is refused in the banner: {banner.inner_text()!r}")
            expect(page.evaluate("ao.state('error')").endswith("cycle t1 -> t6 -> t4 -> t1")
                   and page.evaluate("ao.sent().length") == sent, "... saved as error, nothing sent")
            page.click(node("t1"))
            page.click(node("t3"))
            expect("already depends" in page.evaluate("ao.state('error')")
                   and page.evaluate("ao.sent().length") == sent, "an existing edge is refused")
            page.click(node("t4"))
            page.click(node("t4"))
            expect(page.evaluate("ao.sent().length") == sent and page.locator(".ao-picked").count() == 0,
                   "clicking the picked node again cancels")
            page.click(node("t4"))
            page.keyboard.press("Escape")
            expect(page.locator(".ao-picked").count() == 0, "Esc cancels the pick")
            page.evaluate("ao.pySet('error', '')")
            expect(not banner.is_visible(), "error '' hides the banner")

            # An edge: click the middle of its curve, on screen.
            x, y = page.evaluate("""() => {
                const hit = document.querySelector('path.ao-edge[data-from="t4"][data-to="t6"]')
                    .previousElementSibling;
                const pt = hit.getPointAtLength(hit.getTotalLength() / 2)
                    .matrixTransform(hit.getScreenCTM());
                return [pt.x, pt.y]; }""")
            page.mouse.click(x, y)
            expect(page.evaluate("ao.sent().at(-1)") == {"kind": "remove_dependency", "task": "t6",
                                                         "depends_on": "t4"},
                   "a click on an edge sends remove_dependency(task=t6, depends_on=t4)")

            send(page, {"kind": "diff", "version": 2, "base": 1,
                        "nodes": [{"id": "t4", "status": "active"}],
                        "add_edges": [["t2", "t5"]], "remove_edges": [["t4", "t6"]]})
            expect(page.get_attribute(node("t4"), "data-status") == "active"
                   and page.get_attribute(node("t4") + " rect", "fill") == PALETTE["active"],
                   "a diff changes data-status and fill")
            expect(page.locator('path.ao-edge[data-from="t2"][data-to="t5"]').count() == 1
                   and page.locator('path.ao-edge[data-from="t4"][data-to="t6"]').count() == 0,
                   "a diff adds and removes edges")
            end = page.evaluate("""() => document.querySelector('path.ao-edge[data-to="t6"]')
                .getPointAtLength(1e9).y""")
            send(page, {"kind": "diff", "version": 3, "base": 2, "nodes": [{"id": "t6", "order": 3}],
                        "add_edges": [], "remove_edges": []})
            moved = page.evaluate("""() => [+document.querySelector('g.ao-node[data-id="t6"] rect')
                .getAttribute('y'), document.querySelector('path.ao-edge[data-to="t6"]')
                .getPointAtLength(1e9).y]""")
            expect(moved[0] == 3 * 36 and moved[1] > end, "a diff that moves a node moves its edges")
            syncs = page.evaluate("ao.sent().filter(m => m.kind === 'sync').length")
            send(page, {"kind": "diff", "version": 9, "base": 8, "nodes": [{"id": "t4", "status": "failed"}],
                        "add_edges": [], "remove_edges": []})
            expect(page.get_attribute(node("t4"), "data-status") == "active"
                   and page.evaluate("ao.sent().filter(m => m.kind === 'sync').length") == syncs + 1,
                   "a diff after a gap is ignored and a sync is sent")

            page.click(".ao-link-toggle")
            expect(page.evaluate("ao.state('link_mode')") is False
                   and page.get_attribute(".ao-link-toggle", "aria-pressed") == "false",
                   "the toggle turns link mode off")
            before = page.get_attribute(".ao-viewport", "transform")
            page.mouse.move(500, 300)
            page.mouse.wheel(0, -300)
            page.evaluate("ao.afterFrame()")  # mouse.wheel does not wait for the event
            expect(page.get_attribute(".ao-viewport", "transform") != before, "the wheel zooms")
            page.click(".ao-fit")
            expect(page.get_attribute(".ao-viewport", "transform") == before, "Fit restores the fitted view")
            page.evaluate("ao.pySet('height', 300)")
            expect(page.evaluate("document.querySelector('.ao-dag').getBoundingClientRect().height") == 300,
                   "the height trait sizes the view")
            expect(page.evaluate("ao.unmount()"), "cleanup removes the view's model handlers")
            expect(not page.errors, f"no page errors {page.errors}")  # type: ignore[attr-defined]
            page.close()
        browser.close()
    print(f"\n{'FAILED: ' + str(len(failures)) if failures else 'all passed'}")
    if args.screenshots:
        print(f"screenshots in {args.screenshots}")
    return 1 if failures else 0


class _served:
    def __enter__(self) -> int:
        self.server = serve()
        return self.server.server_address[1]

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--changes", type=int, default=5000, help="status changes sent as diffs")
    parser.add_argument("--full-changes", type=int, default=100,
                        help="status changes sent as whole snapshots, in each full mode")
    parser.add_argument("--batch", type=int, default=100, help="diffs per page.evaluate")
    parser.add_argument("--full-batch", type=int, default=10,
                        help="snapshots per page.evaluate in the 'full, batched' mode")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--check", action="store_true", help="run the interaction check instead")
    parser.add_argument("--screenshots", help="with --check: save light and dark screenshots here")
    args = parser.parse_args()
    return check(args) if args.check else bench(args)


if __name__ == "__main__":
    sys.exit(main())
