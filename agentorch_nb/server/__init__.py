"""The Jupyter server extension: every run of every store under the server's root, over a
REST API under ``<base_url>/agentorch/api/v1/`` and live on Jupyter's event bus.

The server never drives a run. It reads stores (:mod:`.stores`), posts commands through the
same inbox as any other process (:mod:`agentorch_nb.remote`), starts new runs as papermill
batch jobs it supervises (:mod:`.jobs`), and passes engines' change notices on to the
browser (:mod:`.feed`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib

from jupyter_server.extension.application import ExtensionApp
from traitlets import Float, Int, List, Unicode

from .stores import StoreIndex


class AgentorchApp(ExtensionApp):
    name = "agentorch_nb"

    stores = List(Unicode(), config=True,
                  help="More store files to serve (paths, absolute or relative to the root "
                       "directory), besides the .agentorch/agentorch.duckdb files found under it.")
    scan_interval = Float(10.0, config=True,
                          help="Seconds between walks of the root directory for new stores.")
    scan_depth = Int(6, config=True, help="How many folders deep the walk for stores goes.")
    max_jobs = Int(4, config=True, help="Batch jobs (POST /runs, restart) run at once at most; "
                                        "more are refused with 429 until one ends.")
    python = Unicode("", config=True,
                     help="The Python that runs batch jobs (POST /runs); empty: this server's.")

    def initialize_settings(self) -> None:
        from .jobs import Jobs

        self.index = StoreIndex(self.serverapp.root_dir, list(self.stores), depth=self.scan_depth)
        # Store reads and commands wait on files and sockets: never on the server's loop.
        self.executor = cf.ThreadPoolExecutor(max_workers=16, thread_name_prefix="agentorch-api")
        self.jobs = Jobs(self)
        self.run_stores: dict[str, str] = {}  # run id -> store id, as found
        self.feed = None
        self._scanner: asyncio.Task | None = None

    def initialize_handlers(self) -> None:
        from .handlers import routes

        self.handlers.extend(routes())

    async def _start_jupyter_server_extension(self, serverapp) -> None:
        from .feed import Feed, register_schemas

        register_schemas(serverapp.event_logger)
        self.feed = Feed(self, serverapp.event_logger)
        await self.feed.start()
        self._scanner = asyncio.create_task(self._scan_forever())

    async def _scan_forever(self) -> None:
        while True:
            try:
                await self.index.scan()
            except Exception:  # noqa: BLE001 - the next walk tries again
                self.log.exception("agentorch: walking %s for stores failed", self.index.root)
            await asyncio.sleep(self.scan_interval)

    def emit(self, schema: str, data: dict) -> None:
        """Put an event on Jupyter's event bus (``schema`` is a name in :mod:`.feed`)."""
        from .feed import emit

        emit(self.serverapp.event_logger, schema, data)

    async def stop_extension(self) -> None:
        if self._scanner is not None:
            self._scanner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scanner
        if self.feed is not None:
            self.feed.stop()
        await self.jobs.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.index.close()
