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
  (``/proc/self/task/<tid>/schedstat``: time spent runnable without a CPU) after
  each wake-up and subtracts it, since waiting for the GIL is a sleep on a lock, not
  time on the run queue.  The read goes through ``ctypes.PyDLL``, which keeps the GIL:
  a plain ``os.pread`` would give the GIL away and wait up to a switch interval to get
  it back, halving the sampling rate under a task that holds it.
  Elsewhere that correction is missing and GIL-releasing
  tasks on a loaded machine read a few tenths busy.  The 0.25 ms floor absorbs the
  timer slack.
* A task that holds the GIL in C code without checking the eval breaker (a long C
  call that never releases it) blocks the probe for longer than a switch interval;
  the clip at 1.0 keeps it a "busy" sample, which is the truth.
* Short tasks (well under the 2 ms interval) are sampled rarely: their share comes
  from few samples, so :func:`attribute` reports the sample count with the share.
* The probe sees only its own process: tasks in worker processes are measured by a
  probe in that worker (``measure.TaskMeter``), never by the caller's.
"""

from __future__ import annotations

import bisect
import functools
import os
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["GilProbe", "PrefixShare", "attribute", "run_queue_seconds"]

DEFAULT_INTERVAL = 0.002
LATENESS_FLOOR = 0.00025  # seconds of lateness that are timer slack, not contention


class GilProbe:
    """Samples GIL contention while running; use as a context manager or start/stop.

    ``samples`` holds ``(due, busy, woke, starved)``: ``due`` is the ``time.time()``
    (the clock the task events use) at which the probe meant to wake, ``busy`` in 0..1,
    ``woke`` when it got the GIL back, ``starved`` the seconds of that wait spent on
    the run queue (already taken out of ``busy``).
    """

    def __init__(self, interval: float = DEFAULT_INTERVAL, keep_running=None) -> None:
        """``keep_running``: asked once per cycle; the probe ends by itself when it says
        False (a worker's probe that stops when no task has run for a while)."""
        if not interval > 0:
            raise ValueError(f"interval must be a positive number of seconds; got {interval!r}")
        self.interval = interval
        self.samples: list[tuple[float, float, float, float]] = []
        self.span = max(sys.getswitchinterval() - LATENESS_FLOOR, LATENESS_FLOOR)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._keep_running = keep_running
        self.pending: float | None = None  # ``due`` of the cycle in flight (not appended)

    def start(self) -> GilProbe:
        if self._thread is not None:
            raise RuntimeError("this GilProbe is already running")
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name="notebook_sched-gil-probe", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, wait: bool = True) -> list:
        """Stop sampling and return the samples.

        ``wait=False`` does not join the probe thread: it ends by itself within one
        cycle (a few ms that a short run should not pay for); samples it takes
        meanwhile lie after the stop and fall outside any window of the run."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            if wait:
                thread.join()
        return self.samples

    @property
    def running(self) -> bool:
        """Started, not stopped, and not ended by ``keep_running``."""
        thread = self._thread
        return thread is not None and thread.is_alive() and not self._stop.is_set()

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
        keep_running = self._keep_running
        run_queue = _run_queue_clock()
        queued = run_queue() if run_queue else 0.0
        try:
            while not stopped():
                # Stamped with the time it meant to wake: the moment the sample is about
                # (stamping the actual wake would push busy samples past the task that
                # held the GIL, since the probe gets it when that task lets go).
                due = self.pending = wall() + interval
                t0 = perf()
                sleep(interval)
                late = perf() - t0 - interval - floor
                woke = wall()
                starved = 0.0
                if run_queue:
                    # Time spent runnable but without a CPU is starvation, not the GIL.
                    before, queued = queued, run_queue()
                    starved = queued - before
                busy = late - starved
                append((due, 0.0 if busy <= 0.0 else min(busy / span, 1.0), woke, starved))
                if keep_running is not None and not keep_running():
                    self._stop.set()
        finally:
            if run_queue:
                run_queue.close()

    def corrected_samples(self) -> list[tuple[float, float]]:
        """``(due, busy)`` of every sample (for :func:`attribute`)."""
        return [(sample[0], sample[1]) for sample in self.samples]

    def window(self, start: float, stop: float) -> tuple[float, int]:
        """``(mean busy share, sample count)`` of the samples due between ``start`` and
        ``stop``; ``(0.0, 0)`` when none is.

        A sample still waiting at ``stop`` counts for its part inside the window: the
        probe was kept from the GIL from ``due`` to ``stop`` while asking for at most
        one switch interval of it, so a task that held the GIL to its end reads busy
        however it lines up with the probe's cycle.  The cycle still in flight (due
        before ``stop``, its sample not written because the probe is still waiting for
        the GIL) counts as one busy sample.  Samples are in time order, so the
        window is found by bisection (O(log n + window), safe while the probe is still
        appending).
        """
        samples = self.samples
        end = len(samples)
        lo = bisect.bisect_left(samples, (start,), 0, end)
        hi = bisect.bisect_right(samples, (stop, 2.0), lo, end)
        inside = samples[lo:hi]
        if inside and len(inside[0]) < 4:  # samples given by hand: (due, busy[, woke])
            busy = [sample[1] for sample in inside]
            return sum(busy) / len(busy), len(busy)
        floor, span = LATENESS_FLOOR, self.span
        shares = []
        for due, _busy, woke, starved in inside:
            room = stop - due - floor
            if room <= 0.0:
                continue
            blocked = min(woke, stop) - due - floor - starved
            shares.append(0.0 if blocked <= 0.0 else min(blocked / min(span, room), 1.0))
        pending = self.pending
        if pending is not None and stop - pending > floor:
            last = samples[-1][0] if samples else None
            if last is None or last < pending:
                # The probe meant to wake at ``pending`` and has not got the GIL back by
                # ``stop``: a busy sample the probe has not been able to write yet (a
                # meter asks as its task ends, while other threads keep the GIL).
                shares.append(1.0)
        if not shares:
            return 0.0, 0
        return sum(shares) / len(shares), len(shares)


class _RunQueueClock:
    """Seconds this thread has spent runnable but waiting for a CPU (Linux schedstat),
    read without releasing the GIL (``ctypes.PyDLL`` calls keep it).

    Its descriptor lives as long as the thread, beside tasks that may close
    descriptors they do not own (a task's ``os.close(1)``, a daemonising library).
    So it never takes fds 0-2 (a task closing "stdout" would close it), and a clock
    whose read fails, or whose fd now names another file, stops counting (it keeps
    returning its last reading: no starvation, never an error) and closes nothing
    it does not own: a read that raised outside the task once killed a cluster
    worker's executor thread and hung the run, and a close of a reused fd number
    could close a socket that took it."""

    def __init__(self, fd: int):
        import ctypes

        self.fd = fd
        info = os.fstat(fd)
        self._identity = (info.st_dev, info.st_ino)
        self._pread = _pread()
        self._buffer = ctypes.create_string_buffer(128)
        self.last = 0.0

    def __call__(self) -> float:
        if self.fd < 0:
            return self.last
        n = self._pread(self.fd, self._buffer, 128, 0)
        try:
            if n <= 0:
                raise ValueError("schedstat read failed")
            self.last = value = int(self._buffer.raw[:n].split()[1]) / 1e9
        except (ValueError, IndexError):
            self.fd = -1  # closed or replaced under us (by a task): stop counting
            return self.last
        return value

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0 and self._owns(fd):
            os.close(fd)

    def _owns(self, fd: int) -> bool:
        try:
            info = os.fstat(fd)
        except OSError:
            return False
        return (info.st_dev, info.st_ino) == self._identity

    def __del__(self) -> None:  # a thread's clock dies with the thread (thread-local)
        self.close()


@functools.cache
def _pread():
    """libc's pread through ``ctypes.PyDLL`` (calls keep the GIL), set up once."""
    import ctypes

    pread = ctypes.PyDLL(None).pread
    pread.restype = ctypes.c_ssize_t
    pread.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_long)
    return pread


_thread_clocks = threading.local()


def run_queue_seconds() -> float:
    """Seconds the calling thread has spent runnable but without a CPU; 0.0 where the OS
    does not tell.  Tells a starved task (a loaded machine) from one that waits.  Keeps
    the GIL (see :class:`_RunQueueClock`), so it can be read inside a measured task."""
    clock = getattr(_thread_clocks, "clock", None)
    if clock is None:
        clock = _thread_clocks.clock = _run_queue_clock() or _no_clock
    return clock()


def _no_clock() -> float:
    return 0.0


def _run_queue_clock() -> _RunQueueClock | None:
    """The calling thread's run-queue clock, or None where the OS does not tell."""
    try:
        fd = _above_standard_fds(
            os.open(f"/proc/self/task/{threading.get_native_id()}/schedstat", os.O_RDONLY)
        )
    except OSError:
        return None
    try:
        clock = _RunQueueClock(fd)
        clock()
    except (OSError, ValueError, IndexError, AttributeError):
        os.close(fd)
        return None
    if clock.fd < 0:  # its first read failed
        os.close(fd)
        return None
    return clock


def _above_standard_fds(fd: int) -> int:
    """``fd``, moved to a number above 2 if it took one a task had closed (fds 0-2
    are the ones tasks close: a later ``os.close(1)`` must not close our file)."""
    if fd > 2:
        return fd
    import fcntl

    try:
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    finally:
        os.close(fd)


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
