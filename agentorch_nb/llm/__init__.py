"""The LLM layer: the client agents call, its settings, limits and the offline provider.

    from agentorch_nb.llm import LLM, Models, register_script
    register_script("hello", [{"role": "worker", "reply": {"content": "hi"}}])
    llm = LLM(Models(worker_model="scripted/hello"), store=store, run_id=run_id)
    reply = await llm.complete(role="worker", messages=[{"role": "user", "content": "go"}])

Importing this package does not import litellm (it takes seconds); the first call does,
offline (``LITELLM_LOCAL_MODEL_COST_MAP=True``: costs come from litellm's bundled map).
"""

from .client import LLM, Reply, ToolCall, litellm_module
from .errors import BudgetExceeded, CredentialsRejected, LLMCallFailed, LLMError, ScriptError
from .limits import RateLimiter, shared_limiter
from .preflight import ModelCheck, check_models
from .script import Script, get_script, load_script, register_script
from .settings import Models, load_env_file, parse_env

__all__ = [
    "LLM", "BudgetExceeded", "CredentialsRejected", "LLMCallFailed", "LLMError", "ModelCheck",
    "Models", "RateLimiter", "Reply", "Script", "ScriptError", "ToolCall", "check_models",
    "get_script", "litellm_module", "load_env_file", "load_script", "parse_env",
    "register_script", "shared_limiter",
]
