"""The synchronous backend: every task runs in the calling thread, one at a time.

For debugging and profiling: exceptions keep the task's live frames, so ``%debug``,
``%pdb`` and ``%prun`` see the task itself.  In a background job the run counts as one worker of
the shared budget (``_budget.py``).  Any ``BaseException`` from a task is its failure
(``SystemExit`` included), except KeyboardInterrupt: in this backend a kernel
interrupt arrives inside the running task, so it stays an interrupt.  The
loop pops the top of the ready stack, runs it and records the result; see
``engine.py`` for the state it drives.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from ..engine import Reporter, check_workers, execute_graph
from ..measure import CALLER
from ..task_runner import Failed, TaskRunner, run_task
from ._budget import BACKGROUND, BUDGET, IN_TASK, Member

__all__ = ["get"]

BACKEND = "sync"
WORKER = "sync"


def get(
    dsk: Any, keys: Any, *, observers=None, planners=None, num_workers=None, **options: Any
) -> Any:
    """Compute ``keys`` of ``dsk`` in the calling thread (Dask's ``get`` contract).

    Extra options accepted by other backends (``pool``) are ignored; ``num_workers``
    only sizes the shared budget a background job's run joins.
    """
    __tracebackhide__ = True
    if BACKGROUND.get():  # a job's run: one worker of the shared budget (_budget.py)
        size = check_workers(num_workers)
        with BUDGET.join(1, True, size=size) as member:
            drive = partial(_drive_timed, member=member)
            nested = IN_TASK.set(True)  # a compute its tasks start is nested
            try:
                return execute_graph(
                    dsk, keys, drive, BACKEND, observers=observers, planners=planners
                )
            finally:
                IN_TASK.reset(nested)
    return execute_graph(dsk, keys, _drive, BACKEND, observers=observers, planners=planners)


def _drive(graph, state, report: Reporter) -> None:
    __tracebackhide__ = True
    if report.timed or report.task_measured or graph.on_result:
        _drive_timed(graph, state, report)
        return
    # The fast loop: no clock, no per-task call but the task's and done.
    specs, keys, values = graph.specs, graph.keys, state.values
    ready, finish = state.ready, state.finish
    pop = ready.pop
    done = report.key_done
    while ready:
        i = pop()
        value = run_task(specs[i], values)
        if type(value) is Failed:
            _failed(report, i, value.exc)
        finish(i, value)
        if done:
            done(keys[i])


def _drive_timed(graph, state, report: Reporter, member: Member | None = None) -> None:
    """The loop when someone wants times (every task), measurements (a sample: the
    runner's rule) or result hooks; the runner reads no clock for the others.  In a
    background job (``member``) each task waits for a budget slot while other runs
    share it."""
    __tracebackhide__ = True
    specs, keys, values = graph.specs, graph.keys, state.values
    ready, finish = state.ready, state.finish
    timed = report.timed
    runner = TaskRunner(
        CALLER,
        hooks=graph.on_result,
        keys=keys,
        measure=bool(report.task_measured),
        timed=timed,
    )
    run = runner.run_timed
    started, finished, done = report.started, report.finished, report.key_done
    while ready:
        if member is not None:  # a job's run: every task under a slot
            while not member.try_take():
                member.wait_turn()
        i = ready.pop()
        if timed:
            started(i, WORKER)
        try:
            value = run(i, specs[i], values)
        finally:
            if member is not None:
                member.give()
        if type(value) is Failed:
            _failed(report, i, value.exc)
        if runner.record is not None:
            report.measured(runner.record, WORKER)
        finish(i, value)
        if timed:
            finished(i, WORKER, runner.start, runner.stop)
        elif done:
            done(keys[i])


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
