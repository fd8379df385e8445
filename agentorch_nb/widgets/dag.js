// The DAG view of a run: the front end of widgets/dag.py (an anywidget ES module).
//
// Hand-written, no build step, no imports: a notebook may be offline, and anywidget loads
// the module from a string, so it cannot import its neighbours either; hence one file.
//
// The protocol with dag.py:
//   traits     palette {status: colour}, selected (task id or ""), link_mode, error ("" hides
//              the banner), height (px).
//   Python ->  {kind: "snapshot", version, nodes: [{id, title, status, profile, layer, order}],
//               edges: [[dependency, dependent]], layers, width}   replaces the graph;
//              {kind: "diff", version, base, nodes: [{id, ...changed fields}], add_edges,
//               remove_edges}   applies only on top of version `base`.
//   -> Python  {kind: "sync"} (on render, and after a missed diff: asks for a snapshot);
//              {kind: "add_dependency" | "remove_dependency", task, depends_on}.
// The engine's graph is the only truth: edits are sent, never applied here, and come back
// as a diff (or as `error`, when the engine refuses them).

const NODE_W = 150;
const NODE_H = 26;
const COL_STEP = 200;
const ROW_STEP = 36;
const FIT_PAD = 24;
const MAX_SCALE = 2;
const LABEL_MIN_SCALE = 0.45;
const LABEL_CHARS = 22; // what fits in NODE_W at the CSS font size, without measuring text
const FALLBACK_FILL = "#9ca3af";
const SVG_NS = "http://www.w3.org/2000/svg";
// A hidden tab gets no animation frames; past this many queued messages drop them and ask
// for a fresh snapshot when the view is drawn again, rather than replay a backlog.
const MAX_QUEUE = 20000;
const SYNC_RETRY_MS = 2000;
const LINK_HINT = "Click a dependency, then the task that waits for it; click an edge to remove it";

let viewCount = 0;

const ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ESC[c]);
const edgeKey = (from, to) => from + "\u0001" + to;

function labelOf(id, title) {
  const text = title ? `${id} ${title}` : String(id);
  return text.length > LABEL_CHARS ? text.slice(0, LABEL_CHARS - 1) + "\u2026" : text;
}

// Dark or light text on a palette colour; null when the colour is not plain hex (the
// stylesheet's theme colour is used then).
function inkOn(colour) {
  let hex = /^#([0-9a-f]{3}|[0-9a-f]{6})$/i.exec(String(colour).trim())?.[1];
  if (!hex) return null;
  if (hex.length === 3) hex = [...hex].map((c) => c + c).join("");
  const [r, g, b] = [0, 2, 4].map((i) => {
    const c = parseInt(hex.slice(i, i + 2), 16) / 255;
    return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.3 ? "#111827" : "#ffffff";
}

// From the dependency's right side to the dependent's left side, at their ports (see spread).
function curve(a, b) {
  const x1 = a.x + NODE_W, y1 = a.y + NODE_H * a.outPorts.get(b.id);
  const x2 = b.x, y2 = b.y + NODE_H * b.inPorts.get(a.id);
  const dx = Math.max(40, Math.abs(x2 - x1) / 2);
  return `M${x1},${y1}C${x1 + dx},${y1} ${x2 - dx},${y2} ${x2},${y2}`;
}

class DagView {
  constructor(model, el) {
    this.model = model;
    this.el = el;
    // Scopes this view's marker ids and stylesheet. The random part: anywidget may load
    // this module once per widget, each copy counting from 1, into the same page.
    this.uid = `ao-v${++viewCount}${Math.random().toString(36).slice(2, 7)}`;
    this.version = null;
    this.nodes = new Map(); // id -> {id, title, status, profile, x, y, g, rect, text, tip}
    this.edges = new Map(); // edgeKey -> {from, to, path, hit}
    this.out = new Map(); // id -> Set of dependents
    this.in = new Map(); // id -> Set of dependencies
    this.counts = new Map(); // status -> number of nodes
    this.queue = [];
    this.frame = 0;
    this.lastSync = -Infinity;
    this.awaitingSync = false;
    this.pickedDep = null; // link mode: the dependency chosen by the first click
    this.view = { x: 0, y: 0, k: 1 };
    this.size = { w: 0, h: 0 };
    this.autoFit = true; // until the user pans or zooms, the view follows the graph
    this.drag = null;
    this.listeners = [];
    this.modelHandlers = [];

    this.buildShell();
    this.bindModel();
    this.bindDom();
    this.applyPalette();
    this.applyHeight();
    this.applyLinkMode();
    this.applyError();
    // Python cannot tell when a view appears, and messages sent before it rendered are
    // lost: every view asks for the graph itself.
    this.requestSync();
  }

  // ---- DOM scaffolding -----------------------------------------------------------------

  buildShell() {
    const u = this.uid;
    this.el.innerHTML = `
      <div class="ao-dag ${u}" tabindex="0">
        <div class="ao-dag-toolbar">
          <button type="button" class="ao-link-toggle" aria-pressed="false"
                  title="${LINK_HINT}">Link mode</button>
          <button type="button" class="ao-fit" title="Fit the whole graph in view">Fit</button>
          <div class="ao-legend"></div>
        </div>
        <div class="ao-dag-stage">
          <!-- The banner and the hint lie over the canvas: coming and going, they must not
               resize it and re-fit the graph under the pointer. -->
          <div class="ao-dag-error" role="alert" hidden>
            <span class="ao-dag-error-text"></span>
            <button type="button" class="ao-dag-error-close" aria-label="Dismiss">\u00d7</button>
          </div>
          <svg class="ao-dag-canvas" xmlns="${SVG_NS}">
            <defs>
              <!-- userSpaceOnUse: a highlighted (thicker) edge keeps the same arrowhead -->
              <marker id="${u}-arrow" class="ao-arrow" viewBox="0 0 8 8" refX="8" refY="4"
                      markerUnits="userSpaceOnUse" markerWidth="8" markerHeight="8" orient="auto">
                <path d="M0,0L8,4L0,8z"/></marker>
              <marker id="${u}-arrow-near" class="ao-arrow ao-arrow-near" viewBox="0 0 8 8" refX="8" refY="4"
                      markerUnits="userSpaceOnUse" markerWidth="8" markerHeight="8" orient="auto">
                <path d="M0,0L8,4L0,8z"/></marker>
            </defs>
            <g class="ao-viewport"><g class="ao-edges"></g><g class="ao-nodes"></g></g>
          </svg>
          <div class="ao-dag-empty">Waiting for the graph\u2026</div>
          <div class="ao-dag-hint" aria-live="polite"></div>
        </div>
        <style class="ao-dag-ink"></style>
      </div>`;
    const $ = (sel) => this.el.querySelector(sel);
    this.root = $(".ao-dag");
    this.toggle = $(".ao-link-toggle");
    this.fitButton = $(".ao-fit");
    this.hint = $(".ao-dag-hint");
    this.legend = $(".ao-legend");
    this.banner = $(".ao-dag-error");
    this.bannerText = $(".ao-dag-error-text");
    this.svg = $(".ao-dag-canvas");
    this.viewport = $(".ao-viewport");
    this.edgeLayer = $(".ao-edges");
    this.nodeLayer = $(".ao-nodes");
    this.empty = $(".ao-dag-empty");
    this.inkStyle = $(".ao-dag-ink");
    this.arrow = `url(#${u}-arrow)`;
  }

  listen(target, type, fn, options) {
    target.addEventListener(type, fn, options);
    this.listeners.push(() => target.removeEventListener(type, fn, options));
  }

  bindModel() {
    const on = (name, fn) => {
      this.model.on(name, fn);
      this.modelHandlers.push([name, fn]);
    };
    on("msg:custom", (msg) => this.receive(msg));
    on("change:palette", () => this.applyPalette());
    on("change:selected", () => this.applySelected(true));
    on("change:link_mode", () => this.applyLinkMode());
    on("change:error", () => this.applyError());
    on("change:height", () => this.applyHeight());
  }

  bindDom() {
    this.listen(this.toggle, "click", () => this.save({ link_mode: !this.model.get("link_mode") }));
    this.listen(this.fitButton, "click", () => {
      this.autoFit = true;
      this.fit();
    });
    this.listen(this.banner.querySelector("button"), "click", () => this.save({ error: "" }));
    this.listen(this.svg, "pointerdown", (e) => this.onPointerDown(e));
    this.listen(this.svg, "pointermove", (e) => this.onPointerMove(e));
    this.listen(this.svg, "pointerup", (e) => this.onPointerUp(e));
    this.listen(this.svg, "pointercancel", () => (this.drag = null));
    // Not passive: the wheel zooms the graph instead of scrolling the notebook.
    this.listen(this.svg, "wheel", (e) => this.onWheel(e), { passive: false });
    this.listen(this.root, "keydown", (e) => {
      if (e.key === "Escape" && this.pickedDep !== null) {
        e.stopPropagation(); // keep JupyterLab from also leaving edit mode
        this.pick(null);
      }
    });
    this.resize = new ResizeObserver(([entry]) => {
      const { width, height } = entry.contentRect;
      this.size = { w: width, h: height };
      if (this.autoFit) this.fit();
    });
    this.resize.observe(this.svg);
  }

  save(state) {
    for (const [k, v] of Object.entries(state)) this.model.set(k, v);
    this.model.save_changes();
  }

  // ---- messages from Python ------------------------------------------------------------

  receive(msg) {
    if (!msg || (msg.kind !== "snapshot" && msg.kind !== "diff")) return;
    if (msg.kind === "snapshot") {
      // Another view's sync answers every view: one that already shows this version keeps
      // what it has (a rebuild costs a few hundred ms at 2,000 tasks).
      if (msg.version === this.version && this.queue.length === 0) return;
      this.queue.length = 0; // a snapshot replaces everything queued before it
    } else if (this.queue.length >= MAX_QUEUE) {
      this.queue.length = 0;
      this.version = null; // the next frame finds a gap and asks for a snapshot
    }
    this.queue.push(msg);
    // One frame applies everything that arrived since the last one: thousands of status
    // changes a second cost one style and layout pass per frame, not one per message.
    if (!this.frame) this.frame = requestAnimationFrame(() => this.flush());
  }

  flush() {
    this.frame = 0;
    const queue = this.queue;
    this.queue = [];
    for (const msg of queue) {
      if (msg.kind === "snapshot") {
        this.build(msg);
      } else if (msg.base === this.version && this.version !== null) {
        this.applyDiff(msg);
        this.version = msg.version;
      } else {
        this.requestSync(); // a lost message: diffs after a gap would be wrong
      }
    }
    this.renderLegend();
  }

  requestSync() {
    const now = performance.now();
    // One request per gap: every later diff misses too until the snapshot arrives.
    if (this.awaitingSync && now - this.lastSync < SYNC_RETRY_MS) return;
    this.awaitingSync = true;
    this.lastSync = now;
    this.model.send({ kind: "sync" });
  }

  build(msg) {
    this.version = msg.version;
    this.awaitingSync = false;
    this.nodes.clear();
    this.edges.clear();
    this.out.clear();
    this.in.clear();
    this.counts.clear();
    const palette = this.model.get("palette") || {};
    const selected = this.model.get("selected");

    // The whole graph goes in as two strings: one parse instead of ~10,000 createElement calls.
    const html = [];
    for (const n of msg.nodes || []) {
      const id = String(n.id);
      if (this.nodes.has(id)) continue; // the element walk below needs one <g> per record
      const rec = {
        id, title: n.title ?? "", status: n.status ?? "", profile: n.profile ?? "",
        x: (n.layer || 0) * COL_STEP, y: (n.order || 0) * ROW_STEP,
      };
      this.nodes.set(id, rec);
      this.out.set(id, new Set());
      this.in.set(id, new Set());
      this.counts.set(rec.status, (this.counts.get(rec.status) || 0) + 1);
      html.push(
        `<g class="ao-node${id === selected ? " ao-selected" : ""}" data-id="${esc(id)}"`,
        ` data-status="${esc(rec.status)}" data-profile="${esc(rec.profile)}">`,
        `<title>${esc(id)}: ${esc(rec.title)}</title>`,
        `<rect x="${rec.x}" y="${rec.y}" width="${NODE_W}" height="${NODE_H}" rx="4"`,
        ` fill="${esc(palette[rec.status] || FALLBACK_FILL)}"/>`,
        `<text x="${rec.x + 8}" y="${rec.y + NODE_H / 2 + 4}">${esc(labelOf(id, rec.title))}</text></g>`,
      );
    }
    this.nodeLayer.innerHTML = html.join("");
    let g = this.nodeLayer.firstElementChild;
    for (const rec of this.nodes.values()) {
      rec.g = g;
      rec.tip = g.firstElementChild;
      rec.rect = rec.tip.nextElementSibling;
      rec.text = rec.rect.nextElementSibling;
      g = g.nextElementSibling;
    }

    html.length = 0;
    const kept = [];
    for (const [from, to] of msg.edges || []) {
      const key = edgeKey(String(from), String(to));
      const a = this.nodes.get(String(from)), b = this.nodes.get(String(to));
      if (!a || !b || this.edges.has(key)) continue;
      const edge = { from: a.id, to: b.id };
      this.link(key, edge);
      kept.push(edge);
    }
    for (const rec of this.nodes.values()) this.spread(rec);
    for (const edge of kept) html.push(this.edgeHtml(edge));
    this.edgeLayer.innerHTML = html.join("");
    // Each edge is a pair: a wide invisible hit path, then the visible path (the CSS
    // highlights `.ao-edge-hit:hover + .ao-edge`).
    let hit = this.edgeLayer.firstElementChild;
    for (const edge of kept) {
      edge.hit = hit;
      edge.path = hit.nextElementSibling;
      hit = edge.path.nextElementSibling;
    }

    this.empty.hidden = this.nodes.size > 0;
    if (this.pickedDep !== null && !this.nodes.has(this.pickedDep)) this.pickedDep = null;
    this.applySelected(false);
    this.applyPick();
    if (this.autoFit) this.fit();
  }

  edgeHtml(edge) {
    const d = curve(this.nodes.get(edge.from), this.nodes.get(edge.to));
    return `<path class="ao-edge-hit" d="${d}"/><path class="ao-edge${this.isNear(edge) ? " ao-near" : ""}"` +
      ` data-from="${esc(edge.from)}" data-to="${esc(edge.to)}" d="${d}" marker-end="${this.arrow}"/>`;
  }

  link(key, edge) {
    this.edges.set(key, edge);
    this.out.get(edge.from).add(edge.to);
    this.in.get(edge.to).add(edge.from);
  }

  applyDiff(msg) {
    const palette = this.model.get("palette") || {};
    const touched = new Set(); // nodes whose edges need new geometry
    for (const change of msg.nodes || []) {
      const rec = this.nodes.get(String(change.id));
      if (!rec) continue; // diffs never add nodes; an unknown id means a snapshot is coming
      if (change.status !== undefined && change.status !== rec.status) {
        this.counts.set(rec.status, this.counts.get(rec.status) - 1);
        this.counts.set(change.status, (this.counts.get(change.status) || 0) + 1);
        rec.status = change.status;
        // Two attribute writes; the dimming of abandoned nodes and the label colour follow
        // from data-status in CSS.
        rec.g.setAttribute("data-status", rec.status);
        rec.rect.setAttribute("fill", palette[rec.status] || FALLBACK_FILL);
      }
      if (change.title !== undefined && change.title !== rec.title) {
        rec.title = change.title;
        rec.tip.textContent = `${rec.id}: ${rec.title}`;
        rec.text.textContent = labelOf(rec.id, rec.title);
      }
      if (change.profile !== undefined) {
        rec.profile = change.profile;
        rec.g.setAttribute("data-profile", rec.profile);
      }
      if (change.layer !== undefined || change.order !== undefined) {
        if (change.layer !== undefined) rec.x = change.layer * COL_STEP;
        if (change.order !== undefined) rec.y = change.order * ROW_STEP;
        this.place(rec);
        // Its neighbours' ports are ordered by position, so they may change too.
        touched.add(rec.id);
        for (const n of this.out.get(rec.id)) touched.add(n);
        for (const n of this.in.get(rec.id)) touched.add(n);
      }
    }
    for (const [from, to] of msg.remove_edges || []) {
      const key = edgeKey(String(from), String(to));
      const edge = this.edges.get(key);
      if (!edge) continue;
      edge.hit.remove();
      edge.path.remove();
      this.edges.delete(key);
      this.out.get(edge.from).delete(edge.to);
      this.in.get(edge.to).delete(edge.from);
      touched.add(edge.from).add(edge.to);
    }
    const added = [];
    for (const [from, to] of msg.add_edges || []) {
      const key = edgeKey(String(from), String(to));
      const a = this.nodes.get(String(from)), b = this.nodes.get(String(to));
      if (!a || !b || this.edges.has(key)) continue;
      const edge = { from: a.id, to: b.id };
      this.link(key, edge);
      added.push(edge);
      touched.add(a.id).add(b.id);
    }
    if (!touched.size) return; // the common case: status changes only
    if (this.autoFit) this.fit(); // cheap, and moved nodes may have changed the bounds
    for (const id of touched) this.spread(this.nodes.get(id));
    for (const edge of added) {
      this.edgeLayer.insertAdjacentHTML("beforeend", this.edgeHtml(edge));
      edge.path = this.edgeLayer.lastElementChild;
      edge.hit = edge.path.previousElementSibling;
    }
    const redrawn = new Set(); // added edges are among them: their ports were guesses
    for (const id of touched) {
      for (const to of this.out.get(id)) redrawn.add(this.edges.get(edgeKey(id, to)));
      for (const from of this.in.get(id)) redrawn.add(this.edges.get(edgeKey(from, id)));
    }
    for (const edge of redrawn) {
      const d = curve(this.nodes.get(edge.from), this.nodes.get(edge.to));
      edge.path.setAttribute("d", d);
      edge.hit.setAttribute("d", d);
    }
  }

  // Positions are x/y on the rect and text, not a transform on the group: 2,000 transforms
  // are 2,000 paint property nodes that Chromium re-layerizes on every frame.
  place(rec) {
    rec.rect.setAttribute("x", rec.x);
    rec.rect.setAttribute("y", rec.y);
    rec.text.setAttribute("x", rec.x + 8);
    rec.text.setAttribute("y", rec.y + NODE_H / 2 + 4);
  }

  // A node's incoming edges end at points spread down its left side, in the order of the
  // rows they come from (outgoing ones likewise on the right), so several arrows into one
  // task stay apart instead of meeting at one point, and do not cross there.
  spread(rec) {
    const ports = (ids) => {
      const sorted = [...ids].sort((p, q) => this.nodes.get(p).y - this.nodes.get(q).y);
      return new Map(sorted.map((id, i) => [id, (i + 1) / (sorted.length + 1)]));
    };
    rec.inPorts = ports(this.in.get(rec.id));
    rec.outPorts = ports(this.out.get(rec.id));
  }

  // ---- synced traits -------------------------------------------------------------------

  applyPalette() {
    const palette = this.model.get("palette") || {};
    for (const rec of this.nodes.values()) {
      rec.rect.setAttribute("fill", palette[rec.status] || FALLBACK_FILL);
    }
    // Label colours per status live in one small stylesheet, so a status change stays a
    // two-attribute write. The highlighted arrow is here too: marker ids are per view.
    const rules = [`.${this.uid} .ao-edge.ao-near{marker-end:url(#${this.uid}-arrow-near)}`];
    for (const [status, colour] of Object.entries(palette)) {
      const ink = inkOn(colour);
      if (ink) rules.push(`.${this.uid} .ao-node[data-status="${CSS.escape(status)}"] text{fill:${ink}}`);
    }
    this.inkStyle.textContent = rules.join("\n");
    this.renderLegend();
  }

  renderLegend() {
    const palette = this.model.get("palette") || {};
    const statuses = Object.keys(palette);
    for (const [status, n] of this.counts) if (n && !(status in palette)) statuses.push(status);
    const html = statuses
      .map((s) => `<span class="ao-legend-item" data-status="${esc(s)}">` +
        `<i class="ao-swatch" style="background:${esc(palette[s] || FALLBACK_FILL)}"></i>` +
        `${esc(s.replace(/_/g, " "))}<b>${this.counts.get(s) || 0}</b></span>`)
      .join("");
    // Called every frame with changes; an unchanged legend costs no DOM work.
    if (html !== this.legendHtml) this.legend.innerHTML = this.legendHtml = html;
  }

  applySelected(reveal) {
    const id = this.model.get("selected") || "";
    if (this.shownSelected !== undefined && this.shownSelected !== id) {
      this.nodes.get(this.shownSelected)?.g.classList.remove("ao-selected");
      this.markNear(this.shownSelected, false);
    }
    this.shownSelected = id;
    const rec = this.nodes.get(id);
    if (!rec) return;
    rec.g.classList.add("ao-selected");
    this.markNear(id, true);
    if (reveal) this.reveal(rec);
  }

  isNear(edge) {
    const sel = this.model.get("selected");
    return !!sel && (edge.from === sel || edge.to === sel);
  }

  markNear(id, on) {
    if (!this.out.has(id)) return;
    const mark = (edge) => edge.path.classList.toggle("ao-near", on);
    for (const to of this.out.get(id)) mark(this.edges.get(edgeKey(id, to)));
    for (const from of this.in.get(id)) mark(this.edges.get(edgeKey(from, id)));
  }

  applyLinkMode() {
    const on = !!this.model.get("link_mode");
    this.toggle.setAttribute("aria-pressed", String(on));
    this.root.classList.toggle("ao-linking", on);
    if (!on) this.pick(null);
    else this.applyPick();
  }

  applyError() {
    const text = this.model.get("error") || "";
    this.bannerText.textContent = text;
    this.banner.hidden = !text;
  }

  applyHeight() {
    this.root.style.height = `${this.model.get("height") || 480}px`;
  }

  // ---- link mode -----------------------------------------------------------------------

  pick(id) {
    this.pickedDep = id;
    this.applyPick();
  }

  applyPick() {
    this.nodeLayer.querySelector(".ao-picked")?.classList.remove("ao-picked");
    const rec = this.nodes.get(this.pickedDep);
    if (rec) rec.g.classList.add("ao-picked");
    this.hint.textContent = !this.model.get("link_mode") ? ""
      : rec ? `${rec.id} picked: click the task that should wait for it (Esc cancels)`
      : LINK_HINT;
  }

  clickNodeInLinkMode(id) {
    if (this.pickedDep === null) {
      this.pick(id);
      this.root.focus({ preventScroll: true }); // so that Esc reaches us
      return;
    }
    const dep = this.pickedDep;
    this.pick(null);
    if (dep === id) return; // clicking the picked node again cancels
    const refusal = this.refusal(id, dep);
    if (refusal) {
      this.save({ error: refusal });
      return;
    }
    if (this.model.get("error")) this.save({ error: "" });
    this.model.send({ kind: "add_dependency", task: id, depends_on: dep });
  }

  // Why the edge dep -> task must not be added, or "" if it may. The engine checks again;
  // this only spares the round trip and names the cycle the way the engine's CycleError
  // does: in "depends on" order, from the task back to itself.
  refusal(task, dep) {
    if (this.edges.has(edgeKey(dep, task))) return `refused: ${task} already depends on ${dep}`;
    const cycle = task === dep ? [task, task] : this.cyclePath(task, dep);
    return cycle ? `refused: this dependency would close the cycle ${cycle.join(" -> ")}` : "";
  }

  cyclePath(task, dep) {
    // Breadth-first from task along dependency -> dependent edges: the shortest way the
    // new edge would close.
    const parent = new Map([[task, null]]);
    const todo = [task];
    for (let i = 0; i < todo.length; i++) {
      for (const next of this.out.get(todo[i]) || []) {
        if (parent.has(next)) continue;
        parent.set(next, todo[i]);
        if (next === dep) {
          const path = [];
          for (let n = dep; n !== null; n = parent.get(n)) path.push(n); // dep ... task
          return [task, ...path];
        }
        todo.push(next);
      }
    }
    return null;
  }

  // ---- pointer: clicks, pan and zoom ---------------------------------------------------

  onPointerDown(e) {
    if (e.button !== 0) return;
    this.drag = { x: e.clientX, y: e.clientY, vx: this.view.x, vy: this.view.y, moved: false,
                  target: e.target };
    if (!e.target.closest(".ao-node, .ao-edge-hit")) this.svg.setPointerCapture(e.pointerId);
  }

  onPointerMove(e) {
    const d = this.drag;
    if (!d) return;
    const dx = e.clientX - d.x, dy = e.clientY - d.y;
    if (!d.moved && Math.hypot(dx, dy) < 4) return; // a click with a shaky hand is a click
    d.moved = true;
    if (d.target.closest(".ao-node, .ao-edge-hit")) return; // nodes and edges do not drag
    this.autoFit = false;
    this.setView(d.vx + dx, d.vy + dy, this.view.k);
  }

  onPointerUp(e) {
    const d = this.drag;
    this.drag = null;
    if (!d || d.moved) return;
    const linking = this.model.get("link_mode");
    const node = d.target.closest(".ao-node");
    const hit = d.target.closest(".ao-edge-hit");
    if (node) {
      const id = node.getAttribute("data-id");
      if (linking) this.clickNodeInLinkMode(id);
      else if (this.model.get("selected") !== id) this.save({ selected: id });
    } else if (hit && linking) {
      const path = hit.nextElementSibling;
      if (this.model.get("error")) this.save({ error: "" });
      this.model.send({ kind: "remove_dependency", task: path.getAttribute("data-to"),
                        depends_on: path.getAttribute("data-from") });
    } else if (linking) {
      this.pick(null);
    } else if (this.model.get("selected")) {
      this.save({ selected: "" });
    }
  }

  onWheel(e) {
    e.preventDefault();
    const box = this.svg.getBoundingClientRect();
    const px = e.clientX - box.left, py = e.clientY - box.top;
    const step = e.deltaMode === 1 ? e.deltaY * 16 : e.deltaY; // lines -> pixels
    const min = Math.min(0.02, this.view.k); // a fitted huge graph may already be smaller
    const k = Math.min(MAX_SCALE * 2, Math.max(min, this.view.k * Math.exp(-step * 0.0015)));
    const f = k / this.view.k;
    this.autoFit = false;
    // Zoom about the pointer: the graph point under it stays under it.
    this.setView(px - (px - this.view.x) * f, py - (py - this.view.y) * f, k);
  }

  setView(x, y, k) {
    this.view = { x, y, k };
    this.viewport.setAttribute("transform", `translate(${x},${y}) scale(${k})`);
    // Labels under ~5px are unreadable; dropping them (and other details, see dag.css)
    // makes every frame of a zoomed-out large graph several times cheaper to paint.
    this.root.classList.toggle("ao-far", k < LABEL_MIN_SCALE);
  }

  bounds() {
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (const r of this.nodes.values()) {
      if (r.x < x0) x0 = r.x;
      if (r.y < y0) y0 = r.y;
      if (r.x > x1) x1 = r.x;
      if (r.y > y1) y1 = r.y;
    }
    return { x0, y0, x1: x1 + NODE_W, y1: y1 + NODE_H };
  }

  fit() {
    const { w, h } = this.size;
    if (!this.nodes.size || !w || !h) return; // not laid out yet: the ResizeObserver comes back
    const b = this.bounds();
    const k = Math.min(MAX_SCALE, (w - 2 * FIT_PAD) / (b.x1 - b.x0), (h - 2 * FIT_PAD) / (b.y1 - b.y0));
    this.setView((w - (b.x1 - b.x0) * k) / 2 - b.x0 * k, (h - (b.y1 - b.y0) * k) / 2 - b.y0 * k, k);
  }

  reveal(rec) {
    const { w, h } = this.size;
    const { x, y, k } = this.view;
    const sx = x + rec.x * k, sy = y + rec.y * k;
    if (!w || (sx >= 0 && sy >= 0 && sx + NODE_W * k <= w && sy + NODE_H * k <= h)) return;
    this.autoFit = false;
    this.setView(w / 2 - (rec.x + NODE_W / 2) * k, h / 2 - (rec.y + NODE_H / 2) * k, k);
  }

  destroy() {
    if (this.frame) cancelAnimationFrame(this.frame);
    for (const [name, fn] of this.modelHandlers) this.model.off(name, fn);
    for (const off of this.listeners) off();
    this.resize.disconnect();
    this.nodes.clear();
    this.edges.clear();
    this.el.replaceChildren();
  }
}

export default {
  render({ model, el }) {
    const view = new DagView(model, el);
    return () => view.destroy();
  },
};
