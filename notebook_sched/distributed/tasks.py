"""Records of the distributed scheduler: tasks, workers, runs, data requests.

Plain slotted objects owned by :class:`~notebook_sched.distributed.state.SchedulerState`
(the design note is there).  Task states are integer constants; ``tid`` is a task's
integer id; ``deps``/``dependents`` hold the TaskState objects themselves, so walking
the graph needs no lookups.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from ..errors import WorkerDiedError

__all__ = [
    "TaskState",
    "WorkerState",
    "RunRecord",
    "Gather",
    "KilledWorker",
    "CancelledError",
    "WAITING",
    "QUEUED",
    "PROCESSING",
    "MEMORY",
    "RELEASED",
    "ERRED",
    "FORGOTTEN",
    "UNFINISHED",
    "STATE_NAMES",
    "MAX_SUSPICIOUS",
    "FIRST_QUEUE",
]

WAITING, QUEUED, PROCESSING, MEMORY, RELEASED, ERRED, FORGOTTEN = range(7)
STATE_NAMES = ("waiting", "queued", "processing", "memory", "released", "erred", "forgotten")
UNFINISHED = (WAITING, QUEUED, PROCESSING, ERRED)

MAX_SUSPICIOUS = 3  # worker deaths while a task runs before it is blamed
FIRST_QUEUE = 4  # root tasks per worker thread before any duration is known (placement)


class KilledWorker(WorkerDiedError):
    """A task was running on MAX_SUSPICIOUS workers when each of them died."""


class CancelledError(RuntimeError):
    """The future was cancelled, or the cluster restarted or closed."""


class TaskState:
    __slots__ = (
        "tid",
        "key",
        "spec",
        "deps",
        "dependents",
        "state",
        "waiting",
        "holders",
        "refs",
        "worker",
        "priority",
        "nbytes",
        "deaths",
        "run",
        "error",
        "send_back",
        "watchers",
        "gathers",
        "pinned",
        "hook",
        "home",
    )

    def __init__(self, tid: int, key: Hashable, spec: Any, deps: tuple, priority: int, run=None):
        self.tid = tid
        self.key = key
        self.spec = spec
        self.deps = deps
        self.dependents: list = []
        self.state = WAITING
        self.waiting = 0
        self.holders = 0
        self.refs = 0
        self.worker: WorkerState | None = None
        self.priority = priority
        self.nbytes = 0
        self.deaths: list | None = None  # [(worker name, how it died)] while it ran
        self.run = run
        self.error = None  # (exception or pickled exception, traceback text, worker)
        self.send_back = False
        self.watchers: list | None = None
        self.gathers: list | None = None
        self.pinned: WorkerState | None = None
        self.hook = None  # (key, result hook) from CompiledGraph.on_result: runs on the worker
        # Its result also goes to the caller (CompiledGraph.home): True for a get run's
        # task (to the run's target), (target, graph index) for a Client.compute task.
        self.home: Any = False

    def __repr__(self) -> str:
        where = f" on {self.worker.name}" if self.worker is not None else ""
        return f"<TaskState {self.key!r} {STATE_NAMES[self.state]}{where}>"


class WorkerState:
    __slots__ = (
        "wid",
        "name",
        "nthreads",
        "address",
        "processing",
        "has",
        "nbytes",
        "paused",
        "stealing",
    )

    def __init__(self, wid: int, name: str, nthreads: int, address: Any):
        self.wid = wid
        self.name = name
        self.nthreads = nthreads
        self.address = address
        self.processing: set = set()  # TaskStates assigned here, not finished
        self.has: set = set()  # TaskStates whose result lives here
        self.nbytes = 0
        self.paused = False
        self.stealing = False  # a steal request to this worker is unanswered

    def __repr__(self) -> str:
        return f"<WorkerState {self.name} processing={len(self.processing)} has={len(self.has)}>"


class RunRecord:
    """A ``get`` run: a block of task ids and the caller's handle."""

    __slots__ = ("run_id", "target", "base", "tasks", "events")

    def __init__(self, run_id: int, target: Any, base: int, events: bool):
        self.run_id = run_id
        self.target = target
        self.base = base
        self.tasks: list = []
        self.events = events


class Gather:
    """A client's request for results: answered once, with all values in ``order``."""

    __slots__ = ("rid", "target", "order", "pending", "values")

    def __init__(self, rid: int, target: Any, order: list):
        self.rid = rid
        self.target = target
        self.order = order
        self.pending = set(order)
        self.values: dict = {}

    def answer(self) -> list:
        values = self.values
        return [values[tid] for tid in self.order]
