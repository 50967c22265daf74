"""The progress model: what a progress view shows, kept cheap enough for every task.

A run may have a million tasks of a few microseconds each, and under ``threads`` the
events arrive on several threads at once.  So the model does the least possible per
event and defers the rest to whoever looks at it:

* ``task_done`` appends the key to :attr:`ProgressModel.done` (``list.append`` is
  atomic under the GIL: no lock, no per-prefix bookkeeping);
* ``task_failed`` records the first failure under a lock (rare);
* :meth:`ProgressModel.snapshot` (called by a view, at most ~10 times a second)
  folds the keys appended since the last snapshot into per-prefix counters.  The
  prefix of each task key (its name part, as Dask's ``key_split``) is computed once,
  at the first snapshot, so a run that ends before a view appears never pays for it.

Tasks the result cache answered (``RunInfo.extra["substituted"]``) are not run, so
they send no events: the model counts them as done from the start, in their prefix's
totals and in a count of their own (``Snapshot.cached``), which the views show in
their own colour, so a rerun that was mostly hits is visibly so.

The model knows no thread, clock-driven redraw or widget: that is ``bar.py`` (the
observer that owns a model and a view) and ``text.py`` / ``widget.py`` (the views).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from ..graph import key_split

__all__ = [
    "ProgressModel",
    "Snapshot",
    "PrefixCount",
    "prefix_function",
    "natural_order",
    "rate_text",
    "RUNNING",
]

RUNNING, DONE, FAILED, INTERRUPTED = "running", "done", "failed", "interrupted"
_TOKEN_CHARS = "0123456789abcdef"


def natural_order(name: str) -> tuple:
    """Sort key of worker names: ``worker-2`` before ``worker-10``."""
    head, _, tail = name.rpartition("-")
    return (head, int(tail)) if tail.isdigit() else (name, -1)


def prefix_function() -> Callable[[Hashable], str]:
    """A memoised ``key_split``: fast for keys that differ only by a trailing token.

    ``('sum-ab12...', 3)`` shares its first element with its siblings, and
    ``'inc-5f2e...'`` splits like ``'inc'`` once the last dash-separated word is a
    token or a number (``key_split`` stops at the first such word), so both are one
    dict lookup after the first key of a kind.
    """
    cache: dict = {}

    def prefix(key: Hashable) -> str:
        head = key[0] if type(key) is tuple and key else key
        if type(head) is str:
            stem, dash, tail = head.rpartition("-")
            if dash and (tail.isdigit() or (len(tail) >= 8 and not tail.strip(_TOKEN_CHARS))):
                head = stem
        try:
            return cache[head]
        except KeyError:
            name = cache[head] = key_split(head)
            return name
        except TypeError:  # an unhashable first element
            return key_split(key)

    return prefix


@dataclass
class PrefixCount:
    name: str
    done: int
    total: int
    failed: bool = False
    cached: int = 0  # of ``done``: answered by the result cache


@dataclass
class Snapshot:
    """The state of a run as a view draws it."""

    done: int
    total: int
    elapsed: float
    state: str  # RUNNING, DONE, FAILED, INTERRUPTED, or why it stopped (ProgressModel.stop)
    prefixes: list[PrefixCount] = field(default_factory=list)
    failed_key: Hashable = None
    error: str = ""  # "ZeroDivisionError: division by zero"
    cached: int = 0  # of ``done``: tasks the result cache answered

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


class ProgressModel:
    """Counters of one run.  Event methods are safe from any thread."""

    def __init__(
        self,
        task_keys: list,
        scheduler: str = "",
        workers: int = 1,
        done: list | None = None,
        cached: Any = (),
    ):
        self.task_keys = task_keys  # not copied: the engine's list, read-only
        self.cached_keys = list(cached)  # answered by the result cache: done at once
        self.cached = len(self.cached_keys)
        self.total = len(task_keys) + self.cached
        self.scheduler = scheduler
        self.workers = workers
        # keys of finished tasks; appended from any thread (a caller may pass the list
        # whose append it handed to the engine as the observer's task_done hook)
        self.done: list = [] if done is None else done
        self.started_at = time.monotonic()
        self.stopped_at: float | None = None
        self.failure: tuple | None = None  # (key, error) of the first failed task
        self.error: BaseException | None = None  # what ended the run
        self.finished = False
        self.stopped: str | None = None  # why the view stopped following (kernel gone)
        self._fail_lock = threading.Lock()  # guards failure
        self._fold_lock = threading.Lock()  # guards the fields below
        self._index: dict | None = None  # task key -> prefix number
        self._names: list[str] = []
        self._totals: list[int] = []
        self._counts: list[int] = []
        self._cached_counts: list[int] = []
        self._folded = 0  # how many of self.done are counted

    # -- events (any thread) --------------------------------------------------------
    def task_failed(self, key: Hashable, error: BaseException) -> None:
        with self._fail_lock:
            if self.failure is None:
                self.failure = (key, error)

    def finish(self, error: BaseException | None) -> None:
        self.error = error
        if self.stopped_at is None:
            self.stopped_at = time.monotonic()
        self.finished = True

    def stop(self, reason: str) -> None:
        """The run will not be followed to its end (the kernel is going): a running or
        interrupted run reads ``reason`` from now on, its clock stops, and no time left
        is estimated.  A run that finished done or failed keeps its state."""
        if self.stopped_at is None:
            self.stopped_at = time.monotonic()
        self.stopped = reason

    # -- reading (views) ------------------------------------------------------------
    def elapsed(self) -> float:
        end = self.stopped_at if self.stopped_at is not None else time.monotonic()
        return end - self.started_at

    def state(self) -> str:
        if not self.finished:
            return self.stopped or RUNNING
        if self.error is None:
            return DONE
        if self.failure is not None or isinstance(self.error, Exception):
            return FAILED
        return self.stopped or INTERRUPTED

    def _build_index(self) -> None:
        prefix = prefix_function()
        index: dict = {}
        numbers: dict[str, int] = {}
        totals: list[int] = []
        # Reversed discovery order lists inputs before the outputs that read them.
        for key in (*reversed(self.task_keys), *self.cached_keys):
            name = prefix(key)
            n = numbers.get(name)
            if n is None:
                n = numbers[name] = len(totals)
                totals.append(0)
            totals[n] += 1
            index[key] = n
        self._index = index
        self._names = list(numbers)
        self._totals = totals
        self._counts = [0] * len(totals)
        self._cached_counts = [0] * len(totals)
        for key in self.cached_keys:
            self._cached_counts[index[key]] += 1
            self._counts[index[key]] += 1

    def snapshot(self) -> Snapshot:
        """Fold new events into the per-prefix counters and describe the run."""
        with self._fold_lock:
            if self._index is None:
                self._build_index()
            index, counts = self._index, self._counts
            done = self.done
            end = len(done)
            for key in done[self._folded : end]:
                n = index.get(key)
                if n is not None:
                    counts[n] += 1
            self._folded = end
            failed_key, error_text, failed_prefix = None, "", -1
            failure = self.failure
            if failure is not None:
                failed_key, exc = failure
                error_text = f"{type(exc).__name__}: {exc}"
                failed_prefix = index.get(failed_key, -1)
            elif self.error is not None:
                error_text = type(self.error).__name__
            totals = self._totals
            cached = self._cached_counts
            prefixes = [
                PrefixCount(
                    name, min(counts[n], totals[n]), totals[n], n == failed_prefix, cached[n]
                )
                for n, name in enumerate(self._names)
            ]
        return Snapshot(
            done=min(end + self.cached, self.total),
            total=self.total,
            elapsed=self.elapsed(),
            state=self.state(),
            prefixes=prefixes,
            failed_key=failed_key,
            error=error_text,
            cached=self.cached,
        )


RATE_AFTER = 1.0  # seconds before a rate and a time left are shown


def rate_text(snap: Snapshot) -> str:
    """``62 tasks/s, ~3 s left`` once a rate means something (as tqdm), else ``""``."""
    if snap.elapsed < RATE_AFTER or snap.done < 2:
        return ""
    rate = snap.done / snap.elapsed
    text = f"{rate:,.0f} tasks/s" if rate >= 10 else f"{rate:.1f} tasks/s"
    if snap.state == RUNNING and snap.done < snap.total:
        text += f", ~{_duration((snap.total - snap.done) / rate)} left"
    return text


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"
