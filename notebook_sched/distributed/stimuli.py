"""What the scheduler's state machine hears: one small typed record per stimulus.

:class:`~notebook_sched.distributed.state.SchedulerState` has one entry point,
``handle(stimulus)``; each public method of it (``handle_done``, ``submit``, ...) is
the same entry under the name callers already use, and both go through
:func:`stimulus_entry`, which records the stimulus in the state's bounded log before
applying it.  So a failing test or a bug report can print the last stimuli
(``SchedulerState.format_log``) whichever way they came in.

Worker messages become stimuli in :func:`from_worker` (the I/O thread's only parser
of them): ``("done", items, values)`` -> ``TasksDone(wid, items, values)``.  A message
of an unknown kind or the wrong length raises, and the I/O thread treats the worker
as broken.

The log keeps a *summary* of each stimulus, never the stimulus itself: ``TasksDone``
may carry packed results and ``RunAdded`` a whole graph, which the log must not keep
alive.  A summary keeps numbers, short strings and the first task ids of a list.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = [
    "WorkerJoined",
    "WorkerLost",
    "WorkerPaused",
    "TasksDone",
    "TaskOutput",
    "TaskErred",
    "DataSent",
    "TasksStolen",
    "TaskUnsendable",
    "RunAdded",
    "RunReleased",
    "Submitted",
    "GraphAdded",
    "Scattered",
    "Acquired",
    "Released",
    "Cancelled",
    "Reset",
    "DataRequested",
    "KeysRequested",
    "RequestDropped",
    "from_worker",
    "stimulus_entry",
    "summary",
    "LOG_SIZE",
]

LOG_SIZE = 200  # stimuli kept by SchedulerState.log


# -- from the workers (through the I/O thread) -----------------------------------------
class WorkerJoined(NamedTuple):
    wid: int
    name: str
    nthreads: int
    address: Any


class WorkerLost(NamedTuple):
    wid: int
    exit_code: int | None
    executing: list
    hung: float | None = None  # seconds without a sign of life, when it was killed


class WorkerPaused(NamedTuple):
    wid: int
    paused: bool


class TasksDone(NamedTuple):
    wid: int
    items: list  # (tid, nbytes, start, stop)
    values: dict | None  # tid -> packed result, for tasks sent with send_back


class TaskOutput(NamedTuple):
    wid: int
    items: list  # (tid, stdout text, stderr text): what a task printed


class TaskErred(NamedTuple):
    wid: int
    tid: int
    error: Any  # the pickled exception
    traceback_text: str


class DataSent(NamedTuple):
    wid: int
    items: list  # (rid, tid, packed value)
    missing: list  # (rid, tid)
    errors: list  # (rid, tid, exception)


class TasksStolen(NamedTuple):
    wid: int
    tids: list


class TaskUnsendable(NamedTuple):
    tid: int
    exc: BaseException


# -- from the client side (posted to the I/O thread) -----------------------------------
class RunAdded(NamedTuple):
    run_id: int
    graph: Any  # CompiledGraph
    target: Any
    events: bool


class RunReleased(NamedTuple):
    run_id: int


class Submitted(NamedTuple):
    items: list  # (key, func, args, ((position, dep key), ...))


class GraphAdded(NamedTuple):
    graph: Any  # CompiledGraph
    home: Any = None  # hears the results of graph.home (Client.compute with the cache)


class Scattered(NamedTuple):
    items: list  # (key, value, wid or None)


class Acquired(NamedTuple):
    key: Any
    target: Any


class Released(NamedTuple):
    key: Any
    target: Any


class Cancelled(NamedTuple):
    keys: list
    reason: str = "cancelled"


class Reset(NamedTuple):
    reason: str


class DataRequested(NamedTuple):
    rid: int
    tids: list
    target: Any


class KeysRequested(NamedTuple):
    rid: int
    keys: list
    target: Any


class RequestDropped(NamedTuple):
    rid: int


_FROM_WORKER = {
    "done": TasksDone,
    "output": TaskOutput,
    "error": TaskErred,
    "data": DataSent,
    "paused": WorkerPaused,
    "stolen": TasksStolen,
}


def from_worker(wid: int, message: tuple) -> NamedTuple | None:
    """The stimulus a worker's message means; None for a heartbeat.  Raises KeyError
    (unknown kind) or TypeError (wrong length) for a message that makes no sense."""
    kind = message[0]
    if kind == "heartbeat":
        return None
    return _FROM_WORKER[kind](wid, *message[1:])


def stimulus_entry(kind: type) -> Callable:
    """Make a SchedulerState method the entry of stimulus ``kind``: a call records
    the stimulus in ``self.log`` (a summary), then runs the method with its fields."""

    def decorate(method: Callable) -> Callable:
        @functools.wraps(method)
        def entry(self, *args: Any, **kwargs: Any) -> Any:
            stimulus = kind(*args, **kwargs)
            self.log.append(summary(stimulus))
            return method(self, *stimulus)

        entry.stimulus = kind
        return entry

    return decorate


_SCALARS = (int, float, bool, str, type(None))


def summary(stimulus: NamedTuple) -> str:
    """A short text of ``stimulus`` that keeps none of its objects alive."""
    fields = []
    for name, value in zip(stimulus._fields, stimulus, strict=True):
        if isinstance(value, _SCALARS):
            text = repr(value) if not isinstance(value, str) else repr(value[:60])
        elif isinstance(value, (list, tuple, dict, set)):
            head = [_short(v) for v in itertools.islice(value, 6)]
            more = ", ..." if len(value) > 6 else ""
            text = f"[{len(value)}: {', '.join(head)}{more}]"
        else:
            text = f"<{type(value).__name__}>"
        fields.append(f"{name}={text}")
    return f"{type(stimulus).__name__}({', '.join(fields)})"


def _short(value: Any) -> str:
    """The task id (or key) an item is about: its first field, if it is plain."""
    if type(value) is tuple and value:
        value = value[0]
    if isinstance(value, (int, float, bool)) or (isinstance(value, str) and len(value) < 40):
        return repr(value)
    return f"<{type(value).__name__}>"
