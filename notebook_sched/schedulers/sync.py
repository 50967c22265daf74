"""The synchronous backend: every task runs in the calling thread, one at a time.

For debugging and profiling: exceptions keep the task's live frames, so ``%debug``,
``%pdb`` and ``%prun`` see the task itself.  Any ``BaseException`` from a task is
its failure (``SystemExit`` included), except KeyboardInterrupt: in this backend a
kernel interrupt arrives inside the running task, so it stays an interrupt.  The
loop pops the top of the ready stack, runs it and records the result; see
``engine.py`` for the state it drives.
"""

from __future__ import annotations

import time
from typing import Any

from ..engine import LONG_TASK, SAMPLE_EVERY, execute_graph, run_spec, task_failure
from ..events import Dispatcher
from ..failure import annotate
from ..gil import run_queue_seconds

__all__ = ["get"]

BACKEND = "sync"
WORKER = "sync"


def get(dsk: Any, keys: Any, *, observers=None, **options: Any) -> Any:
    """Compute ``keys`` of ``dsk`` in the calling thread (Dask's ``get`` contract).

    Extra options accepted by other backends (``num_workers``, ``pool``) are ignored.
    """
    __tracebackhide__ = True
    return execute_graph(dsk, keys, _drive, BACKEND, observers=observers)


def _drive(graph, state, events: Dispatcher) -> None:
    __tracebackhide__ = True
    specs = graph.specs
    keys = graph.keys
    values = state.values
    ready = state.ready
    pop = ready.pop
    finish = state.finish
    done = events.task_done
    if not (events.task_started or events.task_finished or events.task_measured):
        # The fast loop: no clock, no per-task call but done.
        while ready:
            i = pop()
            try:
                value = run_spec(specs[i], values)
            except BaseException as exc:
                _failed(graph, values, i, exc, events)
            finish(i, value)
            if done:
                done(keys[i])
        return
    _drive_timed(graph, state, events)


def _interrupted(exc: KeyboardInterrupt, key) -> None:
    """A kernel interrupt lands in the running task's frame here: it stays an interrupt
    (progress shows "interrupted", no failure record), with a note naming the task."""
    __tracebackhide__ = True
    annotate(exc, key, BACKEND, WORKER)
    raise exc


def _drive_timed(graph, state, events: Dispatcher) -> None:
    """The loop when someone wants times: every task for task_started/task_finished,
    a sample of tasks for task_measured (see engine.SAMPLE_EVERY); tasks that are
    neither read no clock."""
    __tracebackhide__ = True
    specs, keys, values = graph.specs, graph.keys, state.values
    ready, finish = state.ready, state.finish
    started, finished = events.task_started, events.task_finished
    done, measure = events.task_done, events.task_measured
    clock, cpu_clock = time.time, time.thread_time
    timed = bool(started or finished)
    skip = 0 if measure else 1 << 62  # nobody measures: never sample
    while ready:
        i = ready.pop()
        if skip > 0 and not timed:  # the common case under measurement: a plain run
            skip -= 1
            try:
                value = run_spec(specs[i], values)
            except BaseException as exc:
                _failed(graph, values, i, exc, events)
            finish(i, value)
            if done:
                done(keys[i])
            continue
        key = keys[i]
        sample = skip <= 0
        if started:
            started(key, WORKER)
        if sample:
            c0, q0 = cpu_clock(), run_queue_seconds()
        t0 = clock()
        try:
            value = run_spec(specs[i], values)
        except BaseException as exc:
            _failed(graph, values, i, exc, events)
        t1 = clock()
        if sample:
            measure(key, WORKER, t0, t1, cpu_clock() - c0, run_queue_seconds() - q0)
            skip = 0 if t1 - t0 >= LONG_TASK else SAMPLE_EVERY
        else:
            skip -= 1
        finish(i, value)
        if finished:
            finished(key, WORKER, t0, t1)
        if done:
            done(key)


def _failed(graph, values: list, i: int, exc: BaseException, events: Dispatcher) -> None:
    """A task raised: an interrupt stays one, anything else is the task's failure."""
    __tracebackhide__ = True
    key = graph.keys[i]
    if isinstance(exc, KeyboardInterrupt):
        _interrupted(exc, key)
    task_failure(graph, values, i, exc, BACKEND, WORKER)  # SystemExit too
    if events.task_failed:
        events.task_failed(key, WORKER, exc)
    raise exc
