"""What tasks print in worker processes, sent back to the caller with their results.

Shared by the process pool's workers (``schedulers/_worker.py``) and the local
cluster's (``distributed/worker.py``), so it sits below both.  A pool worker's
standard streams are the kernel's file descriptors: left alone, a
task's ``print`` would reach whatever cell the kernel shows output for *now* (or a
terminal), not the cell that started the compute.  So a worker replaces
``sys.stdout`` and ``sys.stderr`` with :class:`Capture` objects at start-up
(:func:`install`); before each message of results it sends what was written since the
last one as an :class:`Output` message (:func:`pending`), and the caller writes it to
its own ``sys.stdout`` / ``sys.stderr`` (:func:`write`).  The caller is the run's
thread: in a notebook, a background job's thread runs in a copy of the submitting
cell's context, so ipykernel sends the text to that cell; a cell's own compute
prints into itself.

A cluster worker runs tasks of several runs on several threads, so it captures per
thread (:class:`ThreadCapture`): each executor thread's writes are kept apart and
sent after each task, with the task's id; the scheduler passes them to the run the
task belongs to, whose caller writes them as above (``distributed/run.py``).

Only Python-level writes are captured; a C library or a child process writing to
file descriptor 1 still goes to the kernel's stream.  Text arrives with the results
it came with (every ``FLUSH_SECONDS`` while a batch runs, see ``_worker.py``).
"""

from __future__ import annotations

import io
import sys
import threading
from typing import NamedTuple

__all__ = [
    "Output",
    "Capture",
    "ThreadCapture",
    "install",
    "install_per_thread",
    "pending",
    "write",
    "write_text",
]


class Output(NamedTuple):
    """worker -> caller: text the batch's tasks wrote, sent before its results."""

    batch: int
    stdout: str
    stderr: str


class Capture(io.TextIOBase):
    """A text stream that keeps what is written (``list.append``: thread-safe) and
    otherwise looks like the stream it replaces (``fileno``, ``encoding``)."""

    def __init__(self, original) -> None:
        super().__init__()
        self.original = original
        self.parts: list[str] = []

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self.parts.append(text)
        return len(text)

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.original.fileno()

    @property
    def encoding(self) -> str:
        return getattr(self.original, "encoding", "utf-8")

    @property
    def buffer(self):
        """The original's binary buffer: bytes written there are not captured."""
        return self.original.buffer

    def isatty(self) -> bool:
        return False

    def take(self) -> str:
        parts, n = self.parts, len(self.parts)
        text = "".join(parts[:n])
        del parts[:n]
        return text


class ThreadCapture(Capture):
    """A :class:`Capture` per registered thread (``register``); other threads write
    through to the original stream."""

    def __init__(self, original) -> None:
        super().__init__(original)
        self.buffers: dict[int, list[str]] = {}  # thread ident -> its parts

    def register(self) -> None:
        self.buffers.setdefault(threading.get_ident(), [])

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        parts = self.buffers.get(threading.get_ident())
        if parts is None:
            return self.original.write(text)
        parts.append(text)
        return len(text)

    def flush(self) -> None:
        flush = getattr(self.original, "flush", None)
        if flush is not None:
            flush()

    def take(self) -> str:
        parts = self.buffers.get(threading.get_ident())
        if not parts:
            return ""
        n = len(parts)
        text = "".join(parts[:n])
        del parts[:n]
        return text


def install_per_thread() -> tuple[ThreadCapture, ThreadCapture]:
    """In a cluster worker: per-thread capture of ``sys.stdout`` and ``sys.stderr``."""
    if not isinstance(sys.stdout, ThreadCapture):
        sys.stdout = ThreadCapture(sys.stdout)
    if not isinstance(sys.stderr, ThreadCapture):
        sys.stderr = ThreadCapture(sys.stderr)
    return sys.stdout, sys.stderr


def install() -> None:
    """In a worker process: capture ``sys.stdout`` and ``sys.stderr`` from now on."""
    if not isinstance(sys.stdout, Capture):
        sys.stdout = Capture(sys.stdout)
    if not isinstance(sys.stderr, Capture):
        sys.stderr = Capture(sys.stderr)


def pending(batch: int) -> Output | None:
    """In a worker: what was written since the last call, or None."""
    out, err = sys.stdout, sys.stderr
    text = out.take() if isinstance(out, Capture) else ""
    errors = err.take() if isinstance(err, Capture) else ""
    return Output(batch, text, errors) if (text or errors) else None


def write(message: Output) -> None:
    """In the caller: write a worker's text to this thread's streams."""
    write_text(message.stdout, message.stderr)


def write_text(stdout: str, stderr: str) -> None:
    """Write ``stdout`` and ``stderr`` text to this thread's streams."""
    for stream, text in ((sys.stdout, stdout), (sys.stderr, stderr)):
        if text and stream is not None:
            stream.write(text)
            stream.flush()
