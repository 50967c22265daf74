"""The scheduler's state machine: a pure object, no threads, sockets or clocks.

The I/O thread (``scheduler.py``) feeds it *stimuli* (a worker joined or died, tasks
finished or failed, data arrived, the client submitted, asked for data, released) and
takes out *instructions*: per worker, an ordered list of operations to send in one
message (``take_outbox``), and notices for client-side objects (``take_notices``).
Tests drive it with plain calls and asserts.

Stimuli are the typed records of ``stimuli.py``; ``handle(stimulus)`` is the one
entry point, and each public method (``handle_done(wid, items, values)`` for
``TasksDone``, ...) is that entry under its own name.  Every stimulus is recorded in
a bounded log: ``format_log()`` prints the last ones for a failing test or a bug
report.  The state is written in four parts that share the fields of
``state_core.StateCore`` (listed there): this module, ``placement``, ``gathers``,
``recovery``.

Tasks
    Every task has an integer id (``tid``) and a :class:`TaskState`.  A ``get`` run
    takes a block of ids, ``base + graph index``, so its compiled specs only need
    their dependency indices shifted; futures and ``compute`` tasks are *named*: their
    key is their identity (``named``), as in dask.distributed.  States::

        WAITING -> QUEUED -> PROCESSING -> MEMORY -> RELEASED
           ^          (on a worker)          |   (data freed; spec kept, so a lost
           +---------------------------------+    result can be recomputed)
        any unfinished state -> ERRED (the task or one of its inputs failed)

    ``waiting`` counts inputs not in memory (meaningful in WAITING).  ``holders`` is
    client references plus dependents that are not finished (WAITING, QUEUED,
    PROCESSING, ERRED - an erred task keeps its inputs, so the failure can be
    inspected with its real inputs); at zero, data is freed on the worker.

Placement
    See ``placement.py``: root tasks go out in contiguous chunks, chains and
    in-trees follow their inputs to one worker in the same message, and every
    other task goes where most of its input bytes are.

Failures of workers
    See ``recovery.py``: lost results are recomputed, tasks running on workers that
    died (or were killed for not answering) are retried and, after MAX_SUSPICIOUS
    deaths, fail with :class:`KilledWorker`; what cannot be made again fails, with
    everything that needs it, instead of waiting.

Operations to workers (``(name, [items])``, consecutive items of one name merged)::

    compute  (tid, spec, dep tids, priority, ((dep, holder wid), ...), send_back)
    release  tid             forget the task: drop its data, cancel it if pending/running
    where    (tid, wid)      an input you wait for is now held by worker wid
    send     (request, tid)  send this result to the scheduler
    steal    tid             give this task back if it has not started
    peers    {wid: address}
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from ..errors import unpicklable_task
from ..graph import CALL, VALUE, CompiledGraph, remap_spec
from ..task_output import write_text
from .gathers import DataRequests
from .placement import Placement
from .recovery import Recovery
from .stimuli import (
    Acquired,
    Cancelled,
    GraphAdded,
    Released,
    Reset,
    RunAdded,
    RunReleased,
    Scattered,
    Submitted,
    TaskErred,
    TaskOutput,
    TasksDone,
    TaskUnsendable,
    WorkerJoined,
    WorkerPaused,
    stimulus_entry,
)
from .tasks import (
    ERRED,
    FORGOTTEN,
    MEMORY,
    PROCESSING,
    RELEASED,
    UNFINISHED,
    WAITING,
    CancelledError,
    KilledWorker,
    RunRecord,
    TaskState,
    WorkerState,
)

__all__ = ["SchedulerState", "KilledWorker", "CancelledError", "ECHO"]


class _Echo:
    """The target of what a task with no run printed (a future's): written where the
    scheduler's thread writes, as before output was captured."""

    def notify(self, kind: str, payload: Any) -> None:
        write_text(*payload)


ECHO = _Echo()


class SchedulerState(Placement, DataRequests, Recovery):
    """Tasks, workers, placement and recovery.  One thread calls it (the I/O thread).

    The fields are :class:`~notebook_sched.distributed.state_core.StateCore`'s; this
    part offers ``_fail``, ``_unneeded``, ``_hold_inputs``, ``_settle`` to the others."""

    # -- workers ---------------------------------------------------------------
    @stimulus_entry(WorkerJoined)
    def add_worker(self, wid: int, name: str, nthreads: int, address: Any) -> None:
        worker = WorkerState(wid, name, nthreads, address)
        self.workers[wid] = worker
        peers = {w.wid: w.address for w in self.workers.values()}
        for other in self.workers.values():
            self._emit(other, "peers", peers)

    @stimulus_entry(WorkerPaused)
    def set_paused(self, wid: int, paused: bool) -> None:
        worker = self.workers.get(wid)
        if worker is not None:
            worker.paused = paused

    # -- adding work -----------------------------------------------------------
    @stimulus_entry(RunAdded)
    def add_run(self, run_id: int, graph: CompiledGraph, target: Any, events: bool) -> int:
        """Add a ``get`` run; returns the base of its task ids.  Outputs come back to
        ``target`` as ``("data", [values of graph.outputs])``; task events as
        ``("done", ([(index, start, stop)], worker name))``."""
        base = self.next_tid
        n = len(graph.keys)
        self.next_tid += n
        self.seq += 1
        run = RunRecord(run_id, target, base, events)
        self.runs[run_id] = run
        prefix = self.seq << 32
        keys, specs, deps, priority = graph.keys, graph.specs, graph.deps, graph.priority
        tid = range(base, base + n)  # graph index -> task id
        tasks = [
            TaskState(tid[i], keys[i], remap_spec(specs[i], tid), (), prefix + priority[i], run)
            for i in range(n)
        ]
        for i, ts in enumerate(tasks):
            ts.deps = tuple([tasks[d] for d in deps[i]])
            self.tasks[ts.tid] = ts
        run.tasks = tasks
        _set_hooks(graph, tasks)
        for out in graph.outputs:
            tasks[out].refs += 1
            tasks[out].holders += 1
        for ts in tasks:
            for dep in ts.deps:
                dep.dependents.append(ts)
                dep.holders += 1
            ts.waiting = len(ts.deps)
        ready = [ts for ts in tasks if not ts.deps]
        for ts in ready:
            self._ready(ts)
        self.request_data(run_id, [base + out for out in graph.outputs], target)
        return base

    @stimulus_entry(Submitted)
    def submit(self, items: list) -> None:
        """Add named tasks: ``(key, func, args, ((position, dep key), ...))`` each.

        A key that exists already is not replaced (same key, same result)."""
        for key, func, args, slots in items:
            if key in self.named:
                continue
            deps = []
            for _pos, dep_key in slots:
                dep = self.named.get(dep_key)
                if dep is None:
                    raise KeyError(dep_key)
                deps.append(dep)
            spec = (CALL, func, args, tuple((pos, self.named[k].tid) for pos, k in slots))
            self._add_named(key, spec, tuple(dict.fromkeys(deps)))

    @stimulus_entry(GraphAdded)
    def add_graph(self, graph: CompiledGraph, home: Any = None) -> None:
        """Add the tasks of ``graph`` as named tasks (``Client.compute``).  ``home``
        hears ``("home", [(index, packed value)])`` for the new tasks of
        ``graph.home`` (results the cache keeps in the client: ``plan.py``)."""
        tids = [0] * len(graph.keys)
        new = []
        for i, key in enumerate(graph.keys):
            existing = self.named.get(key)
            if existing is not None:
                tids[i] = existing.tid
            else:
                tids[i] = self.next_tid + len(new)
                new.append(i)
        self.next_tid += len(new)
        pending: dict[int, TaskState] = {}
        for i in new:
            spec = remap_spec(graph.specs[i], tids)
            pending[tids[i]] = TaskState(tids[i], graph.keys[i], spec, (), 0)
        for i in new:
            ts = pending[tids[i]]
            ts.deps = tuple(pending.get(tids[d]) or self.tasks[tids[d]] for d in graph.deps[i])
        if graph.on_result:
            _set_hooks(graph, {i: pending[tids[i]] for i in new}, home)
        self.seq += 1
        prefix = self.seq << 32
        for i in new:
            ts = pending[tids[i]]
            ts.priority = prefix + graph.priority[i]
            self.tasks[ts.tid] = ts
            self.named[ts.key] = ts
        for i in sorted(new, key=graph.priority.__getitem__):
            self._link(pending[tids[i]])

    @stimulus_entry(Scattered)
    def scatter(self, items: list) -> None:
        """Put data on workers: ``(key, value, wid or None)``; becomes a named task."""
        workers = list(self.workers.values())
        for n, (key, value, wid) in enumerate(items):
            if key in self.named:
                continue
            ts = self._add_named(key, (VALUE, value), (), link=False)
            ts.send_back = False
            if wid is not None and wid in self.workers:
                ts.pinned = self.workers[wid]
            elif workers:
                ts.pinned = workers[n % len(workers)]
            self._link(ts)

    def _add_named(self, key: Hashable, spec: Any, deps: tuple, link: bool = True) -> TaskState:
        self.seq += 1
        ts = TaskState(self.next_tid, key, spec, deps, self.seq << 32)
        self.next_tid += 1
        self.tasks[ts.tid] = ts
        self.named[key] = ts
        if link:
            self._link(ts)
        return ts

    def _link(self, ts: TaskState) -> None:
        """Connect a new task to its inputs; ready it, fail it or wait."""
        for dep in ts.deps:
            dep.dependents.append(ts)
        for dep in self._hold_inputs(ts):
            self._recompute(dep)
        self._settle(ts)

    def _hold_inputs(self, ts: TaskState) -> list:
        """``ts`` (about to wait) holds its inputs again and counts those not in memory
        (``waiting``); returns the RELEASED ones, which must be computed again.  Shared
        by :meth:`_link` and ``recovery._recompute``: the same counting, whether a task
        is new or made again."""
        waiting = 0
        released = []
        for dep in ts.deps:
            dep.holders += 1
            if dep.state != MEMORY:
                waiting += 1
                if dep.state == RELEASED:
                    released.append(dep)
        ts.waiting = waiting
        return released

    def _settle(self, ts: TaskState) -> None:
        """After :meth:`_hold_inputs` (and recomputing what it returned): fail ``ts`` if
        an input failed, ready it if nothing is missing, else it waits."""
        if ts.state != WAITING:
            return  # failed meanwhile (an input that cannot be made again)
        for dep in reversed(ts.deps):  # the last failed input names the error, as ever
            if dep.state == ERRED:
                self._fail(ts, dep.error)
                return
        if not ts.waiting:
            self._ready(ts)

    # -- client references -----------------------------------------------------
    @stimulus_entry(Acquired)
    def acquire(self, key: Hashable, target: Any) -> None:
        """A client holds a future for ``key``; ``target`` hears its state changes."""
        ts = self.named.get(key)
        if ts is None:
            self._notify(target, "cancelled", f"{key!r} is not known to the scheduler")
            return
        ts.refs += 1
        ts.holders += 1
        if target is not None:
            if ts.watchers is None:
                ts.watchers = []
            ts.watchers.append(target)
            if ts.state == MEMORY:
                self._notify(target, "finished")
            elif ts.state == ERRED:
                self._notify(target, "erred", ts.error)

    @stimulus_entry(Released)
    def release(self, key: Hashable, target: Any) -> None:
        """The client dropped its last future for ``key``."""
        ts = self.named.get(key)
        if ts is None:
            return
        ts.refs -= 1
        ts.holders -= 1
        if ts.watchers and target in ts.watchers:
            ts.watchers.remove(target)
        if ts.holders == 0:
            self._unneeded(ts)

    @stimulus_entry(Cancelled)
    def cancel(self, keys: list, reason: str = "cancelled") -> None:
        """Forget named tasks (and what depends on them), wherever they are."""
        doomed: dict = {}
        stack = [self.named[k] for k in keys if k in self.named]
        while stack:
            ts = stack.pop()
            if ts.tid in doomed:
                continue
            doomed[ts.tid] = ts
            stack.extend(ts.dependents)
        for ts in doomed.values():
            for target in ts.watchers or ():
                self._notify(target, "cancelled", reason)
            ts.watchers = None
            self._fail_gathers(ts, CancelledError(f"{ts.key!r} was {reason}"))
        for ts in doomed.values():
            self._forget(ts)

    @stimulus_entry(RunReleased)
    def release_run(self, run_id: int) -> None:
        """The caller is done with a ``get`` run (finished, failed or interrupted)."""
        run = self.runs.pop(run_id, None)
        if run is None:
            return
        tasks = self.tasks
        for ts in run.tasks:
            if tasks.pop(ts.tid, None) is None:
                continue
            self._drop(ts)
            ts.gathers = None
        for rid in [rid for rid, g in self.gathers.items() if g.target is run.target]:
            del self.gathers[rid]

    @stimulus_entry(Reset)
    def reset(self, reason: str) -> None:
        """Forget everything (restart/close): every future and run hears ``reason``."""
        for run in list(self.runs.values()):
            self._notify(run.target, "cancelled", reason)
            self.release_run(run.run_id)
        for ts in list(self.tasks.values()):
            for target in ts.watchers or ():
                self._notify(target, "cancelled", reason)
        for gather in self.gathers.values():
            self._notify(gather.target, "cancelled", reason)
        self.tasks.clear()
        self.named.clear()
        self.gathers.clear()
        self.root_heap.clear()
        self.ready_deps.clear()
        for worker in self.workers.values():
            worker.processing.clear()
            worker.has.clear()
            worker.nbytes = 0

    # -- results from workers --------------------------------------------------
    @stimulus_entry(TasksDone)
    def handle_done(self, wid: int, items: list, values: dict | None) -> None:
        """Tasks finished on worker ``wid``: ``(tid, nbytes, start, stop, measured)``
        each (``measured``: the worker's ``measure.Measurement`` of a sample, or None);
        ``values`` holds the results of tasks sent with ``send_back``."""
        worker = self.workers.get(wid)
        if worker is None:
            return
        tasks = self.tasks
        events: dict = {}
        wanted = []
        spent = 0.0
        for tid, nbytes, start, stop, *measured in items:
            ts = tasks.get(tid)
            if ts is None or ts.state != PROCESSING or ts.worker is not worker:
                if ts is None or ts.worker is not worker:
                    self._emit(worker, "release", tid)
                continue
            spent += stop - start
            worker.processing.discard(ts)
            worker.has.add(ts)
            worker.nbytes += nbytes
            ts.state = MEMORY
            ts.nbytes = nbytes
            run = ts.run
            if run is not None:
                if run.events:
                    item = (tid - run.base, start, stop)
                    if measured and measured[0] is not None:  # named by run task number
                        item = (*item, measured[0]._replace(key=item[0], nbytes=nbytes))
                    events.setdefault(run, []).append(item)
            elif ts.watchers:
                for target in ts.watchers:
                    self._notify(target, "finished")
                if ts.pinned is not None:
                    ts.spec = None  # scattered data lives on the worker now
            for dep in ts.deps:
                dep.holders -= 1
                if not dep.holders:
                    self._unneeded(dep)
            for user in ts.dependents:
                state = user.state
                if state == WAITING:
                    user.waiting -= 1
                    if not user.waiting:
                        self._ready(user)
                elif state == PROCESSING and user.worker is not worker:
                    self._emit(user.worker, "where", (tid, wid))
            if ts.gathers:
                wanted.append(ts)
            elif not ts.holders:
                self._unneeded(ts)
        for run, done in events.items():
            self._notify(run.target, "done", (done, worker.name))
        if values:
            self._send_home(items, values)
        for ts in wanted:  # after the events: a run ends when its outputs arrive
            self._send_gathers(ts, worker, values)
            if not ts.holders:
                self._unneeded(ts)
        if items:
            self._measured(spent / len(items))

    def _send_home(self, items: list, values: dict) -> None:
        """Results whose hook wants them in the caller (``plan.py``: home hooks), as
        ``("home", [(index, packed value)])``: to a run's target (its outputs come with
        the run's data instead), or to a named task's ``home`` target (its own)."""
        home: dict = {}
        for tid, *_ in items:
            ts = self.tasks.get(tid)
            if ts is None or not ts.home or tid not in values:
                continue
            run = ts.run
            if run is None:  # Client.compute: ts.home is (target, graph index)
                target, i = ts.home
                home.setdefault(target, []).append((i, values[tid]))
            elif not ts.gathers:
                home.setdefault(run.target, []).append((tid - run.base, values[tid]))
        for target, found in home.items():
            self._notify(target, "home", found)

    @stimulus_entry(TaskUnsendable)
    def task_unsendable(self, tid: int, exc: BaseException) -> None:
        """Task ``tid`` could not be pickled to go to its worker."""
        ts = self.tasks.get(tid)
        if ts is None or ts.state != PROCESSING:
            return
        self._fail(ts, (unpicklable_task(ts.key, exc), None, ts.worker.name))

    @stimulus_entry(TaskOutput)
    def handle_output(self, wid: int, items: list) -> None:
        """Tasks printed on worker ``wid`` (sent before they are reported done): the
        text goes to the run the task belongs to, whose caller writes it into its own
        streams (a job's cell); a future's task has no run: the text goes to ECHO."""
        for tid, stdout, stderr in items:
            ts = self.tasks.get(tid)
            run = ts.run if ts is not None else None
            self._notify(run.target if run is not None else ECHO, "output", (stdout, stderr))

    @stimulus_entry(TaskErred)
    def handle_error(self, wid: int, tid: int, error: Any, traceback_text: str) -> None:
        """Task ``tid`` raised on ``wid``; ``error`` is the pickled exception (bytes)."""
        worker = self.workers.get(wid)
        ts = self.tasks.get(tid)
        if worker is None or ts is None or ts.state != PROCESSING or ts.worker is not worker:
            return
        self._fail(ts, (error, traceback_text, worker.name))

    def _fail(self, ts: TaskState, error: tuple) -> None:
        """Mark ``ts`` and everything that depends on it as failed with ``error``."""
        run = ts.run
        if run is not None and run.run_id in self.runs:
            self._notify(run.target, "failed", (ts.tid - run.base, error))
        stack = [ts]
        while stack:
            t = stack.pop()
            if t.state in (ERRED, MEMORY, RELEASED, FORGOTTEN):
                continue
            if t.state == PROCESSING:
                self._emit(t.worker, "release", t.tid)
                t.worker.processing.discard(t)
            t.state = ERRED
            t.error = error
            t.worker = None
            for target in t.watchers or ():
                self._notify(target, "erred", error)
            self._fail_gathers(t, error)
            stack.extend(t.dependents)

    # -- releasing -------------------------------------------------------------
    def _unneeded(self, ts: TaskState) -> None:
        """Nothing holds ``ts`` any more: free its data; forget it if nothing refers to it."""
        if ts.state == MEMORY:
            self._free(ts)
        if ts.run is None and not ts.dependents and not ts.refs:
            self._forget(ts)

    def _free(self, ts: TaskState) -> None:
        worker = ts.worker
        self._emit(worker, "release", ts.tid)
        worker.has.discard(ts)
        worker.nbytes -= ts.nbytes
        ts.state = RELEASED
        ts.worker = None

    def _drop(self, ts: TaskState) -> None:
        """``ts`` is FORGOTTEN: its worker drops it (its data, or the pending task)."""
        worker = ts.worker
        if worker is not None:
            self._emit(worker, "release", ts.tid)
            if ts.state == MEMORY:
                worker.has.discard(ts)
                worker.nbytes -= ts.nbytes
            else:
                worker.processing.discard(ts)
        ts.state = FORGOTTEN
        ts.worker = None

    def _forget(self, ts: TaskState) -> None:
        """Remove a named task (and inputs nothing else refers to) from the scheduler.

        Iterative, so dropping the last future of a long chain does not recurse."""
        stack = [ts]
        while stack:
            t = stack.pop()
            if self.tasks.pop(t.tid, None) is None:
                continue
            if self.named.get(t.key) is t:
                del self.named[t.key]
            was_unfinished = t.state in UNFINISHED
            self._drop(t)
            for dep in t.deps:
                if t in dep.dependents:
                    dep.dependents.remove(t)
                if was_unfinished:
                    dep.holders -= 1
                    if not dep.holders and dep.state == MEMORY:
                        self._free(dep)
                if dep.run is None and not dep.refs and not dep.holders and not dep.dependents:
                    stack.append(dep)

    # -- views -----------------------------------------------------------------
    def who_has(self, keys: list) -> dict:
        out = {}
        for key in keys:
            ts = self.named.get(key)
            out[key] = ts.worker.name if ts is not None and ts.state == MEMORY else None
        return out

    def worker_summary(self) -> dict:
        """``{wid: (processing count, bytes held, results held, paused)}``."""
        workers = self.workers.values()
        return {w.wid: (len(w.processing), w.nbytes, len(w.has), w.paused) for w in workers}


SchedulerState._entries = {  # stimulus type -> its entry method, for handle()
    entry.stimulus: entry
    for entry in (getattr(SchedulerState, name) for name in dir(SchedulerState))
    if hasattr(entry, "stimulus")
}


def _set_hooks(graph: CompiledGraph, tasks, home: Any = None) -> None:
    """Each task's result hook (``CompiledGraph.on_result``), shipped with the task; the
    tasks of ``graph.home`` send their results back (to ``home`` for named tasks)."""
    on_result = graph.on_result
    if on_result:
        for i, hook in on_result.items():
            try:
                ts = tasks[i]
            except (KeyError, IndexError):
                continue  # a task Client.compute found already known: it does not run
            ts.hook = (graph.keys[i], hook)
    for i in graph.home or ():
        ts = tasks[i] if isinstance(tasks, list) else tasks.get(i)
        if ts is None:
            continue  # a task Client.compute found already known
        if ts.run is not None:  # a get run: its target hears it
            ts.home = ts.send_back = True
        elif home is not None:  # Client.compute: the client's target for this graph
            ts.home = (home, i)
            ts.send_back = True
