"""The record of a failed task, kept so it can be inspected and rerun locally.

When a task raises, the backend that ran it builds a :class:`TaskFailure` (the key,
the exception, the backend and worker, the remote traceback text for process-based
backends, and the task's inputs where the caller holds them) and stores it as the
*last failure*.  The exception the user receives is the task's own exception, with a
note naming the key and backend added by :func:`annotate`, and a reference to the
record in ``exception.__notebook_sched_failure__``.

The debugging layer (``debug/``) reads this record to rerun the task in the
caller, so ``%debug`` lands in the task's frame; nothing here depends on it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = [
    "TaskFailure",
    "last_failure",
    "record_failure",
    "annotate",
    "key_repr",
    "short_name",
    "short_key_repr",
    "RemoteTraceback",
    "RerunOutcome",
]


class RerunOutcome(StrEnum):
    """What the local rerun of a failed task found: ``TaskFailure.extra["rerun"]``.

    A ``StrEnum`` that prints and displays as its sentence (``local rerun: raised the
    same error``; ``'did not fail'`` in a notebook, as the plain strings it replaces
    did); code compares members.  ``extra["rerun_detail"]`` says more for
    ``NOT_POSSIBLE`` (why) and ``DIFFERENT_ERROR`` (the rerun's error)."""

    SAME_ERROR = "raised the same error"
    DID_NOT_FAIL = "did not fail"
    DIFFERENT_ERROR = "raised a different error"
    NOT_POSSIBLE = "not possible"
    INTERRUPTED = "interrupted"

    __repr__ = str.__repr__

    def describe(self, detail: str | None) -> str:
        """The outcome as one phrase, with its detail: ``not possible: <why>``."""
        return f"{self.value}: {detail}" if detail else self.value


class RemoteTraceback(Exception):
    """Carries the traceback text of a task that failed in another process.

    Set as the ``__cause__`` of the task's exception, so Python prints the remote
    frames above the local ones ("The above exception was the direct cause ...").
    """

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'


@dataclass
class TaskFailure:
    """Everything known about a failed task."""

    key: Hashable
    exception: BaseException
    backend: str
    worker: str
    spec: Any = None  # the engine's spec of the task (see graph.py)
    inputs: dict | None = None  # {dependency key: value}, when the caller holds them
    remote_traceback: str | None = None
    graph: Any = None  # the graph mapping the task came from, for a whole-graph rerun
    requested_keys: Any = None
    extra: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"<TaskFailure key={key_repr(self.key)} backend={self.backend!r} "
            f"worker={self.worker!r} "
            f"raised {type(self.exception).__name__}: {self.exception}>"
        )


_lock = threading.Lock()  # guards _last
_last: TaskFailure | None = None
# Set by the debugging layer (debug/): gives a recorded failure's exception its IPython
# rendering, also when it reaches the user outside ``get`` (``Future.result()``).
_display_hook: Callable[[TaskFailure], None] | None = None


def set_display_hook(hook: Callable[[TaskFailure], None] | None) -> None:
    global _display_hook
    _display_hook = hook


def record_failure(failure: TaskFailure) -> TaskFailure:
    global _last
    with _lock:
        _last = failure
    try:
        failure.exception.__notebook_sched_failure__ = failure  # type: ignore[attr-defined]
    except (AttributeError, TypeError):  # exceptions with __slots__
        pass
    if _display_hook is not None:
        _display_hook(failure)
    return failure


def forget_failure(record: TaskFailure | None, previous: TaskFailure | None) -> None:
    """Put ``previous`` back as the last failure if ``record`` is still the last one
    (a run whose failure is not one to debug, e.g. a cancelled background job)."""
    global _last
    with _lock:
        if record is not None and _last is record:
            _last = previous


def last_failure() -> TaskFailure | None:
    """The most recent task failure in this process, or None."""
    return _last


def key_repr(key: Hashable, limit: int = 200) -> str:
    """``repr(key)`` for messages: a broken or huge repr must not hide the real error."""
    try:
        text = repr(key)
    except Exception:
        text = f"<{type(key).__name__} key with a failing repr>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_token(word: str) -> bool:
    return len(word) >= 8 and not word.strip("0123456789abcdef")


def short_name(name: str, limit: int = 22) -> str:
    """A long fused task name shortened as Dask's ``key_split`` reads one: the words up
    to the first that is not alphabetic, then an ellipsis and the last word (what the
    task finally computes) when it fits: ``bag-from-delayed-file_to_blocks-list-loads-
    pluck-sum-part`` -> ``bag-from-delayed…part``; otherwise the whole words that fit
    and an ellipsis.  Names of ``limit`` characters or fewer are returned as they are."""
    if len(name) <= limit:
        return name
    words = name.split("-")
    head = [words[0]]
    for word in words[1:]:
        if not word.isalpha():
            break
        head.append(word)
    if len(head) < len(words):
        shown = f"{'-'.join(head)}\u2026{words[-1]}"
        if len(shown) <= limit:
            return shown
    kept = words[0][: limit - 1]
    for word in words[1:]:
        if len(kept) + 1 + len(word) > limit - 1:
            break
        kept += "-" + word
    return kept + "\u2026"


def short_key_repr(key: Hashable, limit: int = 60) -> str:
    """``repr(key)``, with a long name part shortened (:func:`short_name`, its token cut
    to 8 characters) when the whole is longer than ``limit``: for headlines and bars,
    next to a way to the full key (``last_failure().key``, a tooltip)."""
    text = key_repr(key)
    if len(text) <= limit:
        return text
    parts = key if type(key) is tuple and key else (key,)
    head = parts[0]
    if type(head) is not str:
        return key_repr(key, limit)
    stem, _, token = head.rpartition("-")
    if stem and _is_token(token):
        head = f"{short_name(stem, 30)}-{token[:8]}"
    else:
        head = short_name(head, 40)
    if type(key) is tuple:
        return key_repr((head, *parts[1:]), limit)
    return key_repr(head, limit)


def annotate(exc: BaseException, key: Hashable, backend: str, worker: str) -> None:
    """Add a note naming the failed key and where it ran (once per exception)."""
    note = f"[notebook_sched] task {key_repr(key)} failed on the {backend!r} scheduler ({worker})"
    notes = getattr(exc, "__notes__", None) or []
    if note not in notes:
        try:
            exc.add_note(note)
        except (AttributeError, TypeError):
            pass
