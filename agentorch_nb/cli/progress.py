"""A driven run's progress in a terminal: one status line redrawn in place on a TTY, plain
lines (at most one a second, and only when something changed, plus one every 30 s to show
life) when the output is a pipe or a file. Escalations and policy actions are lines of
their own in both cases."""

from __future__ import annotations

import shutil
import time
from typing import TextIO

from ..unattended import Snapshot


def reporter(stream: TextIO):
    isatty = getattr(stream, "isatty", None)
    return TerminalProgress(stream) if isatty is not None and isatty() else LineProgress(stream)


class TerminalProgress:
    """``\\r`` + the status line + erase-to-end-of-line, at most four times a second."""

    def __init__(self, stream: TextIO, interval: float = 0.25) -> None:
        self.stream, self.interval = stream, interval
        self.snap: Snapshot | None = None
        self.drawn_at, self.drawn = 0.0, ""

    def width(self) -> int:
        columns = shutil.get_terminal_size((100, 24)).columns
        return (columns if columns > 20 else 100) - 1

    def update(self, snap: Snapshot) -> None:
        self.snap = snap
        if time.monotonic() - self.drawn_at >= self.interval:
            self.draw()

    def draw(self) -> None:
        if self.snap is None:
            return
        line = self.snap.line(self.width())
        if line != self.drawn:
            self.stream.write(f"\r{line}\x1b[K")
            self.stream.flush()
            self.drawn = line
        self.drawn_at = time.monotonic()

    def note(self, text: str) -> None:
        self.stream.write(f"\r\x1b[K{text}\n")
        self.drawn = ""
        self.draw()

    def close(self) -> None:
        self.draw()
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


class LineProgress:
    """One line per change of the counts, active tasks or status, at most one a second."""

    def __init__(self, stream: TextIO, min_gap: float = 1.0, heartbeat: float = 30.0) -> None:
        self.stream, self.min_gap, self.heartbeat = stream, min_gap, heartbeat
        self.snap: Snapshot | None = None
        self.printed_key: tuple | None = None
        self.printed_at = float("-inf")

    def update(self, snap: Snapshot) -> None:
        self.snap = snap
        since = time.monotonic() - self.printed_at
        if since >= self.min_gap and (snap.key() != self.printed_key or since >= self.heartbeat):
            self.emit()

    def emit(self) -> None:
        self.stream.write(self.snap.line() + "\n")
        self.stream.flush()
        self.printed_key, self.printed_at = self.snap.key(), time.monotonic()

    def note(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.snap is not None and self.snap.key() != self.printed_key:
            self.emit()
