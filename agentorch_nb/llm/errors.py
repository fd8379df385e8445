"""The LLM layer's own errors. The engine turns each into a failed attempt or an interrupt."""

from __future__ import annotations

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


class BudgetExceeded(LLMError):
    """The LLM instance has spent its budget; no further call is made."""

    def __init__(self, message: str, *, spent_usd: float, spent_tokens: int) -> None:
        self.spent_usd = spent_usd
        self.spent_tokens = spent_tokens
        super().__init__(message)


class ScriptError(LLMError, InvalidInput):
    """A scripted-provider script is invalid, unknown, or has no rule for a request."""
