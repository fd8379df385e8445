"""Executors that run attempts away from the engine: :class:`RayExecutor` runs them on a Ray
cluster (``pip install 'agentorch_nb[ray]'``). Importing this package does not import ray;
a run that uses the executor does, when it starts.

    from agentorch_nb.distributed import RayExecutor
    orch = ao.Orchestrator("repo", config=ao.Config(executor=RayExecutor("auto")))
"""

from .executor import RayExecutor

__all__ = ["RayExecutor"]
