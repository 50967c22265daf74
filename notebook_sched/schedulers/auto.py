"""The ``auto`` backend: threads for tasks that release the GIL or wait, the process
pool for tasks that hold it, in the same graph, learned per task prefix.

How work flows (one run)::

                        +--> thread-k: run task, measure wall/CPU --+
    RunState.ready -----|                                          |--> results, in
      (caller thread    +--> process pool batches (processes.py) --+    the caller
       owns it: no lock)+--> inline here: literals, known-tiny tasks

The calling thread is the only one that touches the :class:`~notebook_sched.engine.RunState`:
it pops ready tasks, asks the :class:`~.auto_routing.Router` where each goes, hands it
to a thread, a worker process or runs it inline, and waits on everything at once
(process pipes and sentinels, plus a self-pipe the threads write to when they finish).
No lock guards the state because nobody else changes it.

* **Slots.**  At most ``num_workers`` tasks run at once, threads and processes
  together (a worker process with a batch counts as one).  The run is one member of
  the process-wide budget (``_budget.py``): while background jobs or other computes
  run, it starts only as many as the budget allows it.
* **Learning.**  A prefix the router has not measured runs on a thread *alone* (no
  other task of ours on a thread meanwhile), with the GIL probe (``gil.py``) running,
  so its busy-GIL share is its own; once ``PROBE_TASKS`` of its tasks are measured,
  the rest of the same run follows the verdict.  Later tasks that happen to run alone
  keep the estimate fresh.  Known prefixes whose tasks take under ``INLINE_SECONDS``
  run inline (a thread hop would cost more than the task).
* **Prefixes.**  Dask's ``key_split`` names ``load-3`` and ``("load", 3)`` ``load``,
  but ``load3`` ``load3``: a graph of hand-named keys (``w0``, ``w1``...) would be
  a thousand new prefixes, each measured alone, so the whole run would go one task at
  a time.  :func:`routing_prefix` also drops trailing digits (``w0`` -> ``w``; keys
  that are numbers share one prefix), so such tasks are learned as one kind.
* **Data.**  A GIL-holding task goes to a process only when moving its inputs and
  result costs less than the GIL time it frees (``Router.route`` weighs the bytes).
* **Starting the pool.**  While no worker process runs, a prefix routed to processes
  starts the pool only when its tasks left in this run free more GIL time than the
  start costs (``Router.worth_starting``; ``_tasks_left`` counts them, one pass over
  the graph); otherwise it stays on threads for the rest of the run, and no worker's
  imports are paid for a few milliseconds of work.
* **The pool.**  The shared process pool (``_pool.py``) is taken only when a task is
  first routed to it, without waiting: when another run holds it (a nested compute
  inside one of our tasks, or another thread's run), this run stays on threads rather
  than risk waiting on itself.
* **What cannot travel.**  auto chose to ship a task, so a task it cannot ship runs
  on a thread instead, and its prefix stays on threads from then on
  (``Router.unshippable``): an input that cannot be pickled (an ``RLock``, a
  generator) is found before the task leaves (``_ship_failed``: it has not run); a
  *result* that cannot be pickled is found only after the task ran in its worker
  (``_result_unshippable``), so that task runs a second time, on a thread here:
  **its side effects happen twice** (once per prefix: the prefix is then pinned).  A
  chain's last task gets the in-batch input its worker kept (``Batch.keep_inputs``);
  when that input cannot be pickled either, the run fails with the
  TaskPicklingError.  Its dependents get the value here, and run on threads for the
  same reason when their prefix routes to processes.
* **Failures and interrupts** behave as in ``threads`` (live frames, other threads'
  tasks cancelled with an asynchronous ``TaskCancelled``) for tasks on threads, and as
  in ``processes`` (remote traceback, local rerun, busy workers replaced) for tasks in
  processes.
"""

from __future__ import annotations

import ctypes
import os
import queue
import threading
import time
from multiprocessing.connection import wait
from typing import Any

from ..engine import Reporter, check_workers, execute_graph
from ..errors import TaskPicklingError, unpicklable_result
from ..failure import key_repr
from ..gil import GilProbe
from ..graph import ALIAS, CALL, EXPR, NODE, VALUE
from ..measure import CALLER, THREAD, sizeof
from ..task_runner import Failed, TaskCancelled, TaskRunner
from . import _pool
from ._batching import MAX_BATCH as MAX_CHAIN
from ._batching import BatchSizer, tasks_by_time
from ._blas import limited_native_threads
from ._budget import BACKGROUND, BUDGET, IN_TASK, Member
from ._channel import BatchChannel
from .auto_routing import PROCESSES, THREADS, Router, routing_prefix
from .processes import chain_jobs, run_here, worker_timeout_setting
from .threads import INTERRUPT_GRACE

__all__ = ["get", "router"]

BACKEND = "auto"
INLINE_SECONDS = 50e-6  # known tasks shorter than this run in the calling thread
INLINE_BUDGET = 0.005  # seconds of inline work before the caller looks at results again
PROCESS_BATCH = 64  # at most this many tasks per process batch (chains count as one)
MAX_DEFERRED = 64  # tasks set aside per dispatch round before it stops looking

_router = Router()


def router() -> Router:
    """The session's routing knowledge (what ``advise`` reports after an auto run)."""
    return _router


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
    """Compute ``keys`` of ``dsk`` on threads and worker processes, chosen per task.

    ``worker_timeout``: as for ``processes`` (a busy worker process silent that long is
    killed and the run fails naming its task); default the config's.
    """
    if pool is not None:
        raise ValueError(
            f"scheduler='auto' runs tasks on its own threads and the process pool, so it "
            f"takes no pool=; got {pool!r}. Use scheduler='threads', pool=... to run on "
            f"an executor of yours."
        )
    workers = check_workers(num_workers)
    timeout = worker_timeout_setting(worker_timeout)

    def drive(graph, state, report):
        _AutoRun(graph, state, report, workers, _router, timeout, member).drive()

    # Threads and worker processes together are one member of the budget (_budget.py).
    with BUDGET.join(workers, BACKGROUND.get()) as member:
        return execute_graph(
            dsk, keys, drive, BACKEND, observers=observers, workers=workers, planners=planners
        )


class _ObserverError:
    """An exception an observer raised on one of our threads, for the caller to raise."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException):
        self.exc = exc


class _AutoRun:
    """One auto run; only the calling thread touches ``state`` (see module docstring).
    Its process side is a batch channel (``_channel.py``, the one ``processes`` uses),
    made when a task is first routed to the pool."""

    def __init__(
        self,
        graph,
        state,
        report: Reporter,
        workers: int,
        router: Router,
        timeout=None,
        member: Member | None = None,
    ):
        self.graph = graph
        self.member = member if member is not None else BUDGET.join(workers, False, False)
        self.state = state
        self.report = report
        self.timeout = timeout
        self.pool = None  # the process pool, once taken (_ensure_pool)
        self.channel: BatchChannel | None = None  # its batch channel then
        self.router = router
        self.slots = workers
        self.sizer = BatchSizer(graph, workers)  # process batches: by time and bytes
        self.prefixes: dict = {}  # key head -> prefix, memoised key_split
        self.threads_busy = 0
        self.solo: int | None = None  # task measured alone on the thread side
        self.thread_starts = 0  # tasks handed to threads so far (tells who ran alone)
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.results: queue.SimpleQueue = queue.SimpleQueue()
        self.wake_read, self.wake_write = os.pipe()  # the threads' "a result is in"
        self.in_task: dict[int, bool] = {}  # thread ident -> inside a task
        self.threads: list[threading.Thread] = []
        self.pool_refused = False
        self.not_worth_a_pool: set[str] = set()  # prefixes too little work to start it
        self.worth_a_pool: set[str] = set()  # ...and those worth it (or it was running)
        self.task_prefixes: list[str] | None = None  # per task, once _tasks_left needs it
        self.more_inline = False  # the last dispatch stopped with inline work left
        self.probe = GilProbe()
        self.inline = TaskRunner(CALLER, hooks=graph.on_result, keys=graph.keys, timed=True)
        specs = graph.specs
        self._shippable = lambda j: (
            specs[j][0] in (CALL, EXPR, NODE) and (self._where(j) == PROCESSES)
        )

    # -- main loop -------------------------------------------------------------
    def drive(self) -> None:
        __tracebackhide__ = True
        with limited_native_threads(self.slots):
            self._drive()

    def _drive(self) -> None:
        __tracebackhide__ = True
        self.probe.start()
        try:
            while self.state.remaining:
                self._dispatch_all()
                if not self.state.remaining:
                    break
                if not (self.channel and self.channel.batches) and not self.threads_busy:
                    if not self.state.ready:
                        raise RuntimeError("notebook_sched: no runnable task left (internal error)")
                    continue
                # Block until something finishes, unless inline work was cut short.
                self._receive(0.0 if self.more_inline else None)
        except BaseException:
            self._abort()
            raise
        finally:
            self._close()
            self._note_routes()

    def _note_routes(self) -> None:
        """Why this run's prefixes went where they went, and the busy-GIL share each
        was routed on, for the advisor (in the run's RunInfo: no shared state)."""
        reasons, shares = self.router.reasons, self.router.shares
        prefixes = set(self.prefixes.values())
        routes = {p: reasons[p] for p in prefixes if p in reasons}
        if "(pool)" in reasons and self.pool_refused:
            routes["(pool)"] = reasons["(pool)"]
        self.report.note_run("routes", routes)
        self.report.note_run("gil_shares", {p: shares[p] for p in prefixes if p in shares})

    def _close(self) -> None:
        for _ in self.threads:
            self.jobs.put(None)
        deadline = time.monotonic() + INTERRUPT_GRACE
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.probe.stop()
        os.close(self.wake_read)
        os.close(self.wake_write)
        if self.pool is not None:
            self.pool.release()
            self.pool = None

    def _abort(self) -> None:
        if self.channel is not None:
            self.channel.abort()
        running = [ident for ident, busy in self.in_task.items() if busy]
        for ident in running:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(ident), ctypes.py_object(TaskCancelled)
            )

    # -- routing ---------------------------------------------------------------
    def _prefix(self, i: int) -> str:
        key = self.graph.keys[i]
        head = key[0] if type(key) is tuple and key else key
        try:
            return self.prefixes[head]
        except KeyError:
            name = self.prefixes[head] = routing_prefix(head)
            return name
        except TypeError:
            return routing_prefix(key)

    def _where(self, i: int) -> str:
        prefix = self._prefix(i)
        router = self.router
        if prefix in self.not_worth_a_pool or self.pool_refused:
            return THREADS
        if self.pool is None and prefix not in self.worth_a_pool:
            # Before the data's cost (which measures this machine's transfer speed):
            # a pool start is the larger cost, and usually the deciding one.
            if not router.holds_gil(prefix):
                return THREADS
            if not _pool.running(self.slots):
                left = self._tasks_left(prefix, i)
                if not router.worth_starting(prefix, left, self.slots):
                    self.not_worth_a_pool.add(prefix)  # for the rest of this run
                    return THREADS
            self.worth_a_pool.add(prefix)
        if router.route(prefix) == THREADS:
            return THREADS
        values = self.state.values
        moving = sum(sizeof(values[d]) for d in self.graph.deps[i])
        return router.route(prefix, moving)

    def _tasks_left(self, prefix: str, current: int) -> int:
        """Tasks of ``prefix`` not started yet (``current``, being routed, included):
        one pass over the graph, for a prefix about to start the pool."""
        if self.task_prefixes is None:
            self.task_prefixes = [self._prefix(j) for j in range(len(self.graph.keys))]
        waiting, ready = self.state.waiting, set(self.state.ready)
        ready.add(current)
        return sum(
            1
            for j, name in enumerate(self.task_prefixes)
            if name == prefix and (waiting[j] or j in ready)
        )

    def _busy(self) -> int:
        procs = self.channel.busy() if self.channel is not None else 0
        return self.threads_busy + procs

    def _dispatch_all(self) -> None:
        """Hand out ready tasks until every slot is busy (see the module docstring)."""
        state, specs, router = self.state, self.graph.specs, self.router
        ready = state.ready
        deferred: list[int] = []
        batches: list[list[int]] = []  # tasks for processes, one list per idle worker
        held: list[int] = []  # bytes each of those batches moves and holds (_batching)
        idle = self.channel.idle() if self.channel is not None else []
        busy = self._busy()
        free = self.member.allowance(busy)  # slots - busy, unless other runs share them
        if free <= 0 and not busy and ready:
            self.member.settle(0, 0, True)  # other runs hold every slot: wait our turn
            self.member.wait_turn()
            return
        threads_before = self.thread_starts
        draining = self.solo is not None  # no thread task starts beside a solo one
        inline_until = time.perf_counter() + INLINE_BUDGET
        self.more_inline = False
        while ready and (free > 0 or batches) and len(deferred) < MAX_DEFERRED:
            i = ready.pop()
            kind = specs[i][0]
            if kind == VALUE or kind == ALIAS:
                run_here(self.inline, self.report, state, specs, i)
                continue
            prefix = self._prefix(i)
            if router.is_new(prefix):
                if draining or self.threads_busy or free <= 0:
                    deferred.append(i)  # measured alone once the thread side is idle
                    draining = True
                    continue
                self._to_thread(i, solo=True)
                draining = True
                free -= 1
                continue
            mean = router.mean_wall(prefix)
            if mean is not None and mean < INLINE_SECONDS:
                self._run_inline(i)
                if time.perf_counter() > inline_until:
                    self.more_inline = True  # look at results, then carry on
                    break
                continue
            if self._where(i) == PROCESSES and self._ensure_pool():
                if not idle and not batches:
                    idle = self.channel.idle()
                per_batch = tasks_by_time(mean, PROCESS_BATCH, 1)
                cost = self.sizer.task_bytes(i)
                if batches and len(batches[-1]) < per_batch and not self.sizer.full(held[-1]):
                    batches[-1].append(i)
                    held[-1] += cost
                elif free > 0 and len(batches) < len(idle):
                    batches.append([i])
                    held.append(cost)
                    free -= 1
                else:
                    deferred.append(i)
                    if free <= 0:
                        break
            elif free > 0 and not draining:
                self._to_thread(i, solo=False)
                free -= 1
            else:
                deferred.append(i)
                if free <= 0:
                    break
        for worker, tasks in zip(idle, batches, strict=False):
            self._send_batch(worker, tasks)
        ready.extend(reversed(deferred))
        # The budget's turns count tasks (a batch's every task), not slots.
        started = self.thread_starts - threads_before + sum(map(len, batches))
        self.member.settle(self._busy(), started, bool(ready) and free <= 0)

    # -- threads -----------------------------------------------------------------
    def _to_thread(self, i: int, solo: bool) -> None:
        if len(self.threads) <= self.threads_busy:
            self._start_thread()
        alone_at_start = self.threads_busy == 0
        self.threads_busy += 1
        self.thread_starts += 1
        if solo:
            self.solo = i
        self.jobs.put((i, self.thread_starts, alone_at_start))

    def _start_thread(self) -> None:
        name = f"thread-{len(self.threads)}"
        thread = threading.Thread(
            target=self._thread_main, args=(name,), name=f"notebook_sched-auto-{name}", daemon=True
        )
        self.threads.append(thread)
        thread.start()

    def _thread_main(self, name: str) -> None:
        """Run the jobs handed to this thread, each through its TaskRunner, measured
        (the router times every task here), and post every outcome to the caller,
        whatever happened: a task's failure comes back as ``Failed``, an observer's
        error (raised by a reporter call) as ``_ObserverError``."""
        __tracebackhide__ = True
        IN_TASK.set(True)  # a compute started by a task here is nested (_budget.py)
        report, graph = self.report, self.graph
        specs, values = graph.specs, self.state.values
        listening = bool(report.task_measured)
        runner = TaskRunner(
            THREAD,
            hooks=graph.on_result,
            keys=graph.keys,
            measure=True,
            every=0,
            timed=True,
            run_queue=listening,
        )
        ident = threading.get_ident()
        in_task = self.in_task
        try:
            report.worker_started(name)
        except BaseException as exc:
            self._post((-1, 0, False, _ObserverError(exc), name, None))
            return
        try:
            while True:
                job = self.jobs.get()
                if job is None:
                    return
                i, ticket, alone = job
                try:
                    report.started(i, name)
                    in_task[ident] = True
                    value = runner.run_timed(i, specs[i], values)
                    in_task[ident] = False
                    if type(value) is Failed:
                        if isinstance(value.exc, TaskCancelled):
                            return  # the run was interrupted or failed: the caller raised
                    else:
                        if listening:
                            report.measured(runner.record, name)
                        report.finished(i, name, runner.start, runner.stop, False)
                except TaskCancelled:
                    return  # arrived outside the task: the caller raised already
                except BaseException as exc:  # an observer's, not the task's
                    value = _ObserverError(exc)
                self._post((i, ticket, alone, value, name, runner.record))
                value = None
        except TaskCancelled:
            pass  # the run was interrupted or failed; the caller raised already

    def _post(self, item: tuple) -> None:
        self.results.put(item)
        os.write(self.wake_write, b"\0")

    def _thread_done(self, item: tuple) -> None:
        i, ticket, alone, value, name, record = item
        if type(value) is _ObserverError:
            raise value.exc  # an observer's (e.g. a Dask callback's): no task failed
        self.threads_busy -= 1
        # Alone: no thread task ran when it started, and none started after it.
        alone = alone and ticket == self.thread_starts
        if self.solo == i:
            self.solo = None
        if type(value) is Failed:
            self.report.failed(i, value.exc, name)
            raise value.exc
        t0, t1 = record.start, record.stop
        gil, samples = self.probe.window(t0, t1) if alone else (None, 0)
        self.sizer.note(i, value)
        self.router.observe(self._prefix(i), t1 - t0, record.cpu, gil, self.sizer.sizes[i], samples)
        self.state.finish(i, value)
        self.report.done(i)

    # -- inline ------------------------------------------------------------------
    def _run_inline(self, i: int) -> None:
        report = self.report
        report.started(i, CALLER)
        value = self.inline.run_timed(i, self.graph.specs[i], self.state.values)
        if type(value) is Failed:
            report.failed(i, value.exc, CALLER)
            raise value.exc
        t0, t1 = self.inline.start, self.inline.stop
        self.router.observe(self._prefix(i), t1 - t0, t1 - t0, None)
        self.sizer.note(i, value)
        self.state.finish(i, value)
        report.finished(i, CALLER, t0, t1)

    # -- processes -----------------------------------------------------------------
    def _ensure_pool(self) -> bool:
        if self.pool is not None:
            return True
        if self.pool_refused:
            return False
        lease = _pool.acquire(self.slots).lease(self.slots, exclusive=True)
        if lease is None:
            self.pool_refused = True  # another run has it; never wait on ourselves
            self.router.reasons["(pool)"] = "the process pool was busy with another run"
            return False
        self.pool = lease
        self.channel = BatchChannel(
            self.graph, self.state, self.report, lease, self.timeout, sizer=self.sizer
        )
        self.channel.on_unpicklable = self._result_unshippable
        self.channel.keep_inputs = True  # a chain's last input, to rerun it here
        return True

    def _send_batch(self, worker, tasks: list[int]) -> None:
        """Ship ``tasks`` (with the chains that continue from them) to ``worker``."""
        specs, values = self.graph.specs, self.state.values
        batch_tasks: list[int] = []
        jobs: list = []
        for i in tasks:
            chain = self.state.claim_chain(i, self._shippable, MAX_CHAIN)
            batch_tasks.extend(chain)
            chain_jobs(chain, specs, values, jobs, self.graph.home)
        try:
            self.channel.send(worker, batch_tasks, jobs)
        except TaskPicklingError:
            self._ship_failed(tasks, batch_tasks, jobs)

    def _ship_failed(self, heads: list[int], batch_tasks: list[int], jobs: list) -> None:
        """auto chose to ship these tasks and one cannot be pickled (an RLock or a
        generator as input): its prefix stays on threads from now on, and the batch's
        tasks go back to the ready list (the chains' tails are unclaimed: they become
        ready when their heads finish), to run on threads wherever threads answer."""
        import cloudpickle

        bad = set()
        for job in jobs:
            try:
                cloudpickle.dumps(job, protocol=5)
            except Exception:
                bad.add(self._prefix(job[0]))
        for prefix in bad or {self._prefix(i) for i in heads}:  # never ship them again
            self.router.unshippable(prefix)
        head_set = set(heads)
        for t in batch_tasks:
            if t not in head_set:
                self.state.claimed[t] = 0
        self.state.ready.extend(reversed(heads))

    def _result_unshippable(self, bad: list) -> None:
        """Tasks that ran in a worker process but whose results cannot be pickled back
        (a generator, a lock): their prefix stays on threads from now on, and they run
        again here, on a thread (so they ran twice: see the module docstring), with
        the in-batch input their worker kept for a chain's last task."""
        state, keys = self.state, self.graph.keys
        for task, reason, inputs in bad:
            self.router.unshippable(self._prefix(task))
            kept = {dep: value for dep, value, ok in inputs if ok}
            needed = self.graph.deps[task] if state.claimed[task] else ()  # a chain's tail
            missing = [dep for dep in needed if dep not in kept]
            if missing:
                exc = unpicklable_result(keys[task], reason)
                exc.add_note(
                    f"scheduler='auto' could not run it on a thread instead: its input "
                    f"{key_repr(keys[missing[0]])} was made in the same worker process and "
                    f"cannot be pickled either. The next run keeps this prefix on threads."
                )
                raise exc
            for dep, value in kept.items():
                state.values[dep] = value  # released as usual when ``task`` finishes
            state.ready.append(task)

    # -- waiting: the pool's pipes and sentinels, and the threads' pipe -------------
    def _receive(self, timeout: float | None) -> None:
        if self.channel is not None:
            ready = self.channel.receive(timeout, (self.wake_read,))
        else:
            ready = wait([self.wake_read], timeout)
        if ready:
            os.read(self.wake_read, 65536)
        while True:
            try:
                item = self.results.get_nowait()
            except queue.Empty:
                break
            self._thread_done(item)
