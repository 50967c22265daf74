"""KeyboardInterrupt (a kernel interrupt is a SIGINT) stops work promptly and cleanly.

Each test sends SIGINT to its own process while ``get`` waits, then checks that
control came back within 0.5 s, that no task keeps running or starts afterwards,
and that the next compute works.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

import notebook_sched as ns
from notebook_sched.schedulers import _pool

from .workloads import progress, python_loop

pytestmark = pytest.mark.usefixtures("no_leaks")

INTERRUPT_AFTER = 0.5


def interrupt_soon(delay: float = INTERRUPT_AFTER) -> threading.Timer:
    timer = threading.Timer(delay, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    return timer


def sleeper_writing_marker(i, directory, seconds=2.0):
    time.sleep(seconds)
    with open(os.path.join(directory, f"done-{i}"), "w") as f:
        f.write("finished")
    return i


def inc(x):
    return x + 1


def many_python_tasks(n=8):
    dsk = {f"w{i}": (python_loop, i) for i in range(n)}
    dsk["total"] = (sum, [f"w{i}" for i in range(n)])
    return dsk


def test_threads_interrupt_returns_quickly_and_stops_tasks():
    progress.clear()
    timer = interrupt_soon()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        ns.get(many_python_tasks(), "total", scheduler="threads", num_workers=2)
    elapsed = time.monotonic() - start - INTERRUPT_AFTER
    timer.join()
    assert elapsed < 0.5, f"control came back {elapsed:.2f} s after the interrupt"
    time.sleep(0.3)
    seen = len(progress)
    time.sleep(0.5)
    assert len(progress) == seen, "tasks kept computing after the interrupt"
    assert set(progress) <= {0, 1}, "tasks not yet started must be dropped"
    assert ns.get({"a": (inc, 1)}, "a", scheduler="threads") == 2


def test_processes_interrupt_kills_busy_workers_and_drops_the_rest(tmp_path):
    ns.get({"warm": (inc, 1)}, "warm", scheduler="processes", num_workers=2)
    before = {w.process.pid for w in _pool._pool.workers}
    dsk = {f"s{i}": (sleeper_writing_marker, i, str(tmp_path)) for i in range(6)}
    dsk["total"] = (sum, [f"s{i}" for i in range(6)])
    timer = interrupt_soon()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        ns.get(dsk, "total", scheduler="processes", num_workers=2)
    elapsed = time.monotonic() - start - INTERRUPT_AFTER
    timer.join()
    assert elapsed < 0.5, f"control came back {elapsed:.2f} s after the interrupt"
    after = {w.process.pid for w in _pool._pool.workers}
    assert not (before & after), "workers that were mid-task must be replaced"
    time.sleep(2.5)  # longer than a task: a surviving task would have written its marker
    assert list(tmp_path.iterdir()) == []
    assert ns.get({"a": (inc, 1)}, "a", scheduler="processes", num_workers=2) == 2


def test_sync_interrupt_propagates():
    progress.clear()
    timer = interrupt_soon(0.3)
    with pytest.raises(KeyboardInterrupt):
        ns.get(many_python_tasks(3), "total", scheduler="sync")
    timer.join()
    assert ns.get({"a": (inc, 1)}, "a", scheduler="sync") == 2
