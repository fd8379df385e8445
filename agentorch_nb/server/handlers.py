"""The REST API under ``<base_url>/agentorch/api/v1/`` (described by ``openapi.json``).

Every handler is an ``APIHandler`` behind Jupyter's authentication (``@authenticated``: no
token, 403) and authorization (``@authorized`` on the resource ``agentorch``); Jupyter's
XSRF rules apply to every request that changes state. Reads run in the store's thread,
commands in the extension's thread pool: the server's loop never waits on a file or a socket.
Errors are JSON ``{"message", "reason"}`` with a 4xx status, and change nothing.
"""

from __future__ import annotations

import asyncio
import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from jupyter_server.utils import url_path_join
from tornado import web

from .. import remote
from ..exceptions import (CycleError, InvalidInput, InvalidTransition, MissingDependency,
                          ResolutionError, StoreBusy, StoreError, UnknownRun, UnknownTask,
                          WorkspaceError)
from ..model import RunStatus
from . import queries
from .jobs import TooBusy
from .stores import StoreRef

API = "/agentorch/api/v1"
RESOURCE = "agentorch"
SPEC = json.loads(Path(__file__).with_name("openapi.json").read_text())
MAX_LIMIT = 500
# A list of runs or of the queue walks the root first when the last walk is older than this.
FRESH = 2.0


class ApiError(web.HTTPError):
    """An HTTP error whose JSON body carries more than the message (``cycle``, ...)."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(status, message.replace("%", "%%"))
        self.extra = extra


# What each of the package's errors means to an HTTP client.
STATUS = [(UnknownRun, 404), (UnknownTask, 404), (CycleError, 409), (MissingDependency, 409),
          (ResolutionError, 409), (InvalidTransition, 409), (WorkspaceError, 400), (InvalidInput, 400),
          (StoreBusy, 503), (StoreError, 503), (PermissionError, 403), (TooBusy, 429)]


def api(method):
    """Authenticated, authorized, and the package's errors as 4xx/503 JSON bodies."""
    @web.authenticated
    @authorized
    @functools.wraps(method)
    async def wrapper(self, *args, **kwargs):
        try:
            return await method(self, *args, **kwargs)
        except web.HTTPError:
            raise
        except Exception as exc:
            for kind, status in STATUS:
                if isinstance(exc, kind):
                    extra = {"cycle": exc.cycle} if isinstance(exc, CycleError) else {}
                    raise ApiError(status, str(exc).strip("'\""), **extra) from exc
            raise
    return wrapper


def body_validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(SPEC["components"]["schemas"][name])


NEW_RUN, RESOLVE, TASK_PATCH = (body_validator(n) for n in ("NewRun", "Resolve", "TaskPatch"))


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(map(_has_nul, value))
    return False


class Handler(ExtensionHandlerMixin, APIHandler):
    auth_resource = RESOURCE

    @property
    def ao(self):
        return self.extensionapp

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None))[1]
        if isinstance(exc, ApiError) and exc.extra:
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"message": exc.log_message.replace("%%", "%"),
                                    "reason": exc.reason, **exc.extra}))
            return
        super().write_error(status_code, **kwargs)

    def reply(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(data, default=str))

    def body(self, validator: Draft202012Validator | None = None) -> dict[str, Any]:
        try:
            data = json.loads(self.request.body or b"{}")
        except ValueError as exc:
            raise ApiError(400, f"the body is not JSON: {exc}") from None
        if validator is not None:
            error = best_match(validator.iter_errors(data))
            if error is not None:
                where = "/".join(map(str, error.absolute_path)) or "body"
                raise ApiError(400, f"{where}: {error.message}")
        if _has_nul(data):
            raise ApiError(400, "the body holds a NUL character, which no field may contain")
        return data

    def int_arg(self, name: str, default: int, low: int = 0, high: int | None = None) -> int:
        raw = self.get_query_argument(name, None)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ApiError(400, f"{name} must be an integer, not {raw!r}") from None
        if value < low or (high is not None and value > high):
            raise ApiError(400, f"{name} must be between {low} and {high}")
        return value

    def bool_arg(self, name: str) -> bool:
        raw = self.get_query_argument(name, "false").lower()
        if raw not in ("true", "false", "1", "0"):
            raise ApiError(400, f"{name} must be true or false, not {raw!r}")
        return raw in ("true", "1")

    async def read(self, ref: StoreRef, fn):
        return await asyncio.wrap_future(ref.store.submit(fn))

    async def off_loop(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.ao.executor, fn, *args)

    async def locate(self, run_id: str) -> StoreRef:
        """The store that holds ``run_id`` (``?store=`` narrows the search)."""
        sid = self.get_query_argument("store", None)
        if sid is not None and self.ao.index.get(sid) is None:
            raise ApiError(404, f"unknown store {sid!r}: GET {API}/stores lists them")
        cached = self.ao.run_stores.get(run_id)
        if cached is not None and (sid is None or sid == cached) and self.ao.index.get(cached):
            return self.ao.index.get(cached)
        for attempt in range(2):
            refs = [self.ao.index.get(sid)] if sid else list(self.ao.index)
            found = await asyncio.gather(*(self._has_run(ref, run_id) for ref in refs))
            for ref, yes in zip(refs, found):
                if yes:
                    self.ao.run_stores[run_id] = ref.id
                    return ref
            if attempt == 0:  # a store made since the last walk (at most one walk per FRESH s)
                await self.ao.index.fresh(FRESH)
        raise ApiError(404, f"unknown run {run_id!r}")

    async def _has_run(self, ref: StoreRef, run_id: str) -> bool:
        try:
            return bool(await self.read(ref, lambda con: con.execute(
                "select 1 from runs where run_id = ?", [run_id]).fetchall()))
        except Exception:  # noqa: BLE001 - an unreadable store holds no run we can serve
            return False

    async def run_summary(self, ref: StoreRef, run_id: str) -> dict[str, Any]:
        found = await self.read(ref, lambda con: queries.runs(con, run_id))
        if not found:
            raise ApiError(404, f"unknown run {run_id!r}")
        return self.decorate(ref, found[0])

    def decorate(self, ref: StoreRef, run: dict[str, Any]) -> dict[str, Any]:
        job = self.ao.jobs.for_run(run["id"])
        described = self.ao.jobs.describe(job) if job else {}
        return {**run, "store": ref.id, "job": described.get("id"),
                "notebook": described.get("notebook")}

    async def command(self, run_id: str, kind: str, payload: dict[str, Any]) -> dict[str, str]:
        ref = await self.locate(run_id)
        if "task_id" in payload and not await self.read(
                ref, lambda con: queries.has_task(con, run_id, payload["task_id"])):
            raise ApiError(404, f"unknown task {payload['task_id']!r} in run {run_id}")
        source = f"rest:{self.current_user.username}"
        status = await self.off_loop(remote.send_command, ref.store, run_id, kind, payload, source)
        return {"status": status}


class OpenAPIHandler(Handler):
    @api
    async def get(self) -> None:
        spec = {**SPEC, "servers": [{"url": url_path_join(self.base_url, API)}]}
        self.reply(spec)


class StoresHandler(Handler):
    @api
    async def get(self) -> None:
        await self.ao.index.fresh(FRESH)
        self.reply({"stores": [ref.describe() for ref in self.ao.index]})


class RunsHandler(Handler):
    @api
    async def get(self) -> None:
        offset = self.int_arg("offset", 0)
        limit = self.int_arg("limit", 50, 1, MAX_LIMIT)
        sid = self.get_query_argument("store", None)
        await self.ao.index.fresh(FRESH)
        refs = list(self.ao.index)
        if sid is not None:
            refs = [r for r in refs if r.id == sid]
            if not refs:
                raise ApiError(404, f"unknown store {sid!r}: GET {API}/stores lists them")
        results = await asyncio.gather(*(self.read(ref, queries.runs) for ref in refs),
                                       return_exceptions=True)
        runs, unavailable = [], []
        for ref, result in zip(refs, results):
            if isinstance(result, BaseException):
                unavailable.append({"store": ref.id, "message": f"{type(result).__name__}: {result}"})
                continue
            for run in result:
                self.ao.run_stores[run["id"]] = ref.id
                runs.append(self.decorate(ref, run))
        runs.sort(key=lambda r: r["created_at"] or "", reverse=True)
        self.reply({"runs": runs[offset:offset + limit], "total": len(runs), "offset": offset,
                    "limit": limit, "unavailable": unavailable})

    @api
    async def post(self) -> None:
        body = self.body(NEW_RUN)
        workspace = await self.off_loop(self.ao.jobs.workspace, body["workspace"])
        await self.off_loop(workspace.require_clean)
        job = await self.ao.jobs.start(
            workspace.root, objective=body["objective"].strip(), model=body.get("model", "demo"),
            workers=int(body.get("workers", 3)), max_retries=int(body.get("max_retries", 4)))
        self.set_header("Location", url_path_join(self.base_url, API, "jobs", job.id))
        self.reply({"job": self.ao.jobs.describe(job)}, 202)


class JobsHandler(Handler):
    @api
    async def get(self, job_id: str | None = None) -> None:
        jobs = self.ao.jobs
        if job_id is None:
            self.reply({"jobs": [jobs.describe(j) for j in jobs.jobs.values()]})
            return
        if job_id not in jobs.jobs:
            raise ApiError(404, f"unknown job {job_id!r}")
        self.reply(jobs.describe(jobs.jobs[job_id]))


class RunHandler(Handler):
    @api
    async def get(self, run_id: str) -> None:
        ref = await self.locate(run_id)
        detail = await self.read(ref, lambda con: queries.run_detail(con, run_id))
        if detail is None:
            raise ApiError(404, f"unknown run {run_id!r}")
        detail["run"] = self.decorate(ref, detail["run"])
        self.reply(detail)


class RunActionHandler(Handler):
    @api
    async def post(self, run_id: str, action: str) -> None:
        self.body()  # a body, if any, must at least be JSON
        ref = await self.locate(run_id)
        run = await self.run_summary(ref, run_id)
        if action == "restart":
            if run["live"]:
                raise ApiError(409, f"run {run_id} is live: it needs no restart")
            if run["workspace"] is None:
                raise ApiError(409, f"run {run_id} has no recorded workspace to restart in")
            workspace = await self.off_loop(self.ao.jobs.workspace, run["workspace"])
            job = await self.ao.jobs.start(workspace.root, resume=run_id, store=ref.path)
            self.reply({"job": self.ao.jobs.describe(job)}, 202)
        elif action == "dashboard":
            path = await self.off_loop(self.ao.jobs.dashboard, ref.path, run)
            self.reply({"path": path})
        else:
            if action == "cancel" and RunStatus(run["status"]).finished:
                raise ApiError(409, f"run {run_id} is {run['status']}: there is nothing to cancel")
            self.reply(await self.command(run_id, action, {}))


class InterruptsHandler(Handler):
    @api
    async def get(self, run_id: str | None = None) -> None:
        if run_id is not None:
            refs = [await self.locate(run_id)]
        else:
            await self.ao.index.fresh(FRESH)
            refs = list(self.ao.index)
        results = await asyncio.gather(*(self.read(ref, lambda con: queries.interrupts(con, run_id))
                                         for ref in refs), return_exceptions=True)
        found, unavailable = [], []
        for ref, result in zip(refs, results):
            if isinstance(result, BaseException):
                unavailable.append({"store": ref.id, "message": f"{type(result).__name__}: {result}"})
            else:
                found += [{**i, "store": ref.id} for i in result]
        found.sort(key=lambda i: i["ts"] or "")
        self.reply({"interrupts": found, "unavailable": unavailable})


class TaskHandler(Handler):
    @api
    async def patch(self, run_id: str, task_id: str) -> None:
        body = self.body(TASK_PATCH)
        status = "applied"
        for kind, key in (("add_dependency", "add_dependencies"),
                          ("remove_dependency", "remove_dependencies")):
            for dep in body.get(key, []):
                status = (await self.command(run_id, kind, {"task_id": task_id,
                                                            "depends_on": dep}))["status"]
        self.reply({"status": status})

    @api
    async def delete(self, run_id: str, task_id: str) -> None:
        self.reply(await self.command(run_id, "abandon_task", {
            "task_id": task_id, "cascade": self.bool_arg("cascade"),
            "drop_dependency": self.bool_arg("drop_dependency")}))


class TaskActionHandler(Handler):
    @api
    async def post(self, run_id: str, task_id: str, action: str) -> None:
        if action == "interrupt":
            self.body()
            self.reply(await self.command(run_id, "interrupt", {"task_id": task_id}))
            return
        body = self.body(RESOLVE)
        self.reply(await self.command(run_id, "resolve", {"task_id": task_id, **body}))


class MessagesHandler(Handler):
    @api
    async def get(self, run_id: str, task_id: str) -> None:
        offset = self.int_arg("offset", 0)
        limit = self.int_arg("limit", 100, 1, MAX_LIMIT)
        attempt = self.get_query_argument("attempt", None)
        attempt = None if attempt is None else self.int_arg("attempt", 0, 0)
        ref = await self.locate(run_id)

        def page(con):
            if not queries.has_task(con, run_id, task_id):
                return None
            return queries.messages(con, run_id, task_id, offset, limit, attempt)
        found = await self.read(ref, page)
        if found is None:
            raise ApiError(404, f"unknown task {task_id!r} in run {run_id}")
        self.reply(found)


class DiffHandler(Handler):
    @api
    async def get(self, run_id: str, task_id: str, attempt: str) -> None:
        if not attempt.isdigit() or len(attempt) > 6:
            raise ApiError(400, f"attempt must be a number from 0 to 999999, not {attempt[:20]!r}")
        ref = await self.locate(run_id)
        found = await self.read(ref, lambda con: queries.attempt_diff(con, run_id, task_id, int(attempt)))
        if found is None:
            raise ApiError(404, f"run {run_id} has no attempt {attempt} of task {task_id!r}")
        self.reply(found)


SEGMENT = r"[^/]+"


def routes() -> list[tuple]:
    run = rf"{API}/runs/(?P<run_id>{SEGMENT})"
    task = rf"{run}/tasks/(?P<task_id>{SEGMENT})"
    return [
        (rf"{API}/openapi\.json", OpenAPIHandler),
        (rf"{API}/stores", StoresHandler),
        (rf"{API}/runs", RunsHandler),
        (rf"{API}/jobs", JobsHandler),
        (rf"{API}/jobs/(?P<job_id>{SEGMENT})", JobsHandler),
        (rf"{API}/interrupts", InterruptsHandler),
        (run, RunHandler),
        (rf"{run}/(?P<action>cancel|replan|restart|dashboard)", RunActionHandler),
        (rf"{run}/interrupts", InterruptsHandler),
        (task, TaskHandler),
        (rf"{task}/(?P<action>resolve|interrupt)", TaskActionHandler),
        (rf"{task}/messages", MessagesHandler),
        (rf"{task}/attempts/(?P<attempt>{SEGMENT})/diff", DiffHandler),
    ]
