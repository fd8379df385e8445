// The two views of one task, in one module (an anywidget module cannot import a sibling):
// the inspector (the task's record; one attempt's conversation, paged, or its diff, each read
// from the kernel's store only when a button asks) and the live log (the conversation as it
// happens, model replies streaming in chunk by chunk).

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c !== null && c !== undefined && c !== false) el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

// An assistant message's tool calls as the worker records them (OpenAI's shape: a function
// name and its arguments as a JSON string).
function toolCalls(meta) {
  return ((meta && meta.tool_calls) || []).map((c) => {
    const fn = c.function || c;
    const args = typeof fn.arguments === "string" ? fn.arguments : JSON.stringify(fn.arguments ?? {});
    return h("div", { class: "ao-toolcall" }, "→ ", fn.name || "tool", " ", h("code", {}, args.slice(0, 400)));
  });
}

function messageView(m) {
  const meta = m.metadata || {};
  return h("div", { class: `ao-msg ao-role-${m.role}` },
    h("div", { class: "ao-msg-head" }, m.role, meta.name ? ` ← ${meta.name}` : "",
      m.ts ? ` · ${m.ts}` : "", m.attempt ? ` · attempt ${m.attempt}` : ""),
    h("pre", { class: "ao-msg-body" }, m.content || ""),
    toolCalls(meta));
}

function renderInspector(model, el) {
  const root = h("div", { class: "ao-inspector" });
  el.append(root);
  const add = (...parts) => root.append(...parts.flat().filter((p) => p !== null && p !== undefined && p !== false));

  function draw() {
    const t = model.get("task");
    const conv = model.get("conversation");
    const diff = model.get("diff");
    const error = model.get("error");
    root.replaceChildren();
    if (!t || !t.id) {
      add(h("p", { class: "ao-muted" }, "Click a task in the graph to inspect it."));
      return;
    }
    const palette = model.get("palette");
    add(
      h("div", { class: "ao-insp-title" }, h("b", {}, `${t.id}: ${t.title}`), " ",
        h("span", { class: "ao-badge", style: `background:${palette[t.status] || "#ccc"}` }, t.status)),
      t.status_reason ? h("div", { class: "ao-muted" }, t.status_reason) : null,
      h("div", { class: "ao-muted" },
        `${t.profile} · depends on ${t.depends_on.join(", ") || "nothing"} · retries used ${t.retries_used} of ${t.max_retries}`),
      t.description ? h("p", { class: "ao-desc" }, t.description) : null,
      t.acceptance_criteria.length
        ? h("div", {}, h("b", {}, "Acceptance criteria"), h("ul", {}, t.acceptance_criteria.map((c) => h("li", {}, c))))
        : null,
      t.guidance ? h("div", {}, h("b", {}, "Guidance: "), t.guidance) : null,
    );
    const rows = t.attempts.map((a) =>
      h("tr", { "data-attempt": a.number },
        h("td", {}, a.number), h("td", {}, a.outcome),
        h("td", {}, a.failure_reason, a.qa_feedback ? h("div", { class: "ao-qa" }, "QA: ", a.qa_feedback) : null),
        h("td", {}, `${a.tokens} tok · $${a.cost_usd.toFixed(4)}`),
        h("td", {},
          h("button", { class: "ao-open-conversation", onclick: () => model.send({ kind: "conversation", attempt: a.number, page: 0 }) }, "Conversation"),
          a.has_diff ? h("button", { class: "ao-open-diff", onclick: () => model.send({ kind: "diff", attempt: a.number }) }, "Diff") : null)));
    add(t.attempts.length
      ? h("table", { class: "ao-attempts" },
          h("thead", {}, h("tr", {}, ["#", "outcome", "why", "spent", ""].map((x) => h("th", {}, x)))),
          h("tbody", {}, rows))
      : h("p", { class: "ao-muted" }, "No attempt yet."));
    if (error) add(h("div", { class: "ao-error" }, error));
    if (conv && conv.messages) {
      const pager = h("div", { class: "ao-pager" },
        h("b", {}, `Attempt ${conv.attempt}: ${conv.total} messages`), " ",
        h("button", { disabled: conv.page <= 0 ? "" : null, onclick: () => model.send({ kind: "conversation", attempt: conv.attempt, page: conv.page - 1 }) }, "‹"),
        ` page ${conv.page + 1} of ${conv.pages} `,
        h("button", { disabled: conv.page + 1 >= conv.pages ? "" : null, onclick: () => model.send({ kind: "conversation", attempt: conv.attempt, page: conv.page + 1 }) }, "›"));
      add(h("div", { class: "ao-conversation" }, pager, conv.messages.map(messageView)));
    }
    if (diff && diff.text !== undefined) {
      add(h("div", { class: "ao-diff" }, h("b", {}, `Diff of attempt ${diff.attempt}`),
        h("pre", {}, diff.text.split("\n").map((line) =>
          h("span", { class: line.startsWith("+") ? "ao-add" : line.startsWith("-") ? "ao-del" : "" }, line + "\n")))));
    }
  }

  const names = ["change:task", "change:conversation", "change:diff", "change:error"];
  for (const n of names) model.on(n, draw);
  draw();
  return () => { for (const n of names) model.off(n, draw); };
}

function renderLog(model, el) {
  const head = h("div", { class: "ao-log-head ao-muted" });
  const list = h("div", { class: "ao-log-list" });
  el.append(h("div", { class: "ao-log" }, head, list));
  let streaming = null; // the reply still arriving, shown until its complete message comes

  function stick(fn) {
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    fn();
    if (atBottom) list.scrollTop = list.scrollHeight;
  }
  function onMsg(msg) {
    if (msg.kind === "reset") {
      streaming = null;
      head.textContent = msg.task_id ? `Live conversation of ${msg.task_id}` : "Select a task to follow its conversation.";
      stick(() => list.replaceChildren(...msg.messages.map(messageView)));
    } else if (msg.kind === "append") {
      stick(() => {
        if (streaming) { streaming.remove(); streaming = null; }
        list.append(...msg.messages.map(messageView));
        while (list.childElementCount > 400) list.firstElementChild.remove();
      });
    } else if (msg.kind === "chunk") {
      stick(() => {
        for (const c of msg.chunks) {
          if (!streaming) {
            streaming = messageView({ role: c.role, content: "", attempt: c.attempt });
            streaming.classList.add("ao-streaming");
            list.append(streaming);
          }
          streaming.querySelector(".ao-msg-body").textContent += c.text;
        }
      });
    }
  }
  model.on("msg:custom", onMsg);
  model.send({ kind: "sync" }); // what was sent before this view existed is lost: ask for it
  return () => model.off("msg:custom", onMsg);
}

export default {
  render({ model, el }) {
    return model.get("view") === "log" ? renderLog(model, el) : renderInspector(model, el);
  },
};
