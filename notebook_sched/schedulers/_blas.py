"""Keep native thread pools (OpenBLAS, MKL, OpenMP) from oversubscribing the CPUs.

A NumPy matrix product already runs on every core through BLAS's own threads.  When
the ``threads`` backend runs several such tasks at once, each of its threads starts
a BLAS call with all cores, and the cores are shared by ``workers x cpus`` threads
that keep evicting each other: measured here, ``x @ x.T`` on a 4,000 x 4,000 dask
array takes 2.0 s so, and 1.1 s with one BLAS thread per task.  dask.distributed's
workers set ``OMP_NUM_THREADS=1`` and friends for the same reason, but a thread
pool inside a running kernel cannot use environment variables: they are read once,
when the library loads.  So while a threaded run is in progress, each native pool
is limited to ``cpus // workers`` threads (at least 1) through threadpoolctl, and
restored when the last concurrent run ends.

Nothing happens when NumPy is not imported (no native pools to tame), when the run
has a single worker, or when threadpoolctl is missing.  Finding the loaded libraries
takes a few milliseconds, so it is done once and again only when new modules were
imported since; reading and setting a pool's size are direct C calls (~1 µs).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator

__all__ = ["limited_native_threads", "limit_by_environment", "threads_per_worker"]

# Native pools read these when they load (before NumPy is imported, the only lever).
NATIVE_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def threads_per_worker(workers: int) -> int:
    """Native threads each of ``workers`` concurrent tasks may use: ``cpus // workers``."""
    return max(1, (os.cpu_count() or 1) // max(workers, 1))


def limit_by_environment(workers: int) -> None:
    """In a fresh worker process, before NumPy loads: set the pools' variables (unless
    the user did), so a task that imports NumPy starts with the limit."""
    if "numpy" not in sys.modules:
        for variable in NATIVE_THREAD_VARIABLES:
            os.environ.setdefault(variable, str(threads_per_worker(workers)))


# Guards every field below: concurrent runs share one limit, applied by the first
# run to enter and undone by the last to leave.
_lock = threading.Lock()
_active = 0
_originals: list = []  # (library controller, its thread count before the limit)
_controller = None
_modules_seen = 0


def _libraries() -> list:
    """threadpoolctl's controllers of the loaded native pools (cached per module set)."""
    global _controller, _modules_seen
    if _controller is None or len(sys.modules) != _modules_seen:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            return []
        _controller = ThreadpoolController()
        _modules_seen = len(sys.modules)
    return _controller.lib_controllers


@contextlib.contextmanager
def limited_native_threads(workers: int) -> Iterator[None]:
    """Limit native thread pools to ``cpus // workers`` threads while inside."""
    global _active
    if workers < 2 or "numpy" not in sys.modules:
        yield
        return
    per_task = threads_per_worker(workers)
    with _lock:
        if _active == 0:
            for library in _libraries():
                threads = library.get_num_threads()  # a C call: about a microsecond
                if threads is not None and threads > per_task:
                    library.set_num_threads(per_task)
                    _originals.append((library, threads))
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0:
                for library, threads in _originals:
                    library.set_num_threads(threads)
                _originals.clear()
