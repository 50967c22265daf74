"""What moving data costs on this machine, measured once per process (a few ms).

The advisor's model (``advice_model.py``) needs the cost per byte of sending a task's
inputs to a worker process and its result back: pickle, a pipe, unpickle.  We time
exactly that on a buffer of ``SAMPLE_BYTES`` (8 MB: large enough that fixed costs
vanish, small enough to take a few milliseconds), best of ``REPEATS``, and cache it.

Per-task overheads come from this project's benchmarks (``benchmarks/overhead.py``:
2-4 µs a task on sync and threads, 3-6 µs on the warm process pool, batched); they
are far below the tasks any advice is about, so they are constants, not a measurement.
"""

from __future__ import annotations

import functools
import os
import pickle
import threading
import time

from .advice_model import Costs

__all__ = ["measured_costs", "per_byte_transfer"]

SAMPLE_BYTES = 8 * 1024 * 1024
REPEATS = 3
PER_TASK = {"sync": 2e-6, "threads": 3e-6, "processes": 5e-6, "auto": 5e-6}


def per_byte_transfer(nbytes: int = SAMPLE_BYTES, repeats: int = REPEATS) -> float:
    """Seconds per byte to pickle, send through a pipe and unpickle a buffer."""
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


@functools.cache
def measured_costs() -> Costs:
    """This machine's :class:`Costs` (measured on first use, then cached)."""
    return Costs(per_task=dict(PER_TASK), per_byte=per_byte_transfer())


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
