"""GIL contention measured from inside the process: a probe thread that oversleeps.

CPU time cannot tell a pure-Python task from a NumPy one (both keep a core busy), and
time off the CPU cannot tell waiting for the GIL from waiting for a disk.  So we ask
the GIL itself, cheaply:

How it works.  A daemon thread sleeps ``interval`` (2 ms) in a loop and records how
late each wake-up is.  Sleeping releases the GIL; waking up needs it back.

* When no thread holds the GIL (tasks in ``time.sleep``, socket reads, NumPy and BLAS
  kernels that release it), the probe takes it at once and is late only by the OS
  timer slack: tens of microseconds.
* When a thread is running Python bytecode, the probe must wait until that thread
  drops the GIL, which CPython forces after ``sys.getswitchinterval()`` (5 ms by
  default): the probe is late by up to one switch interval.

So each wake-up gives a sample ``(late - floor) / (switch - floor)``, clipped to 0..1,
of "was the GIL busy just now" (``floor``, 0.25 ms, absorbs the timer slack), and
the mean over a window is the busy-GIL fraction of that window.
:func:`attribute` spreads the samples over the tasks that were running when each was
taken (intervals from ``task_started``/``task_finished``), giving a busy-GIL share per
task prefix.

Cost.  About 500 wake-ups a second when the GIL is free (a few microseconds each), and
one forced GIL hand-off per ~7 ms when it is not: well under 1% of a core, and nothing
at all per task.  The probe runs only while someone measures.

Where it can be wrong (say so when advising):

* A starved CPU looks like a busy GIL: when every core is taken (by tasks in C code on
  all cores, or by other processes), the OS itself may wake the probe late.  The
  0.25 ms floor removes the usual timer slack, not scheduling delays of a loaded
  machine; on such a machine, GIL-releasing tasks read a few tenths busy.
* A task that holds the GIL in C code without checking the eval breaker (a long C
  call that never releases it) blocks the probe for longer than a switch interval;
  the clip at 1.0 keeps it a "busy" sample, which is the truth.
* Short tasks (well under the 2 ms interval) are sampled rarely: their share comes
  from few samples, so :func:`attribute` reports the sample count with the share.
* The probe sees only its own process: under ``processes`` it must run in the worker.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["GilProbe", "PrefixShare", "attribute"]

DEFAULT_INTERVAL = 0.002
LATENESS_FLOOR = 0.00025  # seconds of lateness that are timer slack, not contention


class GilProbe:
    """Samples GIL contention while running; use as a context manager or start/stop.

    ``samples`` holds ``(wall_time, busy)`` pairs, ``wall_time`` from ``time.time()``
    (the clock the task events use) and ``busy`` in 0..1.
    """

    def __init__(self, interval: float = DEFAULT_INTERVAL) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be a positive number of seconds; got {interval!r}")
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> GilProbe:
        if self._thread is not None:
            raise RuntimeError("this GilProbe is already running")
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name="notebook_sched-gil-probe", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> list[tuple[float, float]]:
        """Stop sampling (joins the probe thread) and return the samples."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join()
        return self.samples

    def __enter__(self) -> GilProbe:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _run(self) -> None:
        interval, append = self.interval, self.samples.append
        stopped, sleep = self._stop.is_set, time.sleep
        perf, wall = time.perf_counter, time.time
        floor = LATENESS_FLOOR
        span = max(sys.getswitchinterval() - floor, floor)
        while not stopped():
            t0 = perf()
            sleep(interval)
            late = perf() - t0 - interval - floor
            append((wall(), 0.0 if late <= 0.0 else min(late / span, 1.0)))

    def busy_fraction(self, start: float = 0.0, stop: float = float("inf")) -> float | None:
        """Mean busy-GIL share of samples taken between ``start`` and ``stop``."""
        window = [busy for t, busy in self.samples if start <= t <= stop]
        if not window:
            return None
        return sum(window) / len(window)


@dataclass(frozen=True)
class PrefixShare:
    """Busy-GIL share of one task prefix and the number of samples behind it."""

    prefix: str
    gil_busy: float
    samples: float


def attribute(
    samples: Iterable[tuple[float, float]],
    intervals: Iterable[tuple[str, float, float]],
) -> dict[str, PrefixShare]:
    """Spread probe samples over the task intervals ``(prefix, start, stop)`` covering them.

    A sample taken while two tasks ran counts half for each; samples taken while no
    task ran are dropped.  One sweep over both sorted lists: O((samples + tasks) log).
    """
    points = sorted(samples)
    edges: list[tuple[float, int, str]] = []
    for prefix, start, stop in intervals:
        edges.append((start, 1, prefix))
        edges.append((stop, -1, prefix))
    edges.sort(key=lambda e: (e[0], -e[1]))  # a start before a stop at the same time
    running: dict[str, int] = {}
    weight: dict[str, float] = {}
    busy_sum: dict[str, float] = {}
    e = 0
    for t, busy in points:
        while e < len(edges) and edges[e][0] <= t:
            _, step, prefix = edges[e]
            count = running.get(prefix, 0) + step
            if count:
                running[prefix] = count
            else:
                running.pop(prefix, None)
            e += 1
        total = sum(running.values())
        if not total:
            continue
        for prefix, count in running.items():
            share = count / total
            weight[prefix] = weight.get(prefix, 0.0) + share
            busy_sum[prefix] = busy_sum.get(prefix, 0.0) + share * busy
    return {
        prefix: PrefixShare(prefix, busy_sum[prefix] / w, w) for prefix, w in weight.items() if w
    }
