"""``agentorch demo``: the offline demo objective on a throwaway git repository."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from .. import Orchestrator
from ..agents import LLMTeam, demo_models
from ..config import Config
from ..workspace import init_workspace


def demo(args: argparse.Namespace) -> int:
    workspace = Path(args.workspace) if args.workspace else Path(tempfile.mkdtemp(prefix="agentorch-demo-"))
    init_workspace(workspace)
    print(f"workspace: {workspace}")
    config = Config(max_concurrent_workers=args.workers, models=demo_models())
    orch = Orchestrator(workspace, config=config, agents=LLMTeam())
    started = time.perf_counter()
    run = orch.start(args.objective)
    print(f"run {run.id}: {args.objective}")
    status = run.wait_sync(timeout=args.timeout)
    elapsed = time.perf_counter() - started
    print(f"status: {status.value} in {elapsed:.1f} s\n")
    for t in run.tasks:
        deps = f" <- {', '.join(t.depends_on)}" if t.depends_on else ""
        print(f"  {t.id:<4} {t.status.value:<14} attempts={t.attempts}  {t.title}{deps}")
    print("\nattempts that failed (Phoenix retried them with this context):")
    failed = orch.sql("select task_id, attempt, outcome, summary from attempts "
                      "where run_id = ? and outcome <> 'approved' order by task_id, attempt", [run.id])
    print(failed.to_string(index=False) if len(failed) else "  none")
    llm = orch.sql("select count(*) as calls, coalesce(sum(tokens_in), 0) as tin, "
                   "coalesce(sum(tokens_out), 0) as tout, coalesce(sum(cost_usd), 0) as cost "
                   "from llm_calls where run_id = ?", [run.id]).iloc[0]
    print(f"\nLLM: {int(llm.calls)} calls, {int(llm.tin)} tokens in, {int(llm.tout)} out, "
          f"${float(llm.cost):.4f} (the offline scripted model costs nothing)")
    merged = orch.sql("select count(*) as n from merges where run_id = ? and status <> 'conflict'", [run.id]).n[0]
    print(f"git: {int(merged)} approved attempts merged into {orch.git.target}; "
          f"try: cd {workspace} && git log --oneline && python -m pytest -q")
    counts = orch.sql("select count(*) as events, max(seq) as last_seq from events where run_id = ?", [run.id])
    print(f"store: {orch.store.path} ({int(counts.events[0])} events)")
    print(f"try:   python -c \"import agentorch_nb as ao; print(ao.sql('select * from tasks', store='{orch.store.path}'))\"")
    return 0 if status.value == "completed" else 1

