"""The batch channel to the process pool: how batches of jobs travel to worker processes
and their results come back.  Shared by ``processes`` and ``auto``, which decide
*what* to send (and when); this module owns *how*::

    send(worker, tasks, jobs) --Batch--> worker k (a second batch may wait in its pipe)
    receive() <--Results / TaskError / Unpicklable / Unloadable-- (``_job.py``'s messages)
       |-> Output: what the tasks printed, written to this thread's streams (``task_output.py``)
       |-> RunState.finish, the reporter's events, measurements (Measurement)
       |-> results that cannot be pickled: TaskPicklingError, or ``on_unpicklable``
       |-> a task's failure: remote traceback, its in-batch inputs, raised as the task's
       |-> a dead worker (sentinel) or a hung one (heartbeat, ``worker_timeout``):
           an error naming the task it was running

``receive`` also waits on what its user adds (``auto``: the pipe its threads write to
when they finish), so one wait covers everything.  ``abort`` kills and replaces the
workers still busy with the run.  A batch's results come in order; ``_Batch`` counts
what was reported and announced (``task_started`` fires when a worker starts a task,
as far as the caller can tell).
"""

from __future__ import annotations

import pickle
import time
from multiprocessing.connection import wait

import cloudpickle

from ..engine import Reporter
from ..errors import (
    load_exception,
    raise_if_main_guard,
    unpicklable_result,
    unpicklable_task,
    worker_died,
    worker_hung,
)
from ..failure import RemoteTraceback, key_repr
from ..plan import call_home
from ..task_output import Output
from ..task_output import write as write_output
from . import _pool
from ._batching import BatchSizer
from ._job import Batch, Results, TaskError, Unloadable, batch_hooks, make_job
from ._pool import WorkerHandle

__all__ = ["BatchChannel", "PIPELINE_BYTES"]

PIPELINE_BYTES = 64 * 1024  # a second batch is queued in the pipe only below this size


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


class BatchChannel:
    """One run's traffic with the pool (see the module docstring)."""

    def __init__(
        self,
        graph,
        state,
        report: Reporter,
        pool: _pool.WorkerPool,
        timeout: float | None,
        sizer: BatchSizer | None = None,
    ):
        self.graph = graph
        self.state = state
        self.report = report
        self.pool = pool
        self.timeout = timeout  # worker_timeout, or None
        # How often silence is looked at: often enough to stop within ~timeout * 1.25.
        self.check_every = None if timeout is None else min(1.0, max(0.05, timeout / 4))
        self.next_check = 0.0
        self.batches: dict[int, _Batch] = {}
        self.next_id = 0
        # What batches are sized by: task times, result bytes (``_batching.py``).
        self.sizer = sizer if sizer is not None else BatchSizer(graph, pool.size)
        # Results that could not be pickled, ``[(task, reason, inputs)]``: raised as
        # TaskPicklingError unless the user (``auto``) takes them, with the in-batch
        # inputs kept for them (``keep_inputs``) to run them itself.
        self.on_unpicklable = self._unpicklable_result
        self.keep_inputs = False

    @property
    def mean_seconds(self) -> float | None:
        """Running mean of the tasks' run times."""
        return self.sizer.mean_seconds

    def busy(self) -> int:
        """Workers with a batch of this run."""
        return sum(1 for worker in self.pool.workers if worker.outstanding)

    def idle(self) -> list:
        return [worker for worker in self.pool.workers if not worker.outstanding]

    # -- sending ---------------------------------------------------------------
    def send(self, worker: WorkerHandle, tasks: list, jobs: list) -> None:
        """Queue ``jobs`` (of ``tasks``) for ``worker``: sent now if it is idle, else
        kept in its pipe behind the batch it runs when small, else sent when that ends."""
        batch = _Batch(self.next_id, worker, tasks, self._pickle(self.next_id, jobs))
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

    def _pickle(self, batch_id: int, jobs: list) -> bytes:
        hooks, keys = batch_hooks(self.graph, [job[0] for job in jobs])
        message = Batch(batch_id, jobs, self.report.sampling(), hooks, keys, self.keep_inputs)
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
    def receive(self, timeout: float | None = None, extra: tuple = ()) -> list:
        """Wait (up to ``timeout``; None: until something happens) on the busy workers'
        pipes and process sentinels, and on ``extra`` (auto: its threads' pipe); read
        what arrived, look for hung (``worker_timeout``) and dead workers, and return
        the items of ``extra`` that are ready."""
        busy = [w for w in self.pool.workers if w.outstanding]
        by_conn = {w.conn: w for w in busy}
        by_sentinel = {w.sentinel: w for w in busy}
        if busy and self.check_every is not None:  # wake up to look for hung workers
            timeout = self.check_every if timeout is None else min(timeout, self.check_every)
        ready = wait([*extra, *by_conn, *by_sentinel], timeout)
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
        return [item for item in extra if item in ready]

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
        if kind is Output:  # what the tasks printed: into this thread's (cell's) streams
            write_output(message)
            return
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
        else:  # Unpicklable: some results could not be pickled
            batch.reported += len(message.bad)
            if message.final:
                self._batch_done(worker, batch)
            else:
                self._started_next(batch)
            self.on_unpicklable(message.bad)

    def _unpicklable_result(self, bad: list) -> None:
        task, reason, _inputs = bad[0]
        raise unpicklable_result(self.graph.keys[task], reason)

    def _record(self, batch: _Batch, results: list) -> None:
        finish = self.state.finish
        report = self.report
        started = report.started if report.task_started else None
        finished = report.finished if report.task_finished or report.key_done else None
        name = batch.worker.name
        self.sizer.observe(results)
        home = self.graph.home  # hooks that keep results in the caller (plan.py)
        for task, value, start, stop, measured in results:
            if home and task in home:
                call_home(self.graph, task, value)
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
        if isinstance(exc, MemoryError) and not worker.outstanding:
            # A worker that ran out of memory may stay poisoned (a task lowered its
            # RLIMIT_AS, leaked, fragmented its heap): a fresh one runs the next task.
            self.pool.replace(worker)
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
        raise_if_main_guard(code)
        task = self._running_task(worker)
        what = f"task {key_repr(self.graph.keys[task])}" if task >= 0 else "a batch of tasks"
        exc = worker_died(worker.name, process.pid, what, code)
        if task >= 0:
            self.report.failed(task, exc, worker.name)
        raise exc from None  # the pipe's EOFError is noise next to this

    def abort(self) -> None:
        """Kill and replace every worker still busy with this run."""
        for worker in list(self.pool.workers):
            if worker.outstanding:
                self.pool.replace(worker)
        self.batches.clear()
