"""IPython magics: ``%load_ext agentorch_nb``, then

    %agentorch start "Add a --json flag" [--workspace PATH] [--model MODEL] [--workers N]
    %agentorch status [RUN]        %agentorch runs
    %agentorch resume RUN          %agentorch cancel RUN

    %%agentsql [--store PATH] [--write]
    select task_id, status from tasks

Each is a thin layer over the Python API (``Orchestrator.start``, ``Run.summary``, ...), so
whatever a magic does a cell can do too. ``start`` and ``resume`` return the :class:`Run`,
which displays as its live dashboard; the run goes on in the kernel's event loop while later
cells execute.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from IPython.core.magic import Magics, cell_magic, line_magic, magics_class

from .exceptions import InvalidInput
from .orchestrator import Orchestrator, sql
from .run import Run


class _Parser(argparse.ArgumentParser):
    """argparse that raises (shown as a one-line error in the cell) instead of exiting."""

    def error(self, message: str):
        raise InvalidInput(f"{self.prog}: {message}\n{self.format_usage().strip()}")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="%agentorch", add_help=False)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    s = sub.add_parser("start", add_help=False)
    s.add_argument("objective")
    s.add_argument("--workspace", default=None)
    s.add_argument("--model", default=None,
                   help="a litellm model string for every role, or 'demo' for the offline model")
    s.add_argument("--workers", type=int, default=None)
    st = sub.add_parser("status", add_help=False)
    st.add_argument("run", nargs="?")
    sub.add_parser("runs", add_help=False)
    for name in ("resume", "cancel"):
        sub.add_parser(name, add_help=False).add_argument("run")
    return p


@magics_class
class AgentorchMagics(Magics):
    def __init__(self, shell) -> None:
        super().__init__(shell)
        self.orchestrators: dict[Path, Orchestrator] = {}
        self.last: Orchestrator | None = None
        self.last_run: Run | None = None

    def _orch(self, workspace: str | None) -> Orchestrator:
        if workspace is None and self.last is not None:
            return self.last
        root = Path(workspace or ".").expanduser().resolve()
        orch = self.orchestrators.get(root)
        if orch is None:
            orch = self.orchestrators[root] = Orchestrator(root)
        self.last = orch
        return orch

    def _run(self, run_id: str | None) -> Run:
        if run_id is None:
            if self.last_run is None:
                raise InvalidInput("no run yet in this kernel: name one, e.g. %agentorch status run-1a2b3c4d")
            return self.last_run
        return self._orch(None).run(run_id)

    @line_magic
    def agentorch(self, line: str):
        """Start, inspect, resume and cancel runs; ``%agentorch`` alone prints the usage."""
        if not line.strip():
            print(__doc__)
            return None
        args = _parser().parse_args(shlex.split(line))
        if args.command == "start":
            import dataclasses

            from .agents import LLMTeam, demo_models
            from .llm import Models

            orch = self._orch(args.workspace)
            config = orch.config
            if args.model == "demo":
                config = dataclasses.replace(config, models=demo_models())
            elif args.model:
                config = dataclasses.replace(config, models=Models(worker_model=args.model))
            if args.workers:
                config = dataclasses.replace(config, max_concurrent_workers=args.workers)
            self.last_run = orch.start(args.objective, config=config,
                                       agents=LLMTeam() if args.model else None)
            return self.last_run
        if args.command == "status":
            return self._run(args.run)
        if args.command == "runs":
            return self._orch(None).sql(
                "select run_id, status, objective, created_at, finished_at from runs "
                "order by created_at desc")
        if args.command == "resume":
            self.last_run = self._orch(None).resume(args.run)
            return self.last_run
        if args.command == "cancel":
            self._run(args.run).cancel(source="magic")
            return self._run(args.run)
        return None

    @cell_magic
    def agentsql(self, line: str, cell: str):
        """The cell's SQL over a store, as a DataFrame: the store given with ``--store``, or
        that of the orchestrator this kernel used last. Read-only unless ``--write``."""
        words = shlex.split(line)
        write = "--write" in words
        words = [w for w in words if w != "--write"]
        store = None
        if words[:1] == ["--store"] and len(words) == 2:
            store = words[1]
        elif words:
            raise InvalidInput("usage: %%agentsql [--store PATH] [--write]")
        return sql(cell, store=store, write=write)


def load_ipython_extension(ipython) -> None:
    ipython.register_magics(AgentorchMagics)
