"""The process backend: batches of tasks run in a reusable pool of worker processes.

For pure-Python code that holds the GIL.  Data returns to the caller: the caller
keeps every result, ships a task's inputs with it and gets its output back.

How work flows (one run; the pool itself lives across runs, see ``_pool.py``)::

    RunState.ready --take--> batch of jobs --cloudpickle--> worker k (up to 2 batches
         ^                                                  in flight per worker)
         |                                                        |
         +--finish(task, value) <-- results, streamed ------------+

* **Batches.**  A batch holds as many ready tasks as fit in about 20 ms of work and
  in a byte budget (their inputs plus their results, expected per layer of the
  graph), and never more than half a worker's share of the ready stack:
  ``_batching.BatchSizer`` decides, for ``auto`` too.  While a worker runs one
  batch the next is already in its pipe, so it never waits for the caller; it
  streams results back as they pass 256 KiB and drops each task's inputs once it ran.
* **Chains stay together.**  A task whose only reader reads nothing else is claimed
  with it (``RunState.claim_chain``); the whole chain travels in one batch and its
  intermediate results never leave the worker.
* **Errors come back at once.**  A failing task's exception (with its remote
  traceback as ``__cause__``) is sent as soon as it raises; the rest of its batch is
  dropped, and workers still busy with this run are killed and replaced, so nothing
  keeps computing for a run that has failed.  The same happens on KeyboardInterrupt.
* **Dead workers are noticed at once**: the caller waits on every busy worker's
  process sentinel together with its pipe, reads the task the worker was running
  from shared memory, and raises an error naming it and the exit code.
* **Hung workers are noticed too.**  Each worker's heartbeat thread raises a shared
  counter every 0.2 s; the caller's wait wakes at least every ``worker_timeout / 4``
  (at most 1 s) and a busy worker whose counter has not moved for ``worker_timeout``
  seconds (config, default 30 s; per call ``worker_timeout=``; None: no check) is
  killed and replaced, and the run fails naming its task.  A task that is only slow
  keeps the counter moving (pure-Python loops hand the GIL over every few ms; sleeps
  and GIL-releasing C calls do not hold it); only native code that holds the GIL
  for that long is mistaken for hung, and the error says how to raise the limit.
* **Forks.**  A task that calls ``os.fork()`` cannot make the child answer for the
  worker (``_forkguard.py``); the parent's result is the answer.

Cheap tasks (literals and aliases) run in the caller and never travel.
"""

from __future__ import annotations

from typing import Any

from .. import config
from ..engine import Reporter, check_workers, execute_graph
from ..errors import (
    MainGuardError,
    TaskPicklingError,
    WorkerDiedError,
    WorkerHungError,
    describe_exit,
)
from ..graph import ALIAS, CALL, EXPR, NODE, VALUE
from ..measure import CALLER
from ..task_runner import Failed, TaskRunner
from . import _pool
from ._batching import MAX_BATCH
from ._channel import BatchChannel
from ._job import make_job
from .on_pool import get_on_pool

__all__ = [
    "get",
    "WorkerDiedError",
    "WorkerHungError",
    "TaskPicklingError",
    "MainGuardError",
    "describe_exit",
    "make_job",
    "shutdown",
]
# The error types, describe_exit and make_job live in errors.py and _job.py; they are
# re-exported here, where users and older code import them from.

BACKEND = "processes"

shutdown = _pool.shutdown


def get(
    dsk: Any,
    keys: Any,
    *,
    num_workers: int | None = None,
    pool=None,
    observers=None,
    planners=None,
    worker_timeout: float | None | str = "config",
    **options: Any,
) -> Any:
    """Compute ``keys`` of ``dsk`` on worker processes (Dask's ``get`` contract).

    ``worker_timeout``: seconds a busy worker may give no sign of life before it is
    killed and the run fails naming its task (None: no check); default the config's.
    """
    if pool is not None:
        return get_on_pool(dsk, keys, pool, observers, planners)
    workers = check_workers(num_workers)
    timeout = worker_timeout_setting(worker_timeout)
    # A share of the shared pool (all of it unless other runs use it: see _pool.py).
    with _pool.acquire(workers).lease(workers) as lease:

        def drive(graph, state, report):
            _ProcessRun(graph, state, report, lease, timeout).drive()

        return execute_graph(
            dsk, keys, drive, BACKEND, observers=observers, workers=workers, planners=planners
        )


def worker_timeout_setting(value: float | None | str) -> float | None:
    """A ``worker_timeout=`` argument checked: ``"config"`` means the config's value."""
    if value == "config":
        value = config.get("worker_timeout")
    return config.validate("worker_timeout", value)


class _ProcessRun:
    """One run on the pool: decide which ready tasks go to which worker, in batches
    (see the module docstring); the batch channel (``_channel.py``) carries them."""

    def __init__(
        self, graph, state, report: Reporter, pool: _pool.WorkerLease, timeout: float | None
    ):
        self.graph = graph
        self.state = state
        self.report = report
        self.pool = pool
        self.channel = BatchChannel(graph, state, report, pool, timeout)
        self.here = TaskRunner(CALLER, hooks=graph.on_result, keys=graph.keys, timed=True)
        specs = graph.specs
        self._shippable = lambda j: specs[j][0] in (CALL, EXPR, NODE)

    # -- main loop -------------------------------------------------------------
    def drive(self) -> None:
        channel = self.channel
        try:
            while self.state.remaining:
                self._dispatch()
                if not channel.batches:
                    if self.state.remaining and not self.state.ready:
                        raise RuntimeError("notebook_sched: no runnable task left (internal error)")
                    continue
                channel.receive()
        except BaseException:
            channel.abort()
            raise

    # -- sending ---------------------------------------------------------------
    def _dispatch(self) -> None:
        state = self.state
        for worker in self.pool.workers:
            if not state.ready:
                return
            if len(worker.outstanding) >= 2 or not self.pool.may_send(worker):
                continue  # busy enough, or being handed to another run (_pool.py)
            tasks, jobs = self._take(self.channel.sizer.max_tasks(len(state.ready)))
            if jobs:
                self.channel.send(worker, tasks, jobs)
                self.pool.sent(len(tasks))  # the budget's turns (_budget.py)

    def _take(self, size: int) -> tuple[list, list]:
        state = self.state
        graph = self.graph
        specs = graph.specs
        values = state.values
        chain_next = graph.chain_next
        ready = state.ready
        sizer = self.channel.sizer
        tasks: list = []
        jobs: list = []
        held = 0  # bytes the batch moves and holds (see _batching)
        while ready and len(jobs) < size and not sizer.full(held):
            i = ready.pop()
            kind = specs[i][0]
            if kind == VALUE or kind == ALIAS:
                run_here(self.here, self.report, state, specs, i)
                sizer.note(i, state.values[i])
                continue
            if chain_next[i] >= 0:
                # Long chains go in pieces, so the caller pickles the next piece while
                # a worker runs this one.
                chain = state.claim_chain(i, self._shippable, max(size, MAX_BATCH))
            else:
                chain = (i,)
            held += sizer.chain_bytes(chain)
            tasks.extend(chain)
            chain_jobs(chain, specs, values, jobs, graph.home)
        return tasks, jobs


def chain_jobs(chain, specs: list, values: list, jobs: list, home: dict | None = None) -> None:
    """Append the jobs of ``chain`` to ``jobs``: each link reads the one before it in
    the batch, and only the last sends its result back (and those with a ``home``
    hook, ``plan.py``, whose results the caller keeps)."""
    last = len(chain) - 1
    for n, t in enumerate(chain):
        local = {chain[n - 1]: len(jobs) - 1} if n else None
        jobs.append(make_job(t, specs[t], values, local, n == last or bool(home and t in home)))


def run_here(here: TaskRunner, report: Reporter, state, specs: list, i: int) -> None:
    """A literal or an alias: not worth a trip, it runs in the caller (``here``)."""
    report.started(i, CALLER)
    value = here.run_timed(i, specs[i], state.values)
    if type(value) is Failed:  # an alias or literal cannot raise; a hook's error warns
        raise value.exc
    state.finish(i, value)
    report.finished(i, CALLER, here.start, here.stop)
