"""The one reporter: how every backend tells observers about tasks, and records failures.

Each run gets one :class:`Reporter` from ``engine.execute_graph`` (it is handed to the
backend's driver).  Backends never call an observer hook or build a
:class:`~notebook_sched.failure.TaskFailure` themselves; they say what happened, by task
number, and the reporter turns it into the protocol of ``events.py``::

    started(i, worker)                    -> task_started(key, worker)
    finished(i, worker, start, stop)      -> task_finished(...), then task_done(key)
    finished_batch([(i, start, stop)], w) -> the same for each item
    done(i)                               -> task_done(key)   (no clock: the cheap hook)
    measured(record, worker)              -> task_measured(record named: key, worker)
    failed(i, exc, worker, remote_tb, inputs)
                                          -> annotate exc, record the TaskFailure,
                                             task_failed(key, worker, exc)
    interrupted(i, exc, worker)           -> annotate a KeyboardInterrupt (no record)

**Cost.**  A hook nobody listens to is None on the reporter (``reporter.task_started``
and friends are the dispatcher's hooks), so a hot loop asks once per run and pays
nothing per task for it.  A loop that wants to count at C speed may bind
``reporter.key_done`` (the ``task_done`` hook itself, which takes a key, or None) and
call it directly: a progress counter such as ``list.append`` then costs tens of
nanoseconds per task instead of a Python call.  That is the one emission outside this
module, and it carries no logic (no order, no worker name, no clock).

**Sampling** (the ``task_measured`` hook) is the task runner's (``task_runner.py``):
the loops' runners make a :class:`~notebook_sched.measure.Measurement` for a sample of
tasks, numbered by task; :meth:`Reporter.measured` names it (key, worker) and hands it
to the hook whole.  Process workers get ``sampling()`` with their batch.

**Errors of observers.**  Whatever a reporter call raises is an observer's (one whose
``propagates_errors`` is True, such as Dask's callbacks): the loops call the reporter
outside the task runner, so such an error ends the run as itself and never becomes a
task's failure.

**Failures.**  ``failed`` reads the failed task's inputs from the run's value table
(the caller's results) unless the backend hands them over: ``inputs`` maps dependency
*task numbers* to values (gathered from a cluster, or produced inside a worker's
batch) and wins over the table; ``inputs=UNKNOWN`` records a failure whose inputs are
gone (no local rerun then).
"""

from __future__ import annotations

from typing import Any

from .errors import misspelled_key_note
from .failure import TaskFailure, annotate, record_failure
from .graph import CALL, EXPR, CompiledGraph
from .measure import Measurement
from .task_runner import SAMPLE_EVERY

__all__ = [
    "Reporter",
    "task_failure",
    "key_failure",
    "UNKNOWN",
]

UNKNOWN = object()  # ``failed(..., inputs=UNKNOWN)``: the task's inputs are not known


class Reporter:
    """Emits one run's task events and records its failures (see the module docstring)."""

    __slots__ = (
        "graph",
        "events",
        "backend",
        "values",
        "keys",
        "task_started",
        "task_finished",
        "task_measured",
        "task_failed",
        "key_done",
        "timed",
        "run",
    )

    def __init__(
        self, graph: CompiledGraph, events, backend: str, values: list | None = None, run=None
    ):
        self.graph = graph
        self.run = run  # the run's RunInfo when someone listens to graph events, else None
        self.events = events  # the run's Dispatcher (worker_started, per_task...)
        self.backend = backend
        self.values = values if values is not None else [None] * len(graph.keys)
        self.keys = graph.keys
        self.task_started = events.task_started
        self.task_finished = events.task_finished
        self.task_measured = events.task_measured
        self.task_failed = events.task_failed
        self.key_done = events.task_done
        # Someone wants a call as each task starts or ends with its times.
        self.timed = bool(self.task_started or self.task_finished)

    def __repr__(self) -> str:
        return f"<Reporter backend={self.backend!r} events={self.events.listeners!r}>"

    def sampling(self) -> int | None:
        """``every`` (the sampling rate) for a process worker's batch when someone
        measures, else None."""
        return SAMPLE_EVERY if self.task_measured else None

    def note_run(self, name: str, value: Any) -> None:
        """Tell the run's observers something about the whole run, in
        ``RunInfo.extra[name]`` (read at ``graph_finished``); nothing if nobody listens.
        ``auto`` notes why each prefix went where (``"routes"``) for the advisor."""
        if self.run is not None:
            self.run.extra[name] = value

    def worker_started(self, worker: str) -> None:
        """On the worker thread itself, once per thread."""
        hook = self.events.worker_started
        if hook:
            hook(worker)

    def started(self, i: int, worker: str) -> None:
        if self.task_started:
            self.task_started(self.keys[i], worker)

    def finished(self, i: int, worker: str, start: float, stop: float, done: bool = True) -> None:
        """Task ``i`` succeeded; ``done=False`` when the backend calls :meth:`done` later
        (the threads backend counts under its lock, after recording the result)."""
        key = self.keys[i]
        if self.task_finished:
            self.task_finished(key, worker, start, stop)
        if done and self.key_done:
            self.key_done(key)

    def finished_batch(self, items, worker: str) -> None:
        """``items``: ``(i, start, stop)`` of tasks that succeeded on ``worker``."""
        keys, finished, done = self.keys, self.task_finished, self.key_done
        for i, start, stop in items:
            key = keys[i]
            if finished:
                finished(key, worker, start, stop)
            if done:
                done(key)

    def done(self, i: int) -> None:
        if self.key_done:
            self.key_done(self.keys[i])

    def measured(self, record: Measurement, worker: str) -> None:
        """A task runner's record (``key``: the task number) of a task that ran on
        ``worker``, named and handed to ``task_measured`` whole."""
        if self.task_measured:
            self.task_measured(record._replace(key=self.keys[record.key], worker=worker))

    def failed(
        self,
        i: int,
        exc: BaseException,
        worker: str,
        remote_tb: str | None = None,
        inputs: Any = None,
        emit: bool = True,
    ) -> TaskFailure:
        """Record task ``i``'s failure (annotated ``exc``), emit ``task_failed`` unless
        ``emit`` is False (:meth:`emit_failed` later), and return the record.  The
        caller raises ``exc``."""
        failure = task_failure(
            self.graph, self.values, i, exc, self.backend, worker, remote_tb, inputs
        )
        if emit:
            self.emit_failed(i, worker, exc)
        return failure

    def emit_failed(self, i: int, worker: str, exc: BaseException) -> None:
        if self.task_failed:
            self.task_failed(self.keys[i], worker, exc)

    def interrupted(self, i: int, exc: BaseException, worker: str) -> None:
        """A KeyboardInterrupt landed in task ``i``: it stays an interrupt (no failure
        record, no task_failed), with a note naming the task."""
        annotate(exc, self.keys[i], self.backend, worker)


def task_failure(
    graph: CompiledGraph,
    values: list,
    i: int,
    exc: BaseException,
    backend: str,
    worker: str,
    remote_traceback: str | None = None,
    inputs: Any = None,
) -> TaskFailure:
    """Annotate ``exc`` and record the failure of task ``i`` with its inputs (read from
    ``values``, overridden by ``inputs``: ``{dependency task: value}``, or UNKNOWN)."""
    key = graph.keys[i]
    annotate(exc, key, backend, worker)  # first, so it comes before the hint
    _add_misspelling_note(exc, graph, graph.specs[i])
    if inputs is UNKNOWN:
        recorded = None
    else:
        recorded = graph.inputs_of(i, values)
        if inputs:
            keys = graph.keys
            for dep, value in inputs.items():
                recorded[keys[dep]] = value
    return key_failure(
        key,
        exc,
        backend,
        worker,
        spec=graph.specs[i],
        inputs=recorded,
        remote_traceback=remote_traceback,
        graph=graph.source,
        requested_keys=[graph.keys[o] for o in graph.outputs],
    )


def key_failure(
    key: Any,
    exc: BaseException,
    backend: str,
    worker: str,
    *,
    spec: Any = None,
    inputs: dict | None = None,
    remote_traceback: str | None = None,
    graph: Any = None,
    requested_keys: Any = None,
) -> TaskFailure:
    """Annotate ``exc`` and record the failure of ``key``: the one place a
    :class:`TaskFailure` is made (:func:`task_failure`, and a cluster Future's failure,
    which is known by key, outside any run)."""
    annotate(exc, key, backend, worker)
    return record_failure(
        TaskFailure(
            key=key,
            exception=exc,
            backend=backend,
            worker=worker,
            spec=spec,
            inputs=inputs,
            remote_traceback=remote_traceback,
            graph=graph,
            requested_keys=requested_keys,
        )
    )


def _add_misspelling_note(exc: BaseException, graph: CompiledGraph, spec: tuple) -> None:
    """On failure only: point at string arguments one or two edits from a key."""
    strings = []
    kind = spec[0]
    if kind == CALL:
        slots = {pos for pos, _ in spec[3]}
        strings = [a for n, a in enumerate(spec[2]) if type(a) is str and n not in slots]
    elif kind == EXPR:
        stack = [spec[1]]
        while stack and len(strings) < 100:
            item = stack.pop()
            if type(item) is str:
                if item not in spec[2]:
                    strings.append(item)
            elif type(item) in (tuple, list):
                stack.extend(item)
    if not strings or graph.source is None:
        return
    note = misspelled_key_note(strings, graph.source)
    if note:
        try:
            exc.add_note(note)
        except (AttributeError, TypeError):
            pass
