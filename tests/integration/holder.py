"""Another process holding a store's DuckDB file, as an analyst's ``duckdb`` session does."""

import subprocess
import sys
import textwrap
from pathlib import Path


def hold(store: Path, seconds: float | None = None) -> subprocess.Popen:
    """Start a process that opens ``store`` read-only as soon as the file is free, prints
    ``holding``, and lets go after ``seconds`` (printing ``released``), or, with None, when a
    line arrives on its stdin."""
    wait = f"time.sleep({seconds})" if seconds is not None else "sys.stdin.readline()"
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import duckdb, sys, time
        while True:
            try:
                con = duckdb.connect({str(store)!r}, read_only=True)
                break
            except duckdb.IOException:
                time.sleep(0.002)
        print("holding", flush=True)
        {wait}
        con.close()
        print("released", flush=True)""")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True)
