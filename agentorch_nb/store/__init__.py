"""The DuckDB store: schema, batched writes, cross-process access, replay."""

from .migrations import SCHEMA_VERSION
from .store import Store, default_path

__all__ = ["SCHEMA_VERSION", "Store", "default_path"]
