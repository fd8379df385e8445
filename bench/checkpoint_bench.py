"""Put and get throughput of DuckDBSaver against LangGraph's AsyncSqliteSaver.

    python bench/checkpoint_bench.py [--seconds 4] [--ops 5000]

Both savers run in the same process and the same run, with the same operations and the same
checkpoints, once on temporary files and once in memory (DuckDB ``:memory:`` against SQLite
``:memory:``). The operations are the ones a ReAct worker's compiled graph makes
(``agents/worker.py``):

- put: one graph step, i.e. ``aput_writes`` of the node's writes (two channels) against the
  current checkpoint, then ``aput`` of the next checkpoint: a "messages" channel of 20
  strings of 200 characters and a counter, both new in every checkpoint, as a chat-style
  graph writes them. A put phase counts as done once its checkpoints are on disk: for the
  DuckDB saver that includes ``await store.flush()`` at the end (SQLite commits each call);
- get: ``aget_tuple`` of a random stored checkpoint by id, and one in four the thread's latest
  (what a graph does when an attempt starts or resumes);
- sequential: one coroutine awaits each operation before the next (a single graph run);
  concurrent: 16 coroutines on one event loop at once (16 workers of one engine).

``acopy_thread``, the worker's other call, happens once per resumed attempt and is not timed.
Each phase stops after ``--seconds`` or its operation count, whichever comes first; the
machine's other load moves the figures, so run it more than once.
Needs ``langgraph-checkpoint-sqlite`` and ``aiosqlite``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout, not an install

from langgraph.checkpoint.base import BaseCheckpointSaver  # noqa: E402
from langgraph.checkpoint.base.id import uuid6  # noqa: E402
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver  # noqa: E402

from agentorch_nb.store import Store  # noqa: E402
from agentorch_nb.store.checkpoint import DuckDBSaver  # noqa: E402

MESSAGES = ["x" * 200] * 20
CONCURRENCY = 16


def checkpoint(saver: BaseCheckpointSaver, step: int, prev: dict | None) -> tuple[dict, dict]:
    versions = {
        ch: saver.get_next_version(prev["channel_versions"][ch] if prev else None, None)
        for ch in ("messages", "count")
    }
    cp = {
        "v": 1,
        "id": str(uuid6(clock_seq=-1)),
        "ts": datetime.now(timezone.utc).isoformat(),
        "channel_values": {"messages": MESSAGES + [f"step {step}"], "count": step},
        "channel_versions": versions,
        "versions_seen": {"agent": dict(versions)},
        "updated_channels": ["messages", "count"],
    }
    return cp, versions


async def put_chain(saver: BaseCheckpointSaver, thread: str, n: int, deadline: float) -> list[dict]:
    """Up to ``n`` graph steps on one thread: the writes of the step, then its checkpoint,
    each checkpoint the child of the one before."""
    stored: list[dict] = []
    prev = None
    parent: str | None = None
    for step in range(n):
        if time.perf_counter() > deadline:
            break
        cp, versions = checkpoint(saver, step, prev)
        conf = {"thread_id": thread, "checkpoint_ns": ""}
        if parent:
            conf["checkpoint_id"] = parent
            await saver.aput_writes({"configurable": conf},
                                    [("messages", MESSAGES[:1]), ("count", step)], f"task-{step}")
        cfg = await saver.aput({"configurable": conf}, cp,
                               {"source": "loop", "step": step, "parents": {}}, versions)
        stored.append(cfg)
        prev, parent = cp, cp["id"]
    return stored


async def get_many(saver: BaseCheckpointSaver, configs: list[dict], n: int, deadline: float,
                   seed: int) -> int:
    done = 0
    rng = random.Random(seed)
    for cfg in rng.choices(configs, k=n):
        if time.perf_counter() > deadline:
            break
        if rng.random() < 0.25:  # the thread's latest checkpoint
            cfg = {"configurable": {"thread_id": cfg["configurable"]["thread_id"],
                                    "checkpoint_ns": ""}}
        assert (await saver.aget_tuple(cfg)) is not None
        done += 1
    return done


async def durable(saver: BaseCheckpointSaver) -> None:
    """Return once every put is on disk."""
    if isinstance(saver, DuckDBSaver):
        await saver.store.flush()


async def timed(fn: Callable[[float], Awaitable[int]], seconds: float) -> float:
    start = time.perf_counter()
    ops = await fn(start + seconds)
    return ops / (time.perf_counter() - start)


async def measure(saver: BaseCheckpointSaver, seconds: float, n: int) -> dict[str, float]:
    out: dict[str, float] = {}
    configs: list[dict] = []

    async def seq_put(deadline: float) -> int:
        chain = await put_chain(saver, "seq", n, deadline)
        await durable(saver)
        configs.extend(chain)
        return len(chain)

    async def seq_get(deadline: float) -> int:
        return await get_many(saver, configs, n, deadline, 0)

    async def con_put(deadline: float) -> int:
        chains = await asyncio.gather(*(put_chain(saver, f"con-{i}", n // CONCURRENCY + 1, deadline)
                                        for i in range(CONCURRENCY)))
        await durable(saver)
        for chain in chains:
            configs.extend(chain)
        return sum(map(len, chains))

    async def con_get(deadline: float) -> int:
        counts = await asyncio.gather(*(get_many(saver, configs, n // CONCURRENCY + 1, deadline, i)
                                        for i in range(CONCURRENCY)))
        return sum(counts)

    for name, fn in (("sequential put", seq_put), ("sequential get", seq_get),
                     ("concurrent put", con_put), ("concurrent get", con_get)):
        out[name] = await timed(fn, seconds)
    return out


@asynccontextmanager
async def duckdb_file(tmp: Path) -> AsyncIterator[BaseCheckpointSaver]:
    store = Store.open(tmp / "bench.duckdb")
    try:
        yield DuckDBSaver(store)
    finally:
        store.close()


@asynccontextmanager
async def duckdb_memory(tmp: Path) -> AsyncIterator[BaseCheckpointSaver]:
    store = Store.open(":memory:")
    try:
        yield DuckDBSaver(store)
    finally:
        store.close()


@asynccontextmanager
async def sqlite_file(tmp: Path) -> AsyncIterator[BaseCheckpointSaver]:
    async with AsyncSqliteSaver.from_conn_string(str(tmp / "bench.sqlite")) as saver:
        await saver.setup()
        yield saver


@asynccontextmanager
async def sqlite_memory(tmp: Path) -> AsyncIterator[BaseCheckpointSaver]:
    async with AsyncSqliteSaver.from_conn_string(":memory:") as saver:
        await saver.setup()
        yield saver


PAIRS = {  # (DuckDB, SQLite) measured alike
    "file": ("DuckDBSaver (file)", "AsyncSqliteSaver (file)"),
    "memory": ("DuckDBSaver (:memory:)", "AsyncSqliteSaver (:memory:)"),
}


async def main(seconds: float, n: int) -> None:
    savers: dict[str, Any] = {
        "DuckDBSaver (file)": duckdb_file,
        "AsyncSqliteSaver (file)": sqlite_file,
        "DuckDBSaver (:memory:)": duckdb_memory,
        "AsyncSqliteSaver (:memory:)": sqlite_memory,
    }
    results: dict[str, dict[str, float]] = {}
    for label, make in savers.items():
        with tempfile.TemporaryDirectory() as tmp:
            async with make(Path(tmp)) as saver:
                results[label] = await measure(saver, seconds, n)
        print(f"{label:28s}" + "".join(f"  {k}: {v:8.0f}/s" for k, v in results[label].items()),
              flush=True)

    for where, (duck_label, lite_label) in PAIRS.items():
        duck, lite = results[duck_label], results[lite_label]
        print(f"\n{where}: ops/s       DuckDBSaver  AsyncSqliteSaver  DuckDB/SQLite")
        for phase in duck:
            ratio = duck[phase] / lite[phase]
            print(f"{phase:18s} {duck[phase]:12.0f} {lite[phase]:17.0f} {ratio:14.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="time limit of each phase")
    parser.add_argument("--ops", type=int, default=5000, help="operation limit of each phase")
    args = parser.parse_args()
    start = time.perf_counter()
    asyncio.run(main(args.seconds, args.ops))
    print(f"\n(total {time.perf_counter() - start:.0f} s)")
