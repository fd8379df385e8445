"""One process that drives the fault scenario's run, to be killed at any moment.

    python child.py start   REPO JOURNAL PARAMS_JSON [- [TIMEOUT]]
    python child.py resume  REPO JOURNAL PARAMS_JSON RUN_ID [TIMEOUT]
    python child.py cleanup REPO JOURNAL PARAMS_JSON

Prints the run id on its first line as soon as ``start()``/``resume()`` returns, then drives
the run until it ends (or pauses for a human, which this scenario never needs) and prints a
JSON line: the run's status, what waits for a human, and the run's error. ``cleanup`` is
``orch.cleanup()`` after the run, in a process of its own like a user's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the checkout's root holds the tests package;
    # appended, so an agentorch_nb named by PYTHONPATH is the one under test
    sys.path.append(str(Path(__file__).resolve().parents[2]))

import agentorch_nb as ao  # noqa: E402
from agentorch_nb.testing import Agents, TestDirector, TestStrategist  # noqa: E402
from tests.faults.scenario import OBJECTIVE, FaultWorker, Params, make_scenario  # noqa: E402

RUN_TIMEOUT = 300.0  # a run of this size takes seconds; longer means it is stuck


def main() -> None:
    mode, repo, journal, params, *rest = sys.argv[1:]
    run_id = rest[0] if rest and rest[0] != "-" else None
    timeout = float(rest[1]) if len(rest) > 1 else RUN_TIMEOUT
    p = Params.from_json(params)
    sc = make_scenario(p)
    agents = Agents(TestDirector(sc.specs), FaultWorker(sc, Path(journal)), TestStrategist())
    orch = ao.Orchestrator(repo, config=p.config(), agents=agents)
    if mode == "cleanup":
        # Reading the runs first also starts the store's thread before exit: a process whose
        # store was never used waits ~35 s at exit (its thread then starts during shutdown).
        runs = [r.id for r in orch.runs()]
        print(json.dumps({"runs": runs, "removed": orch.cleanup()}), flush=True)
        return
    run = orch.start(OBJECTIVE) if mode == "start" else orch.resume(run_id)
    print(run.id, flush=True)
    # A pause (a task waiting for a human, which this scenario never needs) ends the process
    # too, and the harness reports it.
    status = run.wait_sync(timeout, stop_on_pause=True)
    waiting = [{"task": i.task_id, "kind": i.kind, "reason": i.reason} for i in run.interrupts()]
    print(json.dumps({"status": status.value, "waiting": waiting,
                      "error": run.summary()["error"]}), flush=True)


if __name__ == "__main__":
    main()
