"""The fields every part of the scheduler's state shares, and its one entry point.

:class:`~notebook_sched.distributed.state.SchedulerState` is one object written in
four parts, each a class of its own module, all standing on :class:`StateCore`:

================  ==================================================================
``state``         tasks and runs come and go, results arrive, failures spread
``placement``     where ready tasks run; work stealing
``gathers``       results requested by the client
``recovery``      workers that died: recompute, retry, blame
================  ==================================================================

The parts share the fields below, on purpose: a task's state, its worker and the
worker's tables change together in every step, and one object (one thread: the I/O
thread) keeps them consistent without locks or copies.  What they do *not* share is
written down here too: each part's docstring names the steps it offers the others,
and the steps a part calls but does not define are declared below (``_ready``, ...),
so no method relies on another part silently.

Fields (written by the parts named; everything else only reads them):

``tasks``        tid -> TaskState, every task known (state, recovery, placement)
``named``        key -> TaskState of futures and ``compute`` tasks (state)
``workers``      wid -> WorkerState (state, recovery)
``runs``         run id -> RunRecord of ``get`` runs (state)
``gathers``      request id -> Gather waiting for results (gathers, state, recovery)
``root_heap``    ready tasks without inputs, by priority (placement)
``ready_deps``   other ready tasks, placed at the next ``dispatch`` (placement)
``next_tid``     the next task id; ``seq`` numbers submissions for priorities (state)
``mean_seconds`` measured mean task time; ``queue_target`` (placement)
``outbox``       wid -> operations to send (every part, through ``_emit``)
``notices``      (target, kind, payload) for client objects (every part, ``_notify``)
``exit_codes``   (worker name, exit code) of workers that died (recovery)
``log``          summaries of the last LOG_SIZE stimuli (``stimuli.stimulus_entry``)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Any

from .stimuli import LOG_SIZE
from .tasks import FIRST_QUEUE, Gather, RunRecord, TaskState, WorkerState

__all__ = ["StateCore"]


class StateCore:
    """Shared fields, instructions out, and ``handle`` (see the module docstring)."""

    _entries: dict = {}  # stimulus type -> entry method; filled in by state.py

    def __init__(self) -> None:
        self.tasks: dict[int, TaskState] = {}
        self.named: dict[Hashable, TaskState] = {}
        self.workers: dict[int, WorkerState] = {}
        self.runs: dict[int, RunRecord] = {}
        self.gathers: dict[int, Gather] = {}
        self.root_heap: list = []
        self.ready_deps: list = []
        self.next_tid = 0
        self.seq = 0
        self.mean_seconds: float | None = None
        self.queue_target = FIRST_QUEUE
        self.outbox: dict[int, list] = {}
        self.notices: list = []
        self.exit_codes: list = []
        self.log: deque = deque(maxlen=LOG_SIZE)

    # -- stimuli in --------------------------------------------------------------------
    def handle(self, stimulus: Any) -> Any:
        """Apply one stimulus (a record of ``stimuli.py``); returns what its entry
        method returns (``RunAdded``: the base of the run's task ids)."""
        return self._entries[type(stimulus)](self, *stimulus)

    def format_log(self, last: int = 30) -> str:
        """The last ``last`` stimuli, oldest first, one per line (for bug reports)."""
        lines = list(self.log)[-last:]
        return "\n".join(lines) if lines else "(no stimulus yet)"

    # -- instructions out --------------------------------------------------------------
    def _emit(self, worker: WorkerState, op: str, item: Any) -> None:
        ops = self.outbox.get(worker.wid)
        if ops is None:
            self.outbox[worker.wid] = [(op, [item])]
        elif ops[-1][0] == op:
            ops[-1][1].append(item)
        else:
            ops.append((op, [item]))

    def _notify(self, target: Any, kind: str, payload: Any = None) -> None:
        self.notices.append((target, kind, payload))

    def take_outbox(self) -> dict[int, list]:
        out, self.outbox = self.outbox, {}
        return out

    def take_notices(self) -> list:
        out, self.notices = self.notices, []
        return out

    # -- steps one part offers the others (defined in the module named) ----------------
    def _ready(self, ts: TaskState) -> None:  # placement: queue a task to be placed
        raise NotImplementedError

    def _measured(self, mean: float) -> None:  # placement: size the root queues
        raise NotImplementedError

    def _fail(self, ts: TaskState, error: tuple) -> None:  # state: fail ts and dependents
        raise NotImplementedError

    def _unneeded(self, ts: TaskState) -> None:  # state: free or forget what nobody holds
        raise NotImplementedError

    def _hold_inputs(self, ts: TaskState) -> list:  # state: count a waiting task's inputs
        raise NotImplementedError

    def _settle(self, ts: TaskState) -> None:  # state: ready, fail or keep waiting
        raise NotImplementedError

    def _recompute(self, ts: TaskState) -> None:  # recovery: make a released result again
        raise NotImplementedError

    def _mark_lost(self, ts: TaskState) -> None:  # recovery: a result in memory is gone
        raise NotImplementedError

    def _fail_gathers(self, ts: TaskState, error: Any) -> None:  # gathers
        raise NotImplementedError

    def _send_gathers(self, ts: TaskState, worker: WorkerState, values: dict | None) -> None:
        raise NotImplementedError  # gathers: answer the requests waiting on ts
