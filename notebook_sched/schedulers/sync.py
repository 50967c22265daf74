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

from ..engine import Reporter, execute_graph, run_spec, skip_after
from ..gil import run_queue_seconds
from ..measure import result_nbytes

__all__ = ["get"]

BACKEND = "sync"
WORKER = "sync"


def get(dsk: Any, keys: Any, *, observers=None, planners=None, **options: Any) -> Any:
    """Compute ``keys`` of ``dsk`` in the calling thread (Dask's ``get`` contract).

    Extra options accepted by other backends (``num_workers``, ``pool``) are ignored.
    """
    __tracebackhide__ = True
    return execute_graph(dsk, keys, _drive, BACKEND, observers=observers, planners=planners)


def _drive(graph, state, report: Reporter) -> None:
    __tracebackhide__ = True
    specs = graph.specs
    keys = graph.keys
    values = state.values
    ready = state.ready
    pop = ready.pop
    finish = state.finish
    done = report.key_done
    if not (report.timed or report.task_measured):
        # The fast loop: no clock, no per-task call but done.
        while ready:
            i = pop()
            try:
                value = run_spec(specs[i], values)
            except BaseException as exc:
                _failed(report, i, exc)
            finish(i, value)
            if done:
                done(keys[i])
        return
    _drive_timed(graph, state, report)


def _drive_timed(graph, state, report: Reporter) -> None:
    """The loop when someone wants times: every task for task_started/task_finished,
    a sample of tasks for task_measured (see reporter.py); tasks that are neither
    read no clock."""
    __tracebackhide__ = True
    specs, keys, values = graph.specs, graph.keys, state.values
    ready, finish = state.ready, state.finish
    started, finished = report.started, report.finished
    done, measure = report.key_done, report.measured
    clock, cpu_clock = time.time, time.thread_time
    timed = report.timed
    skip = 0 if report.task_measured else 1 << 62  # nobody measures: never sample
    # Run-queue time (4 µs to read) only after a long task: the 1-in-SAMPLE_EVERY
    # samples of short tasks have no starvation worth correcting.
    queued = True
    while ready:
        i = ready.pop()
        if skip > 0 and not timed:  # the common case under measurement: a plain run
            skip -= 1
            try:
                value = run_spec(specs[i], values)
            except BaseException as exc:
                _failed(report, i, exc)
            finish(i, value)
            if done:
                done(keys[i])
            continue
        sample = skip <= 0
        started(i, WORKER)
        if sample:
            c0, q0 = cpu_clock(), run_queue_seconds() if queued else 0.0
        t0 = clock()
        try:
            value = run_spec(specs[i], values)
        except BaseException as exc:
            _failed(report, i, exc)
        t1 = clock()
        if sample:
            cpu = cpu_clock() - c0
            starved = run_queue_seconds() - q0 if queued else None
            measure(i, WORKER, t0, t1, cpu, starved, result_nbytes(value))
            skip = skip_after(t1 - t0)
            queued = not skip
        else:
            skip -= 1
        finish(i, value)
        finished(i, WORKER, t0, t1)


def _failed(report: Reporter, i: int, exc: BaseException) -> None:
    """A task raised: a kernel interrupt lands in the running task's frame here and stays
    an interrupt (progress shows "interrupted", no failure record), with a note naming
    the task; anything else is the task's failure (SystemExit too)."""
    __tracebackhide__ = True
    if isinstance(exc, KeyboardInterrupt):
        report.interrupted(i, exc, WORKER)
    else:
        report.failed(i, exc, WORKER)
    raise exc
