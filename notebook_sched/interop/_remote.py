"""What runs on a dask.distributed worker for the ``dask`` backend.

Every task of our graph becomes one Dask task ``(run_task, Packed(...), *input keys)``:
Dask substitutes the inputs' values for their keys, and :func:`run_task` runs the
task's compiled spec through the task runner (``task_runner.py``) with them, reporting
to the caller through ``Worker.log_event`` on the caller's topic, as :class:`Tag`-ed
tuples (plain ints and tuples on the wire: Dask's event messages go through msgpack)::

    (Tag.STARTED, run, task, worker address, start)
    (Tag.FINISHED, run, task, worker address, start, stop, measured)
                           measured: a measure.Measurement as a plain tuple, or None
    (Tag.FAILED, run, task, worker address, start, stop, traceback text)

Times are ``time.time()`` on the worker's machine.  When the caller measures
(``Packed.measure``: an Advisor listens), the worker's :class:`~notebook_sched.measure.TaskMeter`
(one per worker process) measures every task: the task thread's CPU seconds, the
result's bytes and the busy-GIL share a probe in that worker saw (``measure.py``).
``Packed.hook`` is the task's result hook (``CompiledGraph.on_result``), run on the
worker.

A task that raises a ``BaseException`` that is not an ``Exception`` (``SystemExit``,
``KeyboardInterrupt``) would make dask.distributed take its worker for dead and retry
the task on others until it gives up (``KilledWorker``, four workers lost).  So it is
raised wrapped in :class:`TaskBaseException`, an ``Exception``; the caller unwraps it
(:func:`unwrap`) and reports the task's own exception.

The spec travels inside :class:`Packed`, an object Dask does not look into, so
literals in it that happen to look like keys stay literals.  This module imports only
the standard library and the task runner; the workers (and, since Dask unpickles
graphs there, the scheduler) need notebook_sched installed, as they need any library
a task uses.
"""

from __future__ import annotations

import enum
import time
import traceback
from typing import Any

from ..errors import dump_exception, load_exception
from ..measure import DASK, process_meter
from ..task_runner import Failed, TaskRunner
from ..tracebacks import package_module

__all__ = ["Packed", "run_task", "Tag", "TaskBaseException", "unwrap"]


class Tag(enum.IntEnum):
    """The kind of a worker's event (the first item of its tuple)."""

    STARTED = 0
    FINISHED = 1
    FAILED = 2


class TaskBaseException(Exception):
    """A task's ``BaseException`` (not an ``Exception``), carried as an Exception."""

    def __init__(self, dumped: bytes, text: str):
        super().__init__(text)
        self.dumped = dumped

    def __reduce__(self):
        return TaskBaseException, (self.dumped, self.args[0])


def unwrap(exc: BaseException) -> BaseException:
    """The task's own exception: a :class:`TaskBaseException` opened, else ``exc``."""
    if isinstance(exc, TaskBaseException):
        return load_exception(exc.dumped)
    return exc


class Packed:
    """A task's spec, its result hook and where to report, opaque to Dask's graph walker."""

    __slots__ = ("topic", "run", "task", "spec", "measure", "hook", "key")

    def __init__(
        self,
        topic: str,
        run: str,
        task: int,
        spec: tuple,
        measure: bool = False,
        hook: Any = None,
        key: Any = None,
    ):
        self.topic = topic
        self.run = run
        self.task = task
        self.spec = spec
        self.measure = measure
        self.hook = hook
        self.key = key

    def __reduce__(self):
        return Packed, (
            self.topic,
            self.run,
            self.task,
            self.spec,
            self.measure,
            self.hook,
            self.key,
        )

    def __repr__(self) -> str:
        return f"<Packed run={self.run} task={self.task} kind={self.spec[0]}>"


def run_task(packed: Packed, *inputs: Any) -> Any:
    """Run one task on a worker; ``inputs`` are its dependencies' values, in order."""
    from distributed import get_worker

    worker = get_worker()
    where = worker.address
    topic, run, task = packed.topic, packed.run, packed.task
    measure = packed.measure
    runner = TaskRunner(
        DASK,
        hooks={task: packed.hook} if packed.hook is not None else None,
        keys={task: packed.key},
        measure=measure,
        every=0,
        timed=True,
        meter=process_meter() if measure else None,
    )
    worker.log_event(topic, (int(Tag.STARTED), run, task, where, time.time()))
    value = runner.run_timed(task, packed.spec, inputs)
    start, stop = runner.start, runner.stop
    if type(value) is Failed:
        exc = value.exc
        text = format_exception(exc)
        worker.log_event(topic, (int(Tag.FAILED), run, task, where, start, stop, text))
        if isinstance(exc, Exception):
            raise exc
        raise TaskBaseException(dump_exception(exc), text) from None
    record = runner.record
    measured = tuple(record) if record is not None else None
    worker.log_event(topic, (int(Tag.FINISHED), run, task, where, start, stop, measured))
    return value


def format_exception(exc: BaseException) -> str:
    """The traceback text from the task's own first frame on (ours left out)."""
    tb = exc.__traceback__
    while tb is not None and package_module(tb.tb_frame.f_globals.get("__name__") or ""):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))
