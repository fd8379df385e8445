"""Fault injection: SIGKILL the engine at random moments, hundreds of times, and check that no
work is destroyed, every crash is resumable and nothing is dropped.

    python bench/faults.py                      # 200 kills, 2 runs at a time (~10 min on 2 cores)
    python bench/faults.py --kills 40 --seed 3
    python bench/faults.py --run-seed 3004 --run-kills 6    # one run again, to reproduce it

Each run is a fresh git repository (300 committed files by default, --files for thousands)
and a 36-task scenario whose workers really add, change and delete files in their worktrees,
and whose edits of a few shared files conflict so that the engine hands them to merge tasks.
A child process starts the run and prints its id; at a random moment (from the spawn, or
0-3 s after the id) the harness SIGKILLs the child alone or its whole process group, reaps it,
checks the invariants from git and the DuckDB file, and resumes the run in a new child; after
3-8 kills a child drives the run to its end, and ``orch.cleanup()`` follows. The invariants and
how they are read: tests/faults/invariants.py. Exits 1 on any violation, printing the first
ones with the run seed that reproduces the run's scenario and kill plan (where each kill lands
still depends on the machine's timing).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))  # PYTHONPATH may name the agentorch_nb under test

from tests.faults.harness import Figures, drive_run, run_harness, summary  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=200, help="kills in all (default 200)")
    ap.add_argument("--seed", type=int, default=1, help="run i has seed SEED*1000+i")
    ap.add_argument("--jobs", type=int, default=2, help="scenario runs at a time (default 2)")
    ap.add_argument("--tasks", type=int, default=36, help="tasks per run (default 36)")
    ap.add_argument("--files", type=int, default=300, help="files in the repository (default 300)")
    ap.add_argument("--max-delay", type=float, default=3.0,
                    help="latest kill, in seconds after the run id (default 3)")
    ap.add_argument("--run-seed", type=int, help="only this run (its seed as printed)")
    ap.add_argument("--run-kills", type=int, help="with --run-seed: kills before the last resume")
    ap.add_argument("--workdir", help="where runs go (default: a new temporary directory)")
    ap.add_argument("--keep", action="store_true", help="keep every run's directory")
    ap.add_argument("-q", "--quiet", action="store_true", help="only the summary")
    ap.add_argument("-v", "--verbose", action="store_true", help="also every process and kill")
    args = ap.parse_args()
    params = {"tasks": args.tasks, "files": args.files}
    log = None if args.quiet else (lambda line: print(line, flush=True))
    trace = log if args.verbose else None

    if args.run_seed is not None:
        started = time.monotonic()
        base = Path(args.workdir or f"/tmp/agentorch-faults-{args.run_seed}")
        report = drive_run(args.run_seed, base, kills=args.run_kills, max_delay=args.max_delay,
                           params=params, log=log, trace=trace)
        fig = Figures(args.seed, len(report.kills), [report], time.monotonic() - started)
    else:
        fig = run_harness(args.seed, args.kills, args.jobs, max_delay=args.max_delay,
                          params=params, workdir=args.workdir, keep=args.keep, log=log,
                          trace=trace)
    print()
    print(f"python bench/faults.py --kills {args.kills} --seed {args.seed} --jobs {args.jobs} "
          f"--tasks {args.tasks} --files {args.files}")
    print(summary(fig))
    return 1 if fig.violations else 0


if __name__ == "__main__":
    sys.exit(main())
