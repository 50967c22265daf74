"""The process backend: batches of tasks run in a reusable pool of worker processes.

For pure-Python code that holds the GIL.  Data returns to the caller: the caller
keeps every result, ships a task's inputs with it and gets its output back.

How work flows (one run; the pool itself lives across runs, see ``_pool.py``)::

    RunState.ready --take--> batch of jobs --cloudpickle--> worker k (up to 2 batches
         ^                                                  in flight per worker)
         |                                                        |
         +--finish(task, value) <-- results, streamed ------------+

* **Batches.**  A batch holds as many ready tasks as fit in about 20 ms of work and
  in a byte budget (their inputs plus their expected results), and never more than
  half a worker's share of the ready stack: ``_batching.BatchSizer`` decides, for
  ``auto`` too.  While a worker runs one batch the next is already in its pipe, so it
  never waits for the caller.
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

import pickle
import time
from multiprocessing.connection import wait
from typing import Any

import cloudpickle

from .. import config
from ..engine import Reporter, check_workers, execute_graph
from ..errors import (
    MAIN_GUARD_EXIT,
    MainGuardError,
    TaskPicklingError,
    WorkerDiedError,
    WorkerHungError,
    describe_exit,
    load_exception,
    main_guard_message,
    unpicklable_result,
    unpicklable_task,
    worker_died,
    worker_hung,
)
from ..failure import RemoteTraceback, key_repr
from ..graph import ALIAS, CALL, EXPR, NODE, VALUE
from ..measure import CALLER
from ..task_runner import Failed, TaskRunner
from . import _pool, get_on_pool
from ._batching import MAX_BATCH, BatchSizer
from ._job import Batch, Results, TaskError, Unloadable, batch_hooks, make_job
from ._pool import WorkerHandle

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
PIPELINE_BYTES = 64 * 1024  # a second batch is queued in the pipe only below this size

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
    return config._validate("worker_timeout", value)


class _Batch:
    __slots__ = ("id", "worker", "tasks", "reported", "announced", "data", "sent")

    def __init__(self, batch_id: int, worker: WorkerHandle, tasks: list, data: bytes):
        self.id = batch_id
        self.worker = worker
        self.tasks = tasks
        self.reported = 0  # tasks whose results arrived (results come in order)
        self.announced = 0  # tasks whose task_started event was emitted
        self.data = data
        self.sent = False


class _ProcessRun:
    """One run on the pool: dispatch batches, collect results, handle failures."""

    def __init__(
        self, graph, state, report: Reporter, pool: _pool.WorkerLease, timeout: float | None
    ):
        self.graph = graph
        self.timeout = timeout  # worker_timeout, or None
        # How often silence is looked at: often enough to stop within ~timeout * 1.25.
        self.check_every = None if timeout is None else min(1.0, max(0.05, timeout / 4))
        self.next_check = 0.0
        self.state = state
        self.report = report
        self.pool = pool
        self.batches: dict[int, _Batch] = {}
        self.next_id = 0
        self.sizer = BatchSizer(graph, pool.size if pool is not None else 1)
        self.wake: tuple = ()  # more to wait on in _receive (auto: its threads' pipe)
        self.here = TaskRunner(CALLER, hooks=graph.on_result, keys=graph.keys, timed=True)
        specs = graph.specs
        self._shippable = lambda j: specs[j][0] in (CALL, EXPR, NODE)

    # -- main loop -------------------------------------------------------------
    def drive(self) -> None:
        try:
            while self.state.remaining:
                self._dispatch()
                if not self.batches:
                    if self.state.remaining and not self.state.ready:
                        raise RuntimeError("notebook_sched: no runnable task left (internal error)")
                    continue
                self._receive()
        except BaseException:
            self._abort()
            raise

    def _abort(self) -> None:
        """Kill and replace every worker still busy with this run."""
        for worker in list(self.pool.workers):
            if worker.outstanding:
                self.pool.replace(worker)
        self.batches.clear()

    # -- sending ---------------------------------------------------------------
    def _dispatch(self) -> None:
        state = self.state
        for worker in self.pool.workers:
            if not state.ready:
                return
            if len(worker.outstanding) >= 2 or not self.pool.may_send(worker):
                continue  # busy enough, or being handed to another run (_pool.py)
            tasks, jobs = self._take(self.sizer.max_tasks(len(state.ready)))
            if not jobs:
                continue
            batch = _Batch(self.next_id, worker, tasks, self._pickle(jobs))
            self.next_id += 1
            self.batches[batch.id] = batch
            worker.outstanding.append(batch.id)
            if len(worker.outstanding) == 1:
                # Silence is counted from now: an idle worker was not expected to speak.
                worker.last_beat = worker.beat.value
                worker.last_seen = time.monotonic()
                self._send(batch)
                self._started_next(batch)
            elif len(batch.data) <= PIPELINE_BYTES:
                self._send(batch)

    def _take(self, size: int) -> tuple[list, list]:
        state = self.state
        graph = self.graph
        specs = graph.specs
        values = state.values
        chain_next = graph.chain_next
        ready = state.ready
        sizer = self.sizer
        tasks: list = []
        jobs: list = []
        held = 0  # bytes the batch moves and holds (see _batching)
        while ready and len(jobs) < size and not sizer.full(held):
            i = ready.pop()
            kind = specs[i][0]
            if kind == VALUE or kind == ALIAS:
                self._run_here(i)
                continue
            if chain_next[i] >= 0:
                # Long chains go in pieces, so the caller pickles the next piece while
                # a worker runs this one.
                chain = state.claim_chain(i, self._shippable, max(size, MAX_BATCH))
            else:
                chain = (i,)
            held += sizer.task_bytes(i)
            last = len(chain) - 1
            for n, t in enumerate(chain):
                local = {chain[n - 1]: len(jobs) - 1} if n else None
                jobs.append(make_job(t, specs[t], values, local, n == last))
                tasks.append(t)
        return tasks, jobs

    def _run_here(self, i: int) -> None:
        """A literal or an alias: not worth a trip, it runs in the caller."""
        self.report.started(i, CALLER)
        here = self.here
        value = here.run_timed(i, self.graph.specs[i], self.state.values)
        if type(value) is Failed:  # an alias or literal cannot raise; a hook's error warns
            raise value.exc
        self.sizer.note(i, value)
        self.state.finish(i, value)
        self.report.finished(i, CALLER, here.start, here.stop)

    def _pickle(self, jobs: list) -> bytes:
        batch_id = self.next_id
        hooks, keys = batch_hooks(self.graph, [job[0] for job in jobs])
        message = Batch(batch_id, jobs, self.report.sampling(), hooks, keys)
        try:
            return cloudpickle.dumps(message, protocol=5)
        except Exception:
            for job in jobs:
                try:
                    cloudpickle.dumps(job, protocol=5)
                except Exception as exc:
                    raise unpicklable_task(self.graph.keys[job[0]], exc) from exc
            raise

    def _send(self, batch: _Batch) -> None:
        batch.sent = True
        try:
            batch.worker.conn.send_bytes(batch.data)
        except OSError:
            self._worker_died(batch.worker)
        batch.data = b""

    # -- receiving -------------------------------------------------------------
    def _receive(self, timeout: float | None = None) -> None:
        """Wait (up to ``timeout``; None: until something happens) on the busy workers'
        pipes and process sentinels, and on ``self.wake`` (auto's threads); read what
        arrived, then look for hung (``worker_timeout``) and dead workers."""
        busy = [w for w in self.pool.workers if w.outstanding] if self.pool is not None else []
        by_conn = {w.conn: w for w in busy}
        by_sentinel = {w.sentinel: w for w in busy}
        if busy and self.check_every is not None:  # wake up to look for hung workers
            timeout = self.check_every if timeout is None else min(timeout, self.check_every)
        ready = wait([*self.wake, *by_conn, *by_sentinel], timeout)
        self._woken(ready)
        for conn in ready:
            worker = by_conn.get(conn)
            if worker is not None:
                self._read(worker)
        if busy and self.timeout is not None:
            self._check_alive(busy)
        for worker in by_sentinel.values():
            if worker.outstanding and not worker.process.is_alive():
                self._read(worker)  # it may have sent results before dying
                if worker.outstanding:
                    self._worker_died(worker)

    def _woken(self, ready: list) -> None:
        """Something in ``self.wake`` may be ready (auto: results from its threads)."""

    def _check_alive(self, busy: list) -> None:
        """Fail the run if a busy worker's heartbeat count stopped for ``timeout`` s."""
        now = time.monotonic()
        if now < self.next_check:
            return
        self.next_check = now + self.check_every
        for worker in busy:
            beat = worker.beat.value
            if beat != worker.last_beat:
                worker.last_beat = beat
                worker.last_seen = now
            elif now - worker.last_seen > self.timeout and worker.process.is_alive():
                self._worker_hung(worker, now - worker.last_seen)

    def _read(self, worker: WorkerHandle) -> None:
        conn = worker.conn
        while worker.outstanding:
            # Only the pipe's own errors mean a dead worker: a task's OSError (say,
            # FileNotFoundError) is re-raised by _handle and must pass through as is.
            try:
                if not conn.poll():
                    return
                data = conn.recv_bytes()
            except (EOFError, OSError):
                self._worker_died(worker)
            self.sizer.received(len(data))
            self._handle(worker, pickle.loads(data))

    def _handle(self, worker: WorkerHandle, message: tuple) -> None:
        kind = type(message)
        batch = self.batches.get(message.batch) or self.batches[worker.outstanding[0]]
        if message.results:
            self._record(batch, message.results)
        if kind is Results:
            if message.final:
                self._batch_done(worker, batch)
            else:
                self._started_next(batch)
        elif kind is TaskError:
            self._batch_done(worker, batch)
            self._task_raised(worker, message.task, *message[3:])
        elif kind is Unloadable:  # the worker could not unpickle the batch; it lives on
            self._batch_done(worker, batch)
            task = self._unloadable(batch)
            self._task_raised(worker, task, message.exception, message.traceback, [])
        else:  # Unpicklable: a result could not be pickled
            self._batch_done(worker, batch)
            raise unpicklable_result(self.graph.keys[message.task], message.reason)

    def _record(self, batch: _Batch, results: list) -> None:
        finish = self.state.finish
        report = self.report
        started = report.started if report.task_started else None
        finished = report.finished if report.task_finished or report.key_done else None
        name = batch.worker.name
        self.sizer.observe(results)
        for task, value, start, stop, measured in results:
            finish(task, value)
            if started and batch.announced <= batch.reported:
                started(task, name)  # it ran between two of our reads
                batch.announced = batch.reported + 1
            batch.reported += 1
            if measured is not None:  # the worker's Measurement of a sampled task
                report.measured(measured, name)
            if finished:
                finished(task, name, start, stop)

    def _started_next(self, batch: _Batch) -> None:
        """Announce the task the worker is on now: the first one not yet reported."""
        if self.report.task_started and batch.announced <= batch.reported < len(batch.tasks):
            self.report.started(batch.tasks[batch.reported], batch.worker.name)
            batch.announced = batch.reported + 1

    def _batch_done(self, worker: WorkerHandle, batch: _Batch) -> None:
        worker.outstanding.remove(batch.id)
        del self.batches[batch.id]
        if worker.outstanding:
            following = self.batches[worker.outstanding[0]]
            if not following.sent:
                self._send(following)
            self._started_next(following)

    # -- failures --------------------------------------------------------------
    def _task_raised(self, worker, task, exc_bytes, tb_text, local_inputs) -> None:
        exc = load_exception(exc_bytes)
        exc.__cause__ = RemoteTraceback(tb_text)
        self.report.failed(task, exc, worker.name, tb_text, dict(local_inputs))
        raise exc

    def _unloadable(self, batch: _Batch) -> int:
        """The task of ``batch`` whose job fails to unpickle (here, as in the worker)."""
        specs, values = self.graph.specs, self.state.values
        for task in batch.tasks:
            try:
                pickle.loads(cloudpickle.dumps(make_job(task, specs[task], values, None, True)))
            except Exception:
                return task
        return batch.tasks[0]  # it loads here: blame the batch's first task

    def _worker_hung(self, worker: WorkerHandle, silent: float) -> None:
        task = self._running_task(worker)
        what = f"task {key_repr(self.graph.keys[task])}" if task >= 0 else "a batch of tasks"
        exc = worker_hung(worker.name, worker.process.pid, what, silent, self.timeout)
        worker.kill()
        if task >= 0:
            self.report.failed(task, exc, worker.name)
        raise exc

    def _running_task(self, worker: WorkerHandle) -> int:
        task = worker.current.value
        if task < 0 and worker.outstanding:
            pending = self.batches.get(worker.outstanding[0])
            if pending is not None and pending.reported < len(pending.tasks):
                task = pending.tasks[pending.reported]
        return task

    def _worker_died(self, worker: WorkerHandle) -> None:
        process = worker.process
        process.join(0.5)
        code = process.exitcode
        if code == MAIN_GUARD_EXIT:
            raise MainGuardError(main_guard_message()) from None
        task = self._running_task(worker)
        what = f"task {key_repr(self.graph.keys[task])}" if task >= 0 else "a batch of tasks"
        exc = worker_died(worker.name, process.pid, what, code)
        if task >= 0:
            self.report.failed(task, exc, worker.name)
        raise exc from None  # the pipe's EOFError is noise next to this
