"""Give the allocator's free memory back to the system while a graph runs (glibc).

Why.  A graph's intermediate results are freed as soon as their last reader has run,
but freeing does not always lower the process's memory (RSS): glibc's ``malloc``
keeps freed heap memory for reuse, and its *adaptive mmap threshold* moves blocks
onto that heap over a run.  A block of up to 32 MiB starts as its own mapping
(returned to the system on ``free``); once such a mapping is freed, glibc raises the
threshold to its size, and later blocks of that size come from the heap, where free
memory below the top stays resident.  How much stays depends on the order of
allocations and frees, so two schedulers holding the same live bytes can differ in
RSS.  Measured on the all-to-all rechunk of issue 22 (20,000² float64, 3.2 GB; the
live bytes the same on both sides): on ``sync`` our order kept ~90 MB more resident
than Dask's (3,586 against 3,496 MB above the RSS before the compute).  With the
trims below, ``make bench-memory`` (median of 3 interleaved rounds) gives 3,285
against 3,427 MB on ``sync`` (11.7 against 10.8 s), 3,449 against 3,648 on
``threads`` and 3,414 against 3,707 on ``auto``.  They did not slow it: our ``sync``
run took 12-16 s without them in the same session (most of either run is the kernel
zeroing fresh pages, which a returned page costs again on reuse).

What.  :class:`HeapTrimmer` is called by :class:`~notebook_sched.engine.RunState`
every ``TICK_TASKS`` finished tasks (a bit test on the count it keeps anyway, so a
task pays nothing more).  It calls ``malloc_trim(0)`` when the run has gone
``MIN_INTERVAL`` since its start or its last trim, and at least ``1 / MAX_SHARE``
times the last trim's own duration, so trimming costs at most ``MAX_SHARE`` of the
run's time (a trim of a 3 GB heap takes ~0.2 ms).  When the run ends it trims once
more if it ran that long, so a notebook's kernel gives the run's memory back instead
of keeping it until the next allocation.  Short runs never trim.

``malloc_trim`` changes no allocator setting: it releases free pages (whole free
pages inside every arena, and the main heap's top), which glibc does itself at the
top past its trim threshold; a worker thread's arena keeps its free top (up to that
threshold, twice the raised mmap threshold: ``tests/test_heap_trim.py`` sees ~59 MB
stay on ``threads`` where everything goes back on ``sync``).  Dask's documentation
advises calling it by hand on workers for the same reason.  Where there is no glibc
(musl, macOS, Windows) :func:`available` is False and nothing is done.
``config.set(trim_memory=False)`` turns it off.

This module is in the layer of ``measure``: it imports nothing from the package.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

__all__ = ["HeapTrimmer", "available", "trim", "TICK_TASKS"]

TICK_TASKS = 8  # a power of two: RunState tests ``remaining & (TICK_TASKS - 1)``
MIN_INTERVAL = 0.25  # seconds between trims, at least
MAX_SHARE = 0.01  # of the run's time, at most, spent in malloc_trim


@functools.cache
def _lookup() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, looked up once (ctypes is imported only then, on a
    run's start, not the package's), or None where there is none."""
    import ctypes

    try:
        function = ctypes.CDLL(None).malloc_trim  # glibc only
    except (OSError, AttributeError):  # no glibc: nothing to trim with
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    return function


def available() -> bool:
    """True where ``malloc_trim`` exists (glibc)."""
    return _lookup() is not None


def trim() -> bool:
    """Give free heap memory back to the system now; True if any was released."""
    function = _lookup()
    return bool(function(0)) if function is not None else False


class HeapTrimmer:
    """The trims of one run: call it every ``TICK_TASKS`` finished tasks, and
    :meth:`finished` at the end.  Thread-safe enough: a racing second call at worst
    trims twice."""

    __slots__ = ("_trim", "_start", "_next", "trims")

    def __init__(self, function: Callable[[int], int]):
        self._trim = function
        self._start = time.monotonic()
        self._next = self._start + MIN_INTERVAL
        self.trims = 0

    @classmethod
    def for_run(cls) -> HeapTrimmer | None:
        """A trimmer for a new run, or None where trimming is not available."""
        function = _lookup()
        return cls(function) if function is not None else None

    def __call__(self) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._trim(0)
        done = time.monotonic()
        self.trims += 1
        self._next = done + max(MIN_INTERVAL, (done - now) / MAX_SHARE)

    def finished(self) -> None:
        """The run ended: trim once more if it was long enough to have trimmed."""
        if time.monotonic() - self._start >= MIN_INTERVAL:
            self._trim(0)
            self.trims += 1
