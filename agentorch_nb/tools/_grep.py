"""Text search over a directory, run as a script in its own process by ``search_codebase``
(so the search has a time limit and can be killed, and never holds the caller's loop).

stdin: a JSON spec {root, pattern, regex, case_sensitive, glob, max_results};
stdout: ``path:line: text`` per match, then a ``[...]`` line if the search stopped early.
Only the standard library: it runs with ``python -I``, outside the package.
"""

import fnmatch
import json
import os
import re
import sys

SKIP_DIRS = {".git", "__pycache__", "node_modules", ".venv", "venv", ".mypy_cache",
             ".pytest_cache", ".tox", ".agentorch"}
MAX_FILE_BYTES = 2_000_000
MAX_LINE = 300


def files(top, glob):
    if os.path.isfile(top):
        yield top
        return
    for here, dirs, names in os.walk(top):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for name in sorted(names):
            if glob is None or fnmatch.fnmatch(name, glob):
                yield os.path.join(here, name)


def main():
    spec = json.load(sys.stdin)
    flags = 0 if spec["case_sensitive"] else re.IGNORECASE
    source = spec["pattern"] if spec["regex"] else re.escape(spec["pattern"])
    pattern = re.compile(source, flags)
    root, found, limit = spec["root"], 0, spec["max_results"]
    for path in files(spec["top"], spec.get("glob")):
        try:
            if os.path.islink(path) or os.path.getsize(path) > MAX_FILE_BYTES:
                continue
            with open(path, "rb") as fh:
                raw = fh.read()
        except OSError:
            continue
        if b"\x00" in raw[:8192]:
            continue
        shown = os.path.relpath(path, root)
        for number, line in enumerate(raw.decode(errors="replace").splitlines(), 1):
            if pattern.search(line):
                text = line.strip()
                if len(text) > MAX_LINE:
                    text = text[:MAX_LINE] + " [...]"
                print(f"{shown}:{number}: {text}")
                found += 1
                if found >= limit:
                    print(f"[... stopped after {limit} matches; narrow the pattern, path or glob]")
                    return
    if not found:
        print("(no matches)")


if __name__ == "__main__":
    main()
