"""The text progress view: one line, redrawn in place, for terminals and plain front ends.

::

    [###---]  52% 5200/10000 tasks | inc 5000/5000, add 200/5000 | 1.3s | 4,000 tasks/s, ~1 s left

It writes to ``sys.stderr`` (like tqdm), rewriting the line with ``\\r`` where that
works: a terminal, or a Jupyter stream (front ends render ``\\r`` as a line rewrite).
Elsewhere (a log file, a pipe) intermediate lines would be noise, so it writes only
the final line.  The final line ends the run's story: ``done``, or ``FAILED`` with
the failing key and the exception's message, or ``interrupted``.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from ..failure import short_key_repr
from .progress import DONE, FAILED, Snapshot, rate_text

__all__ = ["TextView", "format_line"]

BAR_WIDTH = 26
MAX_PREFIXES = 3


def _seconds(value: float) -> str:
    if value < 60:
        return f"{value:.1f}s"
    minutes, seconds = divmod(int(value), 60)
    return f"{minutes}m{seconds:02d}s"


def format_line(snap: Snapshot, title: str = "") -> str:
    """One line describing ``snap``."""
    filled = int(BAR_WIDTH * snap.fraction)
    bar = "#" * filled + "-" * (BAR_WIDTH - filled)
    cached = f" ({snap.cached} cached)" if snap.cached else ""
    parts = [f"[{bar}] {100 * snap.fraction:4.0f}% {snap.done}/{snap.total} tasks{cached}"]
    if len(snap.prefixes) > 1:
        shown = [f"{p.name} {p.done}/{p.total}" for p in snap.prefixes[:MAX_PREFIXES]]
        more = len(snap.prefixes) - MAX_PREFIXES
        if more > 0:
            shown.append(f"+{more} more")
        parts.append(", ".join(shown))
    parts.append(_seconds(snap.elapsed))
    rate = rate_text(snap)
    if rate:
        parts.append(rate)
    if title:
        parts.insert(0, title)
    line = " | ".join(parts)
    if snap.state == DONE:
        line += " | done"
    elif snap.state == FAILED:
        where = f"task {short_key_repr(snap.failed_key)} " if snap.failed_key is not None else ""
        line += f" | FAILED: {where}raised {snap.error}"
    elif snap.state != "running":
        line += f" | {snap.state}" + (f" ({snap.error})" if snap.error else "")
    return line


def _rewritable(stream: Any) -> bool:
    if hasattr(stream, "set_parent"):  # an ipykernel OutStream
        return True
    try:
        return stream.isatty()
    except Exception:
        return False


class TextView:
    """Draws snapshots as one line on ``stream`` (default: ``sys.stderr`` at show time)."""

    interval = 0.2

    def __init__(self, title: str = "", stream: TextIO | None = None):
        self.title = title
        self.stream = stream
        self._width = 0
        self._live = False

    def _write(self, line: str, end: str = "") -> None:
        pad = " " * max(0, self._width - len(line))
        self._width = len(line)
        self.stream.write(("\r" if self._live else "") + line + pad + end)
        self.stream.flush()

    def show(self, snap: Snapshot) -> None:
        if self.stream is None:
            self.stream = sys.stderr
        if _rewritable(self.stream):
            self._write(format_line(snap, self.title))
            self._live = True

    def update(self, snap: Snapshot) -> None:
        if self._live:
            self._write(format_line(snap, self.title))

    def final(self, snap: Snapshot) -> None:
        if self.stream is None:
            self.stream = sys.stderr
        self._write(format_line(snap, self.title), end="\n")
        self._live = False

    def __repr__(self) -> str:
        return f"<TextView title={self.title!r}>"
