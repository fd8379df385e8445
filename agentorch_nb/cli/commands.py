"""What each ``agentorch`` subcommand does, through the same Python API a notebook uses (so
the messages are the API's). Each returns the process's exit code."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys

from .. import Orchestrator, snapshot as copy_store, sql
from ..config import Config
from ..checkup import doctor as check_up
from ..exceptions import InvalidInput, ResolutionError, UnknownRun, failure_reason
from ..remote import default_source
from ..render import counts_line
from ..unattended import (EXIT_COMPLETED, EXIT_FAILED, EXIT_INTERRUPTED, check_policy, drive,
                          load_agents, models_for)
from .progress import reporter


def open_orch(args: argparse.Namespace, run_id: str | None = None, **kwargs) -> Orchestrator:
    """The orchestrator of ``--workspace`` (default: the current directory) and ``--store``;
    with only ``--store``, a run's own workspace as its row records it."""
    workspace = args.workspace
    if workspace is None and args.store and run_id:
        rows = sql("select workspace from runs where run_id = ?", [run_id], store=args.store)
        if not len(rows):
            raise UnknownRun(run_id, args.store)
        workspace = rows.workspace[0]
    elif workspace is None and args.store:  # the workspace of the store's newest run
        rows = sql("select workspace from runs where workspace is not null "
                   "order by created_at desc limit 1", store=args.store)
        workspace = rows.workspace[0] if len(rows) else None
    return Orchestrator(workspace or ".", store=args.store, **kwargs)


def source() -> str:
    return f"cli:{default_source()}"


# ------------------------------------------------------------------ runs driven here
def run(args: argparse.Namespace) -> int:
    check_policy(args.hitl, args.hitl_timeout, args.timeout)
    agents = load_agents(args.agents) if args.agents else None
    if args.model is None and agents is None:
        raise InvalidInput("run: --model is required ('demo' for the offline demo, or a litellm model "
                    "string such as openai/gpt-4o-mini), unless --agents gives the agents")
    models = models_for(args.model or "demo", args.budget_usd)
    config = Config(max_concurrent_workers=args.workers, max_retries=args.max_retries, models=models,
                    preflight=not args.no_preflight)
    orch = open_orch(args, config=config, agents=agents)
    handle = orch.start(args.objective, run_id=args.run_id)
    return follow(handle, args)


def resume(args: argparse.Namespace) -> int:
    check_policy(args.hitl, args.hitl_timeout, args.timeout)
    agents = load_agents(args.agents) if args.agents else None
    orch = open_orch(args, args.run)
    config = resume_config(orch, args.run, model=args.model, workers=args.workers,
                           max_retries=args.max_retries, budget_usd=args.budget_usd)
    if args.no_preflight:
        config = dataclasses.replace(config, preflight=False)
    handle = orch.resume(args.run, config=config, agents=agents)
    return follow(handle, args)


def resume_config(orch, run_id: str, *, model: str | None = None, workers: int | None = None,
                  max_retries: int | None = None, budget_usd: float | None = None) -> Config:
    """The stored config of a run with what the caller changes; the offline demo's scripts
    are registered again when the run uses them."""
    stored = orch.run_row(run_id)["config"]
    config = Config.from_dict(json.loads(stored) if isinstance(stored, str) else (stored or {}))
    models = config.models
    if model is not None:
        models = models_for(model, models.budget_usd)
    elif models.worker_model in ("scripted/demo", "scripted/demo-escalate"):
        models_for(models.worker_model.removeprefix("scripted/"))
    if budget_usd is not None:
        models = dataclasses.replace(models, budget_usd=budget_usd)
    changes = {k: v for k, v in (("max_concurrent_workers", workers),
                                 ("max_retries", max_retries)) if v is not None}
    return dataclasses.replace(config, models=models, **changes)


def follow(handle, args: argparse.Namespace) -> int:
    """Drive the run to its end here, with progress on stdout (stderr with --json)."""
    out = sys.stderr if args.json else sys.stdout
    progress = reporter(out)
    progress.note(f"run {handle.id} (hitl {args.hitl}): store {handle.store.path}")
    try:
        outcome = asyncio.run(drive(handle, hitl=args.hitl, hitl_timeout=args.hitl_timeout,
                                    timeout=args.timeout, progress=progress))
    except KeyboardInterrupt:
        progress.close()
        handle.cancel(source=f"{source()}:ctrl-c")
        handle.wait_sync(120, stop_on_pause=False)
        print(f"agentorch: run {handle.id} cancelled (Ctrl-C); `agentorch resume {handle.id}` "
              "continues it", file=sys.stderr)
        return EXIT_INTERRUPTED
    progress.close()
    if args.json:
        print(outcome.to_json())
    else:
        print(outcome.text())
    if outcome.exit_code != EXIT_COMPLETED:
        print(f"agentorch: {outcome.message}", file=sys.stderr)
    return outcome.exit_code


# ------------------------------------------------------------------ reading
def status(args: argparse.Namespace) -> int:
    orch = open_orch(args, args.run)
    handle = orch.run(args.run)
    summary, tasks, waiting = handle.summary(), handle.tasks, handle.interrupts()
    row = orch.run_row(args.run)
    cost = float(orch.sql("select coalesce(sum(cost_usd), 0) as c from llm_calls where run_id = ?",
                          [args.run]).c[0])
    if args.json:
        print(json.dumps({
            "run_id": args.run, "status": summary["status"], "objective": summary["objective"],
            "created_at": str(row["created_at"]), "cost_usd": cost, "error": summary["error"],
            "counts": {s: n for s, n in summary["counts"].items() if n},
            "tasks": [{"task_id": t.id, "title": t.title, "status": t.status.value,
                       "attempts": t.attempts, "depends_on": t.depends_on,
                       "reason": t.status_reason or ""} for t in tasks],
            "waiting": [{"task_id": i.task_id, "kind": i.kind, "reason": i.reason} for i in waiting],
        }))
        return 0
    print(f"run {args.run}: {summary['status']}")
    print(f"objective: {summary['objective']}")
    print(f"created {row['created_at']:%Y-%m-%d %H:%M:%S} UTC; {summary['tasks']} tasks: "
          f"{counts_line(summary['counts']) or 'none yet'}; cost ${cost:.4f}")
    if summary["error"]:  # its traceback is in --json's "error", and the store's runs.error
        print(f"error: {failure_reason(summary['error'])}")
    for i in waiting:
        print(f"waiting for a human: {i.task_id} ({i.kind}): {i.reason}")
    if tasks:
        print()
        print(table(["task", "status", "attempts", "title", "depends on", "why"],
                    [[t.id, t.status.value, str(t.attempts), t.title, ", ".join(t.depends_on),
                      t.status_reason or ""] for t in tasks]))
    return 0


def runs(args: argparse.Namespace) -> int:
    query = "select run_id, status, created_at, objective from runs order by created_at desc"
    if args.store and not args.workspace:
        frame = sql(query, store=args.store)
    else:
        frame = open_orch(args).sql(query)
    rows = frame.to_dict("records")
    if args.json:
        print(json.dumps([{**r, "created_at": str(r["created_at"])} for r in rows]))
    elif not rows:
        print("no runs in this store")
    else:
        print(table(["run", "status", "created (UTC)", "objective"],
                    [[r["run_id"], r["status"], f"{r['created_at']:%Y-%m-%d %H:%M:%S}",
                      r["objective"]] for r in rows]))
    return 0


def table(header: list[str], rows: list[list[str]], last_width: int = 60) -> str:
    cells = [header] + [[c if i < len(r) - 1 else shorten(c, last_width) for i, c in enumerate(r)]
                        for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header) - 1)]
    return "\n".join("  ".join([*(c.ljust(w) for c, w in zip(r, widths)), r[-1]]).rstrip()
                     for r in cells)


def shorten(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[:width - 1] + "…"


# ------------------------------------------------------------------ steering
def resolve(args: argparse.Namespace) -> int:
    changes = {k: v for k, v in {
        "guidance": args.guidance, "description": args.description,
        "acceptance_criteria": args.criteria, "title": args.title, "profile": args.profile,
        "depends_on": args.depends_on}.items() if v is not None}
    for flag in ("cascade", "drop_dependency"):
        if getattr(args, flag):
            changes[flag] = True
    if args.no_replace:
        changes["replace"] = False
    result = open_orch(args, args.run).run(args.run).resolve(args.task, args.action,
                                                             source=source(), **changes)
    return said(result, args.run)


def interrupt(args: argparse.Namespace) -> int:
    return said(open_orch(args, args.run).run(args.run).interrupt(args.task, source=source()),
                args.run)


def cancel(args: argparse.Namespace) -> int:
    handle = open_orch(args, args.run).run(args.run)
    if handle.status.finished:
        raise ResolutionError(f"run {args.run} is {handle.status.value}: there is nothing to cancel")
    return said(handle.cancel(source=source()), args.run)


def said(result, run_id: str) -> int:
    """``applied`` (a live engine took it), or ``pending`` (no process drives the run: the
    command waits in the store and ``agentorch resume`` applies it first)."""
    word = result if isinstance(result, str) else "applied"
    if word == "pending":
        print(f"pending: no process drives run {run_id} now; `agentorch resume {run_id}` "
              "applies it first")
    else:
        print(word)
    return EXIT_COMPLETED


def cleanup(args: argparse.Namespace) -> int:
    removed = open_orch(args, args.run).cleanup(args.run)
    for line in removed:
        print(line)
    if not removed:
        print("nothing to clean up")
    return EXIT_COMPLETED


# ------------------------------------------------------------------ the store
def doctor(args: argparse.Namespace) -> int:
    """The table of what a run needs; exit 1 when a run could not start as things are."""
    config = Config(models=models_for(args.model)) if args.model else None
    found = check_up(args.workspace or ".", config, store=args.store)
    return EXIT_COMPLETED if found.ok else EXIT_FAILED


def snapshot(args: argparse.Namespace) -> int:
    """A consistent copy of the store, live runs included, that any process may hold open."""
    if args.store and not args.workspace:
        path = copy_store(args.dest, store=args.store)
    else:
        path = open_orch(args).snapshot(args.dest)
    print(path)
    return EXIT_COMPLETED


def prune(args: argparse.Namespace) -> int:
    removed = open_orch(args).prune(older_than=args.older_than, keep_last=args.keep_last,
                                    dry_run=args.dry_run)
    for run_id in removed:
        print(f"would remove {run_id}" if args.dry_run else f"removed {run_id}")
    if not removed:
        print("no run to remove")
    return EXIT_COMPLETED
