"""The LLM layer's own errors, and how a provider's failure is read: what it says, whether
it is worth retrying, and how long the provider asked us to wait (Retry-After).

The engine turns each of our errors into a failed attempt or an interrupt.

>>> class Throttled(Exception):
...     status_code, headers = 429, {"Retry-After": "3"}
>>> retry_after(Throttled("slow down")), describe(Throttled("slow down"))
(3.0, 'Throttled 429: slow down')

A missing or rejected key is a credential failure whatever status the provider library
gave it (litellm reports OpenAI's "Missing credentials" as a 500):

>>> credential_failure(Exception("InternalServerError: Missing credentials. Please pass an `api_key`"))
True
"""

from __future__ import annotations

import asyncio
import email.utils
import re
import time
from enum import StrEnum
from typing import Any

from ..exceptions import AgentorchError, InvalidInput


class LLMError(AgentorchError):
    """Base class of the errors of :mod:`agentorch_nb.llm`."""


class LLMCallFailed(LLMError):
    """A model call failed for good: retries ran out, or the provider refused the request.

    ``retryable`` says whether the last failure was of a kind worth retrying later (rate
    limit, server error, timeout, connection) or will fail again as it is (bad request,
    authentication, unknown model).
    """

    def __init__(
        self,
        message: str,
        *,
        model: str,
        role: str,
        attempts: int,
        retryable: bool,
        last_error: str,
    ) -> None:
        self.model = model
        self.role = role
        self.attempts = attempts
        self.retryable = retryable
        self.last_error = last_error
        super().__init__(message)


class CredentialsRejected(LLMCallFailed):
    """The provider refused the call for its credentials: a key missing, wrong or expired.
    Never retried: the same key fails the same way until someone changes it."""


class BudgetExceeded(LLMError):
    """The LLM instance has spent its budget; no further call is made."""

    def __init__(self, message: str, *, spent_usd: float, spent_tokens: int) -> None:
        self.spent_usd = spent_usd
        self.spent_tokens = spent_tokens
        super().__init__(message)


class ScriptError(LLMError, InvalidInput):
    """A scripted-provider script is invalid, unknown, or has no rule for a request."""


# ------------------------------------------------------- reading failures
def own_error(exc: BaseException) -> LLMError | None:
    """Our own error (a ScriptError from the scripted provider) that litellm wrapped."""
    seen = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, LLMError):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def _stream_cause(exc: BaseException) -> BaseException | None:
    """The provider's error behind litellm's MidStreamFallbackError (how a failed stream
    surfaces; its status is the cause's, or 503), or None."""
    from litellm import exceptions

    wrapper = getattr(exceptions, "MidStreamFallbackError", None)
    if wrapper is not None and isinstance(exc, wrapper):
        return getattr(exc, "original_exception", None)
    return None


def describe(exc: BaseException) -> str:
    cause = _stream_cause(exc)
    if cause is not None:
        return describe(cause)
    if isinstance(exc, asyncio.TimeoutError):
        return "timeout: no answer within the call timeout"
    text = str(exc).split("\nTraceback", 1)[0].strip()
    status = getattr(exc, "status_code", None)
    head = f"{type(exc).__name__}" + (f" {status}" if status else "")
    return f"{head}: {text[:500]}" if text else head


class Failure(StrEnum):
    """What a failed call means, which decides whether it is tried again."""

    TRANSIENT = "transient"  # rate limit, server error, timeout, connection: worth retrying
    CREDENTIALS = "credentials"  # a key missing, wrong or expired: fails again until changed
    REFUSED = "refused"  # the request itself (bad request, unknown model): fails again


# How providers (through litellm) word a missing or rejected key, whatever status they send.
CREDENTIAL_WORDS = re.compile(
    r"missing credentials|api[_ ]?key client option must be set"
    r"|\b(?:invalid|incorrect|missing|wrong|expired|revoked|no)\b[\w -]{0,30}\bapi[_ -]?key"
    r"|\bapi[_ -]?key\b[\w ]{0,20}\b(?:is invalid|is missing|not set|not valid|not provided|"
    r"expired|revoked)", re.IGNORECASE)


def credential_failure(exc: BaseException) -> bool:
    """Whether ``exc`` says the credentials were missing or refused (a 401, litellm's
    AuthenticationError, or a message about the key under any status)."""
    if getattr(exc, "status_code", None) == 401 or type(exc).__name__ == "AuthenticationError":
        return True
    if CREDENTIAL_WORDS.search(str(exc).split("\nTraceback", 1)[0]):
        return True
    cause = _stream_cause(exc)
    return cause is not None and credential_failure(cause)


def classify(exc: BaseException) -> tuple[Failure, float | None]:
    """(what the failure means, seconds the provider asked us to wait)."""
    import litellm

    if credential_failure(exc):  # first: litellm wraps some of them as 500s or connection errors
        return Failure.CREDENTIALS, None
    if isinstance(exc, (asyncio.TimeoutError, litellm.Timeout, litellm.APIConnectionError)):
        return Failure.TRANSIENT, None
    status = getattr(exc, "status_code", None)
    if isinstance(exc, litellm.RateLimitError) or status == 429:
        return Failure.TRANSIENT, retry_after(exc)
    if isinstance(status, int) and (status >= 500 or status == 408):
        return Failure.TRANSIENT, retry_after(exc)
    return Failure.REFUSED, None


def retry_after(exc: BaseException) -> float | None:
    """Seconds from ``exc.retry_after`` or a Retry-After / retry-after-ms response header."""
    value = getattr(exc, "retry_after", None)
    if isinstance(value, (int, float)) and value >= 0:
        return float(value)
    cause = _stream_cause(exc)
    if cause is not None and (after := retry_after(cause)) is not None:
        return after
    headers: list[Any] = []
    response = getattr(exc, "response", None)
    if response is not None and getattr(response, "headers", None) is not None:
        headers.append(response.headers)
    for attr in ("litellm_response_headers", "headers"):
        if getattr(exc, attr, None):
            headers.append(getattr(exc, attr))
    for h in headers:
        try:
            lower = {str(k).lower(): str(v) for k, v in dict(h).items()}
        except Exception:  # noqa: BLE001 - an odd headers object: ignore it
            continue
        if "retry-after-ms" in lower:
            try:
                return float(lower["retry-after-ms"]) / 1000
            except ValueError:
                pass
        if "retry-after" in lower:
            raw = lower["retry-after"].strip()
            try:
                return max(0.0, float(raw))
            except ValueError:
                try:
                    when = email.utils.parsedate_to_datetime(raw)
                except (TypeError, ValueError):
                    continue
                return max(0.0, when.timestamp() - time.time())
    return None
