"""``agentorch`` / ``python -m agentorch_nb``: run objectives unattended and steer runs from a
shell, through the same Python API a notebook uses.

exit codes: 0 completed; 1 failed, cancelled (--hitl fail) or refused; 2 bad arguments;
3 waiting for a human at the end (the run stays resumable); 4 --timeout passed (the run was
cancelled, resumable); 130 Ctrl-C (cancelled, resumable).
"""

from __future__ import annotations

import argparse
import os
import sys

from ..exceptions import (AgentorchError, CycleError, InvalidInput, MissingDependency, StoreError,
                          UnknownRun, UnknownTask, WorkspaceError)
from ..testing import DEMO_OBJECTIVE
from ..unattended import EXIT_FAILED, EXIT_USAGE, POLICIES
from . import commands
from .demo import demo

# Our errors that mean "the arguments were wrong" (exit 2); every other one is a refusal (1).
USAGE_ERRORS = (InvalidInput, UnknownRun, UnknownTask, WorkspaceError, StoreError, CycleError,
                MissingDependency)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except USAGE_ERRORS as exc:
        print(f"agentorch: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except AgentorchError as exc:
        print(f"agentorch: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:  # `agentorch runs | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: seconds cannot be negative")
    return value


def whole(least: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"{text!r}: must be at least {least}")
        return value
    return parse


def money(text: str) -> float:
    try:
        value = float(text.lstrip("$"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an amount of US dollars") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a budget cannot be negative")
    return value


def place(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workspace", help="the git repository of the runs (default: the current "
                   "directory; with only --store: the run's own workspace)")
    p.add_argument("--store", help="the DuckDB store (default: <workspace>/.agentorch/agentorch.duckdb)")


def driving(p: argparse.ArgumentParser, resuming: bool) -> None:
    keep = " (default: as the run was started)" if resuming else ""
    p.add_argument("--model", help="'demo' (offline scripted model), 'demo-escalate' (its variant "
                   "whose tests task escalates with --max-retries 1) or a litellm model string "
                   "for every role, e.g. openai/gpt-4o-mini" + keep)
    p.add_argument("--agents", metavar="MODULE:FACTORY", help="custom agents: a factory (module:name "
                   "or path/to/file.py:name) returning an agentorch_nb.Agents or a team with "
                   "for_run(engine); --model is then not needed")
    p.add_argument("--workers", type=whole(1), default=None if resuming else 5,
                   help="attempts at once" + (keep or " (default: 5)"))
    p.add_argument("--max-retries", type=whole(0), default=None if resuming else 4,
                   help="retries of a task before it waits for a human" + (keep or " (default: 4)"))
    p.add_argument("--budget-usd", type=money, help="LLM spending limit of the run, in US dollars")
    p.add_argument("--timeout", type=seconds, help="seconds the run may take (default: no limit); "
                   "then it is cancelled (exit 4), resumable")
    p.add_argument("--hitl", choices=POLICIES, default="fail", help="when a task waits for a "
                   "human: wait (up to --hitl-timeout once nothing else can move, then exit 3), "
                   "abandon (it and its dependents; finish the rest) or fail (cancel the run, "
                   "exit 1). Default: fail")
    p.add_argument("--hitl-timeout", type=seconds, default=600.0,
                   help="seconds --hitl wait waits for a resolution (default: 600)")
    p.add_argument("--json", action="store_true", help="print one JSON object at the end "
                   "(progress goes to stderr)")
    p.add_argument("--no-preflight", action="store_true", help="start even when a model looks "
                   "uncallable (no key, unknown provider, api_base not answering), e.g. behind "
                   "a proxy that adds the keys: Config(preflight=False)")
    place(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentorch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run an objective to its end in this process")
    p.add_argument("--objective", required=True, help="what the run should achieve, in a sentence")
    p.add_argument("--run-id", help="name the run in advance (run-...)")
    driving(p, resuming=False)
    p.set_defaults(fn=commands.run)

    p = sub.add_parser("resume", help="continue a run in this process to its end")
    p.add_argument("run", metavar="RUN")
    driving(p, resuming=True)
    p.set_defaults(fn=commands.resume)

    p = sub.add_parser("status", help="a run's summary and its tasks")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--json", action="store_true")
    place(p)
    p.set_defaults(fn=commands.status)

    p = sub.add_parser("runs", help="every run of a store: id, status, created, objective")
    p.add_argument("--json", action="store_true")
    place(p)
    p.set_defaults(fn=commands.runs)

    p = sub.add_parser("resolve", help="answer a task that waits for a human (from any shell, "
                       "while another process drives the run)")
    p.add_argument("run", metavar="RUN")
    p.add_argument("task", metavar="TASK")
    p.add_argument("action", choices=("retry", "abandon", "spawn"))
    p.add_argument("--guidance", help="retry: what the next attempt should know")
    p.add_argument("--description", help="retry/spawn: the task's (new) description")
    p.add_argument("--criteria", action="append", metavar="CRITERION",
                   help="retry/spawn: an acceptance criterion (repeat for several)")
    p.add_argument("--title", help="spawn: the new task's title")
    p.add_argument("--profile", help="spawn: the new task's profile (code, test, write, ...)")
    p.add_argument("--depends-on", action="append", metavar="TASK", help="spawn: a dependency")
    p.add_argument("--no-replace", action="store_true", help="spawn: keep the waiting task, "
                   "waiting for the new one")
    p.add_argument("--cascade", action="store_true", help="abandon: everything downstream too")
    p.add_argument("--drop-dependency", action="store_true",
                   help="abandon: its dependents stop depending on it and go on")
    place(p)
    p.set_defaults(fn=commands.resolve)

    p = sub.add_parser("interrupt", help="stop an active task's attempt and hand it to a human")
    p.add_argument("run", metavar="RUN")
    p.add_argument("task", metavar="TASK")
    place(p)
    p.set_defaults(fn=commands.interrupt)

    p = sub.add_parser("cancel", help="stop a run (every attempt and subprocess)")
    p.add_argument("run", metavar="RUN")
    place(p)
    p.set_defaults(fn=commands.cancel)

    p = sub.add_parser("cleanup", help="remove the worktrees and branches runs left behind")
    p.add_argument("run", metavar="RUN", nargs="?")
    place(p)
    p.set_defaults(fn=commands.cleanup)

    p = sub.add_parser("snapshot", help="a consistent copy of the store (live runs included) "
                       "that any process may keep open")
    p.add_argument("dest", metavar="DEST", help="the new DuckDB file")
    place(p)
    p.set_defaults(fn=commands.snapshot)

    p = sub.add_parser("prune", help="remove finished runs (every row, checkpoints too) and "
                       "shrink the store; a live run is never removed")
    p.add_argument("--older-than", metavar="AGE", help="runs finished longer ago: 30d, 12h, ...")
    p.add_argument("--keep-last", type=whole(0), metavar="N", help="keep the N newest runs")
    p.add_argument("--dry-run", action="store_true", help="list what would be removed")
    place(p)
    p.set_defaults(fn=commands.prune)

    p = sub.add_parser("doctor", help="check what a run needs: git, the workspace, the store, "
                       "each role's model and its keys, the Jupyter extensions, Chromium; "
                       "each problem with its fix (exit 1 if a run could not start)")
    p.add_argument("--model", help="the model every role uses ('demo': the offline one; "
                   "default: Models()'s, openai/gpt-4o-mini)")
    place(p)
    p.set_defaults(fn=commands.doctor)

    d = sub.add_parser("demo", help="run the offline demo objective on a throwaway git repository")
    d.add_argument("--workspace", help="git repository to use (default: a new temporary one)")
    d.add_argument("--objective", default=DEMO_OBJECTIVE)
    d.add_argument("--workers", type=int, default=5)
    d.add_argument("--timeout", type=float, default=120.0)
    d.set_defaults(fn=demo)
    return parser


if __name__ == "__main__":
    sys.exit(main())
