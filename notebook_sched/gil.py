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

* A starved CPU would look like a busy GIL: when every core is taken (by tasks in C
  code on all cores, worker processes, other programs), the OS itself wakes the
  probe late.  On Linux the probe reads its own thread's run-queue time
  (``/proc/self/task/<tid>/schedstat``: time spent runnable without a CPU) every
  ``QUEUE_EVERY`` cycles and subtracts it from the samples in between, since waiting
  for the GIL is a sleep on a lock, not time on the run queue.  (Not every cycle:
  the read is a system call, which gives the GIL away and waits to get it back.)
  Elsewhere that correction is missing and GIL-releasing
  tasks on a loaded machine read a few tenths busy.  The 0.25 ms floor absorbs the
  timer slack.
* A task that holds the GIL in C code without checking the eval breaker (a long C
  call that never releases it) blocks the probe for longer than a switch interval;
  the clip at 1.0 keeps it a "busy" sample, which is the truth.
* Short tasks (well under the 2 ms interval) are sampled rarely: their share comes
  from few samples, so :func:`attribute` reports the sample count with the share.
* The probe sees only its own process: under ``processes`` it must run in the worker.
"""

from __future__ import annotations

import bisect
import os
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["GilProbe", "PrefixShare", "attribute"]

DEFAULT_INTERVAL = 0.002
LATENESS_FLOOR = 0.00025  # seconds of lateness that are timer slack, not contention
QUEUE_EVERY = 8  # cycles between readings of the probe's run-queue clock


class GilProbe:
    """Samples GIL contention while running; use as a context manager or start/stop.

    ``samples`` holds ``(due, busy, woke, late)``: ``due`` is the ``time.time()`` (the
    clock the task events use) at which the probe meant to wake, ``busy`` in 0..1
    (before the run-queue correction), ``woke`` when it got the GIL back, ``late`` the
    lateness in seconds.
    """

    def __init__(self, interval: float = DEFAULT_INTERVAL) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be a positive number of seconds; got {interval!r}")
        self.interval = interval
        self.samples: list[tuple[float, float, float, float]] = []
        self.marks: list[tuple[float, float]] = []  # (time, run-queue seconds so far)
        self.span = max(sys.getswitchinterval() - LATENESS_FLOOR, LATENESS_FLOOR)
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
        span = self.span
        run_queue = _run_queue_clock()
        marks = self.marks
        cycle = 0
        try:
            while not stopped():
                if run_queue and cycle % QUEUE_EVERY == 0:
                    # Reading the run-queue clock is a system call, which releases the
                    # GIL and must wait to get it back: done every few cycles only.
                    marks.append((wall(), run_queue()))
                cycle += 1
                # Stamped with the time it meant to wake: the moment the sample is about
                # (stamping the actual wake would push busy samples past the task that
                # held the GIL, since the probe gets it when that task lets go).
                due = wall() + interval
                t0 = perf()
                sleep(interval)
                late = max(perf() - t0 - interval - floor, 0.0)
                append((due, min(late / span, 1.0), wall(), late))
            if run_queue:
                marks.append((wall(), run_queue()))
        finally:
            if run_queue:
                run_queue.close()

    def _starved(self, start: float, stop: float) -> float:
        """Seconds the probe spent runnable without a CPU between ``start`` and
        ``stop``, interpolated between the run-queue readings."""
        marks = self.marks
        if len(marks) < 2 or stop <= start:
            return 0.0

        def at(t: float) -> float:
            n = bisect.bisect_left(marks, (t,))
            if n <= 0:
                return marks[0][1]
            if n >= len(marks):
                return marks[-1][1]
            (t0, q0), (t1, q1) = marks[n - 1], marks[n]
            return q0 + (q1 - q0) * ((t - t0) / (t1 - t0) if t1 > t0 else 1.0)

        return max(0.0, at(stop) - at(start))

    def _corrected(self, chosen: list) -> list[float]:
        """Busy shares of ``chosen`` samples once the starvation of their stretch of
        time is taken out of their lateness (in proportion: starvation shows up as
        lateness), before each is clipped to one switch interval."""
        if not chosen or len(self.marks) < 2 or len(chosen[0]) < 4:
            return [sample[1] for sample in chosen]
        total = sum(sample[3] for sample in chosen)
        if total <= 0.0:
            return [0.0] * len(chosen)
        starved = self._starved(chosen[0][0] - self.interval, chosen[-1][2])
        keep = max(0.0, 1.0 - starved / total)
        span = self.span
        return [min(sample[3] * keep / span, 1.0) for sample in chosen]

    def corrected_samples(self) -> list[tuple[float, float]]:
        """``(due, busy)`` of every sample, with the run-queue correction, in windows
        of ``QUEUE_EVERY`` samples (for :func:`attribute`)."""
        out = []
        samples = self.samples
        for n in range(0, len(samples), QUEUE_EVERY):
            chunk = samples[n : n + QUEUE_EVERY]
            out.extend(zip((c[0] for c in chunk), self._corrected(chunk), strict=True))
        return out

    def window(self, start: float, stop: float) -> tuple[float, int]:
        """``(mean busy share, sample count)`` of the samples that lie wholly inside
        ``start``..``stop``; ``(0.0, 0)`` when none does.

        A sample whose wait ran past ``stop`` is left out: the task that held the GIL
        ended during it, so it would read as partly free.  Samples are in time order,
        so the window is found by bisection (O(log n + window), safe while the probe
        is still appending).
        """
        samples = self.samples
        end = len(samples)
        lo = bisect.bisect_left(samples, (start,), 0, end)
        hi = bisect.bisect_right(samples, (stop, 2.0), lo, end)
        inside = [s for s in samples[lo:hi] if len(s) < 3 or s[2] <= stop]
        if not inside:
            return 0.0, 0
        busy = self._corrected(inside)
        return sum(busy) / len(busy), len(busy)

    def busy_fraction(
        self, start: float = 0.0, stop: float = float("inf"), min_samples: int = 1
    ) -> float | None:
        """Mean busy-GIL share of samples taken between ``start`` and ``stop``.

        None when fewer than ``min_samples`` fall in the window.  Samples are in time
        order, so the window is found by bisection: O(log n + window), safe to call
        while the probe is still appending.
        """
        busy, count = self.window(start, stop)
        return busy if count >= max(min_samples, 1) else None


class _RunQueueClock:
    """Seconds this thread has spent runnable but waiting for a CPU (Linux schedstat)."""

    def __init__(self, fd: int):
        self.fd = fd

    def __call__(self) -> float:
        return int(os.pread(self.fd, 64, 0).split()[1]) / 1e9

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:  # a thread's clock dies with the thread (thread-local)
        self.close()


def _run_queue_clock() -> _RunQueueClock | None:
    """The calling thread's run-queue clock, or None where the OS does not tell."""
    try:
        fd = os.open(f"/proc/self/task/{threading.get_native_id()}/schedstat", os.O_RDONLY)
    except OSError:
        return None
    clock = _RunQueueClock(fd)
    try:
        clock()
    except (OSError, ValueError, IndexError):
        clock.close()
        return None
    return clock


@dataclass(frozen=True)
class PrefixShare:
    """Busy-GIL share of one task prefix and the number of samples behind it."""

    prefix: str
    gil_busy: float
    samples: float


def attribute(
    samples: Iterable[tuple],
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
    for t, busy, *_woke in points:
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
