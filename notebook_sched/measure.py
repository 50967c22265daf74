"""Measuring a task where it ran: the numbers behind the ``task_measured`` event.

Backends whose tasks run on the caller's threads (sync, threads, auto's threads) read
the wall and CPU clocks around the task and leave the GIL to the caller's probe (the
Advisor's :class:`~notebook_sched.gil.GilProbe`).  Tasks that run in another process
(a ``processes`` worker, a cluster worker, a dask.distributed worker) can only be
measured there, so that process keeps a :class:`TaskMeter`:

* **CPU**: ``time.thread_time()`` of the thread that ran the task, read around it, and
  the seconds that thread spent runnable without a CPU (``gil.run_queue_seconds``: a
  loaded machine, or native threads of the task competing with it), so a starved task
  is not taken for one that waits.
* **GIL**: a :class:`~notebook_sched.gil.GilProbe` in the worker process, started by
  the first long task (``LONG_TASK``, 1 ms) the meter measures and stopped by itself
  after ``IDLE_STOP`` seconds in which no measured task ran, so an idle worker pays
  nothing and a graph of tiny tasks never starts it.  A task's busy-GIL share is the
  probe's window over the task (``GilProbe.window``); in a single-threaded worker
  (``processes``) that is the task's own, in a worker with several task threads (the
  cluster) it is the process's while the task ran, shared with its neighbours (the
  same ambiguity the caller's attribution splits evenly).  The first long task of a
  burst has no probe yet: its share is None ("not measured"), not 0.
* **Bytes**: :func:`result_nbytes`, the size of the result where it is cheap to know
  (``nbytes`` of arrays and buffers, the length of bytes and strings, summed over the
  items of a short list or tuple); None otherwise.  Nothing is pickled to find out.

A measurement is one :class:`Measurement`, from where the task ran to the reporter, the
``task_measured`` hook (which takes it whole), the advisor and the cluster's messages:
``key`` (the task number until the reporter names it), ``worker`` (its name, filled by
the reporter), ``where`` (the kind of place: :data:`CALLER`, :data:`THREAD`,
:data:`PROCESS`, :data:`CLUSTER`, :data:`DASK`), ``start``/``stop`` (``time.time()``),
``cpu``, ``starved``, ``nbytes`` and ``gil_busy`` (None: not known).  Cost: two clock
reads and an attribute lookup per measured task (a sample of tasks: see
``task_runner.py``); the probe's cost is described in ``gil.py`` (well under 1% of a
core while it runs).
"""

from __future__ import annotations

import functools
import os
import pickle
import sys
import threading
import time
from typing import Any, NamedTuple

from .gil import GilProbe, run_queue_seconds

__all__ = [
    "Measurement",
    "TaskMeter",
    "process_meter",
    "result_nbytes",
    "sizeof",
    "IDLE_STOP",
    "LONG_TASK",
    "CALLER",
    "THREAD",
    "PROCESS",
    "CLUSTER",
    "DASK",
    "REMOTE",
    "GIL_BOUND",
    "transfer_cost",
    "per_byte_transfer",
]

IDLE_STOP = 1.0  # seconds without a measured task after which a worker's probe stops
# A task this long is "long": the next task is measured too (task_runner's sampling
# rule), a probe starts (here, and the Advisor's in the caller).  The one owner.
LONG_TASK = 0.001
MAX_ITEMS = 64  # a list or tuple longer than this is not summed (not cheap any more)
# A prefix whose tasks keep the GIL busy this share of their time or more holds the
# GIL: the advisor's verdict and auto's routing both read it here.
GIL_BOUND = 0.5
TRANSFER_SAMPLE_BYTES = 8 * 1024 * 1024  # transfer_cost's buffer
TRANSFER_REPEATS = 3
KEEP_SAMPLES = 4096  # probe samples kept once no task needs the older ones


# Where a task ran (``Measurement.where``).  CALLER is also the worker name of tasks a
# backend runs in the calling thread (literals, aliases, auto's inline tasks).
CALLER = "caller"  # the calling thread (sync, inline)
THREAD = "thread"  # a worker thread of the calling process (threads, auto, executors)
PROCESS = "process"  # a worker process of ours or of a foreign executor
CLUSTER = "cluster"  # a worker of our local cluster
DASK = "dask"  # a dask.distributed worker
REMOTE = frozenset({PROCESS, CLUSTER, DASK})  # measured by that process's TaskMeter


class Measurement(NamedTuple):
    """One measured task (see the module docstring); the ``task_measured`` argument."""

    key: Any
    worker: str
    where: str
    start: float
    stop: float
    cpu: float | None
    starved: float | None
    nbytes: int | None
    gil_busy: float | None

    @property
    def remote(self) -> bool:
        """Measured in another process, whose ``gil_busy`` is that process's probe's."""
        return self.where in REMOTE

    @property
    def wall(self) -> float:
        return self.stop - self.start


def sizeof(value: Any) -> int:
    """Bytes ``value`` holds, always an estimate: :func:`result_nbytes` where that is
    cheap to know, else the shallow size (``sys.getsizeof``, plus the items' shallow
    sizes for a container of under 1000).  The one size estimate: the cluster's
    memory accounting and ``auto``'s routing (what moving a value costs) use it."""
    size = result_nbytes(value)
    if size is not None:
        return size
    typ = type(value)
    if typ in (list, tuple, set, frozenset) and len(value) < 1000:
        return _shallow(value) + sum(_shallow(item) for item in value)
    if typ is dict and len(value) < 1000:
        return _shallow(value) + sum(_shallow(k) + _shallow(v) for k, v in value.items())
    return _shallow(value)


def _shallow(value: Any) -> int:
    size = _flat_nbytes(value)
    if size is not None:
        return size
    try:
        return sys.getsizeof(value)
    except Exception:
        return 64


def result_nbytes(value: Any) -> int | None:
    """Bytes of ``value`` where that is cheap to know, else None (see the docstring)."""
    size = _flat_nbytes(value)
    if size is not None or not isinstance(value, list | tuple) or len(value) > MAX_ITEMS:
        return size
    total = 0
    for item in value:
        size = _flat_nbytes(item)
        if size is None:
            return None
        total += size
    return total


def _flat_nbytes(value: Any) -> int | None:
    if isinstance(value, bytes | bytearray | str):
        return len(value)
    if isinstance(value, memoryview):
        return value.nbytes
    if isinstance(value, int | float | bool | complex) or value is None:
        return 8
    size = getattr(type(value), "nbytes", None)
    if size is None:
        return None
    try:
        size = value.nbytes  # numpy, pandas Series/Index, xarray, pyarrow
    except Exception:
        return None
    return size if isinstance(size, int) and size >= 0 else None


class TaskMeter:
    """Measures tasks in a worker process (see the module docstring); thread-safe."""

    def __init__(self, idle_stop: float = IDLE_STOP) -> None:
        self.idle_stop = idle_stop
        self._lock = threading.Lock()  # guards _probe, _running, _last_end, _next_token
        self._probe = None
        self._running: dict[int, float] = {}  # token -> task start (time.time())
        self._last_end = 0.0
        self._next_token = 0

    def begin(self) -> tuple[int, float, float, float]:
        """Call just before the task: ``(token, start, thread cpu, run-queue time)``."""
        start = time.time()
        with self._lock:
            token = self._next_token = self._next_token + 1
            self._running[token] = start
        return token, start, time.thread_time(), run_queue_seconds()

    def end(
        self, began: tuple, value: Any, stop: float, task: Any = None, where: str = PROCESS
    ) -> Measurement:
        """Call just after ``task`` returned ``value`` at ``stop`` (``time.time()``)."""
        cpu = time.thread_time() - began[2]
        starved = run_queue_seconds() - began[3]
        start = began[1]
        with self._lock:
            del self._running[began[0]]
            self._last_end = stop
            probe = self._probe
            if probe is not None and not probe.running:
                probe = self._probe = None
            if probe is None and stop - start >= LONG_TASK:
                probe = self._probe = self._start_probe()
                gil = None  # the probe starts now: this task went unmeasured
            else:
                gil = self._share(probe, start, stop) if probe is not None else None
            if probe is not None:
                self._trim(probe)
        return Measurement(task, "", where, start, stop, cpu, starved, result_nbytes(value), gil)

    def stop(self) -> None:
        """Stop the probe now and wait for its thread (one cycle, 2 ms at most)."""
        with self._lock:
            probe, self._probe = self._probe, None
        if probe is not None:
            probe.stop()

    def _start_probe(self):
        return GilProbe(keep_running=self._busy).start()

    def _busy(self) -> bool:
        """The probe's question each cycle: was a measured task running lately?"""
        return bool(self._running) or time.time() - self._last_end < self.idle_stop

    @staticmethod
    def _share(probe, start: float, stop: float) -> float | None:
        busy, count = probe.window(start, stop)
        return busy if count else None

    def _trim(self, probe) -> None:
        samples = probe.samples
        if len(samples) > 2 * KEEP_SAMPLES:
            oldest = min(self._running.values(), default=time.time())
            keep = len(samples) - KEEP_SAMPLES
            cut = 0
            while cut < keep and samples[cut][0] < oldest:
                cut += 1
            del samples[:cut]  # the probe only appends: the list stays in time order


_process_meter: list = []  # this process's shared TaskMeter, made on first use
_process_meter_lock = threading.Lock()


def process_meter() -> TaskMeter:
    """The TaskMeter of this process (one probe per process, whoever asks: a process
    worker's batches, a foreign executor's jobs, a dask.distributed worker's tasks)."""
    if not _process_meter:
        with _process_meter_lock:
            if not _process_meter:
                _process_meter.append(TaskMeter())
    return _process_meter[0]


@functools.cache
def transfer_cost() -> float:
    """Seconds per byte to move data to a worker process on this machine, measured on
    first use (a few ms) and kept for the process: what ``auto`` routes with and the
    advisor predicts with (``diagnostics/costs.py``)."""
    return per_byte_transfer()


def per_byte_transfer(
    nbytes: int = TRANSFER_SAMPLE_BYTES, repeats: int = TRANSFER_REPEATS
) -> float:
    """Seconds per byte to pickle, send through a pipe and unpickle a buffer of
    ``nbytes`` (large enough that fixed costs vanish), best of ``repeats``."""
    payload = bytearray(os.urandom(1024)) * (nbytes // 1024)
    best = float("inf")
    for _ in range(repeats):
        read_end, write_end = os.pipe()
        try:
            t0 = time.perf_counter()
            data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
            writer = threading.Thread(target=_write_all, args=(write_end, data))
            writer.start()
            received = _read_exactly(read_end, len(data))
            writer.join()
            pickle.loads(received)
            best = min(best, time.perf_counter() - t0)
        finally:
            os.close(read_end)
            os.close(write_end)
    return best / nbytes


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_exactly(fd: int, n: int) -> bytearray:
    out = bytearray()
    while len(out) < n:
        chunk = os.read(fd, min(1 << 20, n - len(out)))
        if not chunk:
            raise EOFError("pipe closed early")
        out += chunk
    return out
