"""The engine: dispatch loop, Phoenix retry policy, human-in-the-loop commands."""

from .dispatch import Engine
from .protocols import Agents, Context, Director, Strategist, Worker

__all__ = ["Agents", "Context", "Director", "Engine", "Strategist", "Worker"]
