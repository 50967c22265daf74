"""The backends the harness compares: ours and Dask's counterpart, side by side.

Each entry of :data:`REGISTRY` is a factory ``factory(workers)`` returning a context
manager that yields a :class:`Backend`: two get functions with the signature
``get(graph, key)`` and the bookkeeping the report needs.  A factory owns whatever
must live across measurements (a warmed process pool, a local cluster) and shuts it
down on exit.  If the backend cannot run here it raises :class:`Skip` with a reason.

To add a backend, write a factory and decorate it with ``@register("name")``;
``optional=True`` keeps it out of the default run (see ``--distributed``).
"""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import time
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from functools import partial
from typing import Any, NamedTuple

__all__ = ["Backend", "Skip", "REGISTRY", "OPTIONAL", "register"]

Get = Callable[[dict, Hashable], Any]

_PROBE = {"a": 1, "b": (sum, ["a", "a"]), "c": (max, "a", "b")}  # c == 2


class Backend(NamedTuple):
    name: str
    ours: Get
    dask: Get
    dask_label: str  # what "Dask" means in this row
    note: str = ""  # printed under the table, e.g. a non-default Dask option
    target: float = 0.2  # pass when ours / dask per-task time <= target
    deep_chain: bool = True  # also run the 1,000,000-task chain (ours only)
    settle: Callable[[], None] | None = None  # untimed, after each call: wait for idle


class Skip(Exception):
    """This backend cannot be measured here; the message says why."""


BackendFactory = Callable[[int], AbstractContextManager[Backend]]
REGISTRY: dict[str, BackendFactory] = {}
OPTIONAL: dict[str, BackendFactory] = {}


def register(name: str, optional: bool = False) -> Callable[[BackendFactory], BackendFactory]:
    def add(factory: BackendFactory) -> BackendFactory:
        (OPTIONAL if optional else REGISTRY)[name] = factory
        return factory

    return add


def _warm(get: Get, label: str) -> None:
    result = get(dict(_PROBE), "c")
    if result != 2:
        raise RuntimeError(f"{label} computed {result!r} for the probe graph instead of 2")


@register("sync")
@contextmanager
def sync_backend(workers: int) -> Iterator[Backend]:
    import dask.local

    from notebook_sched.schedulers import sync

    yield Backend("sync", sync.get, dask.local.get_sync, "dask.local.get_sync")


@register("threads")
@contextmanager
def threads_backend(workers: int) -> Iterator[Backend]:
    import dask.threaded

    from notebook_sched.schedulers import threads

    ours = partial(threads.get, num_workers=workers)
    theirs = partial(dask.threaded.get, num_workers=workers)
    _warm(theirs, "dask.threaded.get")
    yield Backend("threads", ours, theirs, f"dask.threaded.get(num_workers={workers})")


@register("processes")
@contextmanager
def processes_backend(workers: int) -> Iterator[Backend]:
    import dask.multiprocessing

    from notebook_sched.schedulers import processes

    ours = partial(processes.get, num_workers=workers)
    _warm(ours, "our processes backend")  # starts our shared pool; later calls reuse it
    # Dask gets the same advantage: one pool, started and warmed before timing, with
    # the spawn start method both sides use by default.
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        theirs = partial(
            dask.multiprocessing.get, num_workers=workers, pool=pool, optimize_graph=False
        )
        _warm(theirs, "dask.multiprocessing.get")
        yield Backend(
            "processes",
            ours,
            theirs,
            f"dask.multiprocessing.get(pool=ProcessPoolExecutor({workers}))",
            note=(
                "processes: Dask runs with optimize_graph=False: its default chain fusion "
                "raises RecursionError on the 10,000-task chain. Both sides reuse a pool "
                "warmed before timing."
            ),
        )
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        processes.shutdown()


# Hosts Dask's LocalCluster in a process of its own: a LocalCluster runs its scheduler
# on an event-loop thread of the process that creates it, and in the harness's process
# that thread would take the GIL from our backend's scheduler thread while ours is
# timed.  Dask's own timings do not change (measured: 365-375 µs/task on the tree
# either way); the harness talks to it with a Client, as a user would.
_DASK_CLUSTER_HOST = """
import sys
from distributed import LocalCluster
cluster = LocalCluster(n_workers=int(sys.argv[1]), threads_per_worker=1, processes=True,
                       host="127.0.0.1", dashboard_address=None)
print(cluster.scheduler_address, flush=True)
sys.stdin.read()  # until the harness closes our stdin
cluster.close()
"""


@contextmanager
def _dask_local_cluster(workers: int) -> Iterator[str]:
    """A dask.distributed LocalCluster in a subprocess; yields its scheduler address."""
    host = subprocess.Popen(
        [sys.executable, "-c", _DASK_CLUSTER_HOST, str(workers)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        address = host.stdout.readline().strip()
        if not address.startswith("tcp://127.0.0.1:"):
            raise Skip(f"dask's LocalCluster did not start (it printed {address!r})")
        yield address
    finally:
        host.stdin.close()
        try:
            host.wait(30)
        except subprocess.TimeoutExpired:
            host.kill()
            host.wait()


@register("distributed", optional=True)
@contextmanager
def distributed_backend(workers: int) -> Iterator[Backend]:
    """Ours: ``scheduler="distributed"``; Dask: a LocalCluster of single-threaded workers."""
    try:
        import notebook_sched.distributed as ours_module
    except ImportError as exc:
        raise Skip(f"notebook_sched.distributed is not importable ({exc})") from None
    try:
        from distributed import Client
    except ImportError as exc:
        raise Skip(f"dask.distributed is not installed ({exc})") from None
    import notebook_sched

    ours = partial(notebook_sched.get, scheduler="distributed", num_workers=workers)
    try:
        _warm(ours, "scheduler='distributed'")
    except Exception as exc:
        raise Skip(
            f"scheduler='distributed' failed on a 3-task graph: {type(exc).__name__}: {exc}"
        ) from None
    try:
        with (
            _dask_local_cluster(workers) as address,
            Client(address, set_as_default=False) as client,
        ):
            client.wait_for_workers(workers)
            _warm(client.get, "distributed Client.get")

            def settle() -> None:
                """Both clusters release a run's tasks after get returns: wait for that."""
                from notebook_sched.distributed.backend import current_cluster

                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    ours_cluster = current_cluster()
                    ours_busy = ours_cluster is not None and any(
                        w.running or w.queued or w.results_held for w in ours_cluster.workers
                    )
                    dask_busy = client.run_on_scheduler(_dask_task_count)
                    if not ours_busy and not dask_busy:
                        return
                    time.sleep(0.01)

            yield Backend(
                "distributed",
                ours,
                client.get,
                f"LocalCluster(n_workers={workers}, threads_per_worker=1), in its own "
                f"process, + Client.get",
                target=0.05,  # issue 3: at most 1/20 of dask.distributed's per-task time
                deep_chain=False,
                settle=settle,
            )
    finally:
        shutdown = getattr(ours_module, "shutdown", None)
        if callable(shutdown):
            shutdown()


def _dask_task_count(dask_scheduler) -> int:
    return len(dask_scheduler.tasks)
