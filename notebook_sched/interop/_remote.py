"""What runs on a dask.distributed worker for the ``dask`` backend.

Every task of our graph becomes one Dask task ``(run_task, Packed(...), *input keys)``:
Dask substitutes the inputs' values for their keys, and :func:`run_task` runs the
task's compiled spec (``engine.run_spec``) with them, reporting to the caller
through ``Worker.log_event`` on the caller's topic::

    ("s", run, task, worker address, start)                        started
    ("d", run, task, worker address, start, stop)                  finished
    ("d", run, task, worker address, start, stop, cpu, starved, nbytes, gil)
                                                                   finished, measured
    ("f", run, task, worker address, start, stop, traceback text)  raised

Times are ``time.time()`` on the worker's machine.  When the caller measures
(``Packed.measure``: an Advisor listens), the worker's :class:`~notebook_sched.measure.TaskMeter`
(one per worker process) adds the task thread's CPU seconds, the result's bytes and the
busy-GIL share a probe in that worker saw while the task ran (``measure.py``).

The spec travels inside :class:`Packed`, an object Dask does not look into, so
literals in it that happen to look like keys stay literals.  This module imports only
the standard library and ``notebook_sched.engine`` (``measure`` when measuring); the
workers (and, since Dask unpickles graphs there, the scheduler) need notebook_sched
installed, as they need any library a task uses.
"""

from __future__ import annotations

import time
import traceback
from typing import Any

from ..engine import run_spec

__all__ = ["Packed", "run_task"]


class Packed:
    """A task's spec and where to report, opaque to Dask's graph walker."""

    __slots__ = ("topic", "run", "task", "spec", "measure")

    def __init__(self, topic: str, run: str, task: int, spec: tuple, measure: bool = False):
        self.topic = topic
        self.run = run
        self.task = task
        self.spec = spec
        self.measure = measure

    def __reduce__(self):
        return Packed, (self.topic, self.run, self.task, self.spec, self.measure)

    def __repr__(self) -> str:
        return f"<Packed run={self.run} task={self.task} kind={self.spec[0]}>"


def run_task(packed: Packed, *inputs: Any) -> Any:
    """Run one task on a worker; ``inputs`` are its dependencies' values, in order."""
    from distributed import get_worker

    worker = get_worker()
    where = worker.address
    topic, run, task = packed.topic, packed.run, packed.task
    start = time.time()
    worker.log_event(topic, ("s", run, task, where, start))
    meter = _meter() if packed.measure else None
    began = meter.begin() if meter else None
    try:
        value = run_spec(packed.spec, inputs)
    except Exception as exc:
        stop = time.time()
        worker.log_event(topic, ("f", run, task, where, start, stop, format_exception(exc)))
        raise
    stop = time.time()
    if meter:
        measured = meter.end(began, value, stop)
        worker.log_event(topic, ("d", run, task, where, start, stop, *measured))
    else:
        worker.log_event(topic, ("d", run, task, where, start, stop))
    return value


def _meter():
    """This worker process's TaskMeter (``measure.py``, imported only when measuring)."""
    from ..measure import process_meter

    return process_meter()


def format_exception(exc: BaseException) -> str:
    """The traceback text from the task's own first frame on (ours left out)."""
    tb = exc.__traceback__
    while tb is not None and _ours(tb.tb_frame.f_globals.get("__name__") or ""):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _ours(module: str) -> bool:
    return module == "notebook_sched" or module.startswith("notebook_sched.")
