"""The LLM client every agent calls: one path through ``litellm.acompletion`` for every model.

A call picks the role's model, waits for the process-wide rate limits, checks the budget,
calls litellm with a per-attempt timeout and no retries of its own, and retries 429s
(after Retry-After), 5xx, timeouts and connection errors with exponential backoff and
jitter. Every HTTP attempt, failed or not, becomes one ``llm_calls`` row. With ``on_chunk``
the call is streamed (``streaming.py``) and everything else stays the same. A missing or
refused key is never retried, whatever status the provider gave it (``errors.classify``).

litellm is imported on the first call, never at package import (it takes seconds), and
with ``LITELLM_LOCAL_MODEL_COST_MAP`` set so it never fetches its cost map from the network.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import (BudgetExceeded, CredentialsRejected, Failure, LLMCallFailed, LLMError,
                     classify, describe, own_error)
from .limits import RateLimiter, shared_limiter
from .preflight import credential_advice
from .reply import Reply, ToolCall
from .script import message_text
from .scripted import PROVIDER as SCRIPTED
from .settings import Models, load_env_file
from .streaming import ChunkRelay, assemble, read_stream, stream_params

log = logging.getLogger("agentorch_nb.llm")

_setup_lock = threading.Lock()
_litellm_mod: Any = None

# Before anything imports litellm: its cost map (and other catalogs) come from the copies
# bundled with it, never from the network. LITELLM_OFFLINE_MODE may be set to "false" first
# by whoever wants litellm's other online catalogs (tokenizers, Anthropic beta headers).
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
os.environ.setdefault("LITELLM_OFFLINE_MODE", "True")


def litellm_module() -> Any:
    """litellm, imported offline and quiet, with the scripted provider registered."""
    global _litellm_mod
    if _litellm_mod is not None:
        return _litellm_mod
    with _setup_lock:
        if _litellm_mod is None:
            os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
            import litellm

            try:  # an internal API of recent litellm versions: only used for this warning
                from litellm.litellm_core_utils.get_model_cost_map import (
                    get_model_cost_map_source_info,
                )
            except ImportError:
                get_model_cost_map_source_info = dict
            if get_model_cost_map_source_info().get("source", "local") != "local":
                log.warning(
                    "litellm was imported before agentorch_nb.llm without "
                    "LITELLM_LOCAL_MODEL_COST_MAP=True and loaded its cost map from the network"
                )

            litellm.suppress_debug_info = True
            litellm.set_verbose = False
            if hasattr(litellm, "telemetry"):
                litellm.telemetry = False
            for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
                logger = logging.getLogger(name)
                if not logger.isEnabledFor(logging.DEBUG):
                    logger.setLevel(logging.ERROR)
            from .scripted import install

            install()
            _log_only_to_callbacks(litellm)
            _litellm_mod = litellm
    return _litellm_mod


# Where litellm keeps the callbacks a success log goes to (names of several versions).
CALLBACK_LISTS = ("callbacks", "success_callback", "failure_callback", "_async_success_callback",
                  "_async_failure_callback", "input_callback", "service_callback")


def _log_only_to_callbacks(litellm: Any) -> None:
    """Hand litellm's logging worker a call's success log only when a callback will read it.

    litellm queues every call's success log on one process-wide worker task, bound to the loop
    of the latest call. A call on another loop (a test's, the package's background loop, a
    kernel's) replaces that task while it still waits, and the garbage collector later reports
    "Task was destroyed but it is pending!". With no callback configured the log has no reader,
    so the worker is not started at all; set a litellm callback and it runs as litellm made it.
    """
    try:
        from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER as worker
    except ImportError:  # a litellm without the worker: nothing to keep quiet
        return
    enqueue = worker.ensure_initialized_and_enqueue

    def enqueue_if_read(async_coroutine: Any) -> None:
        if any(getattr(litellm, name, None) for name in CALLBACK_LISTS):
            enqueue(async_coroutine)
        else:
            async_coroutine.close()  # never started: closing it is all it needs

    worker.ensure_initialized_and_enqueue = enqueue_if_read


@dataclass
class _Spent:
    usd: float = 0.0
    tokens: int = 0
    calls: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class LLM:
    """The client agents use. One per run: its budget and its ``llm_calls`` rows are the run's.

    ``store`` and ``run_id`` are optional (without them no rows are written). ``limiter``
    defaults to the process-wide one, which ``models.rate_limits`` and
    ``models.max_concurrent_calls`` configure. ``workspace``'s ``.env`` (then the current
    directory's) is read into the environment without overriding what is set. The variables
    named by ``api_key_env`` and the literal ``api_key`` values of ``models.endpoints`` become
    secrets of the process (:func:`agentorch_nb.tools.secrets.add_secrets`).
    """

    def __init__(
        self,
        models: Models | None = None,
        *,
        store: Any = None,
        run_id: str | None = None,
        workspace: str | os.PathLike | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.models = models or Models()
        self.store = store
        self.run_id = run_id
        if store is not None and not run_id:
            raise LLMError("an LLM that records to a store needs the run_id its calls belong to")
        load_env_file(*(d for d in (workspace, Path.cwd()) if d is not None))
        from ..tools.secrets import add_secrets  # here: the tools package is not needed before

        # Whatever their names, the models' keys never reach a tool's subprocess or output.
        add_secrets(*self.models.secrets())
        self.limiter = limiter or shared_limiter()
        self.limiter.configure(self.models.max_concurrent_calls, self.models.rate_limits)
        self._spent = _Spent()

    # ----------------------------------------------------------------- totals
    @property
    def spent_usd(self) -> float:
        return self._spent.usd

    @property
    def spent_tokens(self) -> int:
        return self._spent.tokens

    def check_budget(self) -> None:
        """Raise BudgetExceeded if the budget is used up (calls in flight may overshoot it)."""
        # Where one keeper counts the spending of every process (a cluster's limiter),
        # its totals are the run's; otherwise this client's own are.
        shared = self.limiter.shared_spend()
        usd, tokens = shared if shared is not None else (self._spent.usd, self._spent.tokens)
        m, over = self.models, []
        if m.budget_usd is not None and usd >= m.budget_usd:
            over.append(f"${usd:.4f} of ${m.budget_usd:.4f}")
        if m.budget_tokens is not None and tokens >= m.budget_tokens:
            over.append(f"{tokens} of {m.budget_tokens} tokens")
        if over:
            raise BudgetExceeded(
                f"the LLM budget is spent ({'; '.join(over)}); no further model call was made. "
                "Raise Models.budget_usd / budget_tokens to go on.",
                spent_usd=usd, spent_tokens=tokens)

    # ------------------------------------------------------------------ calls
    async def complete(
        self,
        *,
        role: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        task_id: str | None = None,
        attempt: int | None = None,
        profile: str | None = None,
        title: str | None = None,
        timeout: float | None = None,
        on_chunk: Callable[[str], None] | None = None,
        **params: Any,
    ) -> Reply:
        """One chat completion for ``role``; retries transient failures.

        ``title`` (the task's) is only read by scripted models. ``params`` go to litellm
        as they are (``max_tokens``, ``response_format``, ...). Raises LLMCallFailed when
        the call fails for good, BudgetExceeded before spending past the budget, and
        ScriptError when a scripted model has no reply.

        ``on_chunk(text)``, when given, streams the call: it receives each piece of the reply's
        text as it arrives, on the event loop this call runs on, and the returned Reply is the
        same as without it. A try that fails after some pieces were delivered is retried like
        any other, and the retry's reply arrives from its beginning again, with no marker in
        between: a watcher that wants only the final text should take the recorded reply. A
        callback that raises is logged and called no more; the call goes on. Models that
        cannot stream are called the plain way (``on_chunk`` then sees nothing).

            reply = await llm.complete(role="worker", messages=msgs, on_chunk=print)
        """
        # The first import takes seconds: on a thread, so the loop (a kernel's) goes on.
        litellm = _litellm_mod or await asyncio.to_thread(litellm_module)
        m = self.models
        profile = None if profile is None else str(getattr(profile, "value", profile))
        model = m.model_for(role, profile)
        kwargs: dict[str, Any] = {**m.endpoint_for(model), **params}
        temperature = m.temperature_for(role, profile)
        if temperature is not None:
            kwargs.setdefault("temperature", temperature)
        if tools:
            kwargs["tools"] = tools
        if model.startswith(SCRIPTED + "/"):
            kwargs["metadata"] = {"agentorch": {
                "run_id": self.run_id, "role": role, "task_id": task_id,
                "attempt": attempt, "profile": profile, "title": title,
            }}
        per_try = timeout or m.call_timeout
        streamed = stream_params(litellm, model) if on_chunk is not None else None
        relay = ChunkRelay(on_chunk, model, role) if streamed is not None else None
        estimate = _estimate_tokens(messages, tools)
        where = dict(task_id=task_id, attempt=attempt, role=role, model=model)

        for n in range(1, m.max_retries + 2):
            self.check_budget()
            delay = 0.0
            async with self.limiter.slot(model, estimate) as use:
                self.check_budget()  # again: calls that ended while this one waited count
                t0 = time.monotonic()
                try:
                    # litellm bounds each HTTP read by the timeout; ours bounds the whole
                    # attempt, custom providers included. Either counts as a timeout.
                    call = litellm.acompletion(
                        model=model, messages=messages, timeout=per_try, num_retries=0,
                        max_retries=0, drop_params=True, **kwargs, **(streamed or {}),
                    )
                    if relay is not None:  # the whole stream is read within the try's time
                        call = read_stream(call, relay)
                    resp = await asyncio.wait_for(call, per_try)
                except asyncio.CancelledError:
                    self._record(where, t0, error="cancelled")
                    raise
                except Exception as exc:  # noqa: BLE001 - classified below
                    own = own_error(exc)
                    error = str(own) if own is not None else describe(exc)
                    self._record(where, t0, error=f"try {n}: {error}")
                    use.tokens = 0
                    if own is not None:
                        raise own from None
                    failure, retry_after = classify(exc)
                    if failure is Failure.CREDENTIALS:
                        raise CredentialsRejected(
                            f"{model} could not be called for the {role}: its credentials are "
                            f"missing or refused ({error}). This is not retried: "
                            f"{credential_advice(m, model)}.",
                            model=model, role=role, attempts=n, retryable=False, last_error=error,
                        ) from exc
                    if failure is Failure.REFUSED:
                        raise LLMCallFailed(
                            f"{model} refused the {role}'s request: {error}. This is not retried; "
                            "check the model name and the request.",
                            model=model, role=role, attempts=n, retryable=False, last_error=error,
                        ) from exc
                    if n > m.max_retries:
                        raise LLMCallFailed(
                            f"{model} failed {n} times for the {role} (last: {error}). Retry "
                            "later, or raise Models.max_retries / call_timeout.",
                            model=model, role=role, attempts=n, retryable=True, last_error=error,
                        ) from exc
                    if retry_after is not None and retry_after > m.max_retry_after:
                        raise LLMCallFailed(
                            f"{model} asked to wait {retry_after:.0f} s before retrying, more than "
                            f"Models.max_retry_after ({m.max_retry_after:.0f} s): {error}",
                            model=model, role=role, attempts=n, retryable=True, last_error=error,
                        ) from exc
                    backoff = min(m.backoff_max, m.backoff_base * 2 ** (n - 1))
                    backoff *= 0.5 + random.random()  # jitter spreads callers that failed together
                    delay = backoff
                    if retry_after:
                        delay = max(backoff, retry_after * (1 + 0.1 * random.random()))
                    log.info("%s: %s; retrying in %.2f s", model, error, delay)
                else:
                    try:
                        if relay is not None:
                            resp = assemble(litellm, resp, messages)
                        reply = self._reply(litellm, resp, model, t0, n, estimate)
                    except Exception as exc:  # noqa: BLE001 - a response without the usual shape
                        error = f"unreadable response: {describe(exc)}"
                        self._record(where, t0, error=f"try {n}: {error}")
                        raise LLMCallFailed(
                            f"{model} answered the {role} with a response that is not a chat "
                            f"completion ({error}); check the model name and api_base.",
                            model=model, role=role, attempts=n, retryable=False, last_error=error,
                        ) from exc
                    use.tokens = reply.tokens_in + reply.tokens_out
                    use.cost_usd, use.billed = reply.cost_usd, True
                    self._record(where, t0, reply=reply)
                    return reply
            await asyncio.sleep(delay)  # outside the slot: a waiting retry holds no capacity
        raise AssertionError("unreachable")

    # ------------------------------------------------------------- internals
    def _reply(
        self, litellm: Any, resp: Any, model: str, t0: float, tries: int, estimate: int
    ) -> Reply:
        choice = resp.choices[0]
        msg = choice.message
        calls = [
            ToolCall.parse(tc.id or f"call_{i}", tc.function.name, tc.function.arguments)
            for i, tc in enumerate(getattr(msg, "tool_calls", None) or [])
        ]
        usage = getattr(resp, "usage", None)
        if usage is not None and getattr(usage, "prompt_tokens", None) is not None:
            tokens_in = int(usage.prompt_tokens or 0)
            tokens_out = int(getattr(usage, "completion_tokens", 0) or 0)
        else:  # no usage reported: estimate, so that budgets still count something
            tokens_in = estimate
            tokens_out = (len(msg.content or "") + sum(len(c.raw_arguments) for c in calls)) // 4
        return Reply(
            content=msg.content,
            tool_calls=calls,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            cost_usd=_cost(litellm, resp, model, tokens_in, tokens_out),
            model=model,
            latency_ms=(time.monotonic() - t0) * 1000,
            tries=tries,
        )

    def _record(
        self, where: dict, t0: float, *, reply: Reply | None = None, error: str | None = None
    ) -> None:
        latency = (time.monotonic() - t0) * 1000
        tokens_in = reply.tokens_in if reply else 0
        tokens_out = reply.tokens_out if reply else 0
        cost = reply.cost_usd if reply else 0.0
        with self._spent.lock:
            self._spent.usd += cost
            self._spent.tokens += tokens_in + tokens_out
            self._spent.calls += 1
        if self.store is not None:
            self.store.append("llm_calls", {
                "run_id": self.run_id, **where, "tokens_in": tokens_in, "tokens_out": tokens_out,
                "cost_usd": cost, "latency_ms": latency, "error": error,
            })


def _estimate_tokens(messages: list, tools: Any) -> int:
    """A rough count for the tokens-per-minute limit: about four characters a token."""
    chars = sum(len(message_text(m)) for m in messages) + (len(json.dumps(tools)) if tools else 0)
    return max(1, chars // 4)


def _cost(litellm: Any, resp: Any, model: str, tokens_in: int, tokens_out: int) -> float:
    """USD from litellm's local cost map; 0 for scripted and unknown models."""
    if model.startswith(SCRIPTED + "/"):
        return 0.0
    hidden = getattr(resp, "_hidden_params", None) or {}
    if hidden.get("response_cost") is not None:
        return float(hidden["response_cost"])
    try:
        cin, cout = litellm.cost_per_token(
            model=model, prompt_tokens=tokens_in, completion_tokens=tokens_out
        )
        return float(cin + cout)
    except Exception:  # noqa: BLE001 - a model missing from the cost map costs "unknown" = 0
        return 0.0
