"""Results for the client: the data-request half of the scheduler state (pure).

A part of :class:`~notebook_sched.distributed.state.SchedulerState` (shared fields:
``state_core.py``).  A request
(:class:`~notebook_sched.distributed.tasks.Gather`) names tasks; it is answered once,
with every value in order, as ``("data", [packed values])`` to its target, or with
``("error", (key, error))`` / ``("cancelled", reason)``.

* A task already in memory: its holder gets ``send (request, tid)``.
* A task not done yet: the request waits on the task (``gathers``) and the task is
  marked ``send_back``, so the worker puts the value in its ``done`` message - the
  round trip of ``submit(...).result()`` and the outputs of a ``get`` cost nothing
  extra.
* A holder that dies before answering: the request goes back onto the task, which
  is recomputed (``remove_worker``).

Values stay packed (``protocol.pack``): they are unpickled by the client thread that
asked, never here.
"""

from __future__ import annotations

from typing import Any

from .state_core import StateCore
from .stimuli import DataRequested, DataSent, KeysRequested, RequestDropped, stimulus_entry
from .tasks import (
    ERRED,
    MEMORY,
    PROCESSING,
    QUEUED,
    RELEASED,
    WAITING,
    Gather,
    TaskState,
    WorkerState,
)

__all__ = ["DataRequests"]


class DataRequests(StateCore):
    """Data-request methods of SchedulerState (see the module docstring).

    Offers ``_fail_gathers``, ``_send_gathers``, ``request_data``; writes ``gathers``
    and the tasks' ``gathers``/``send_back``; calls ``_recompute``, ``_mark_lost``."""

    @stimulus_entry(DataRequested)
    def request_data(self, rid: int, tids: list, target: Any) -> None:
        """Send the results of ``tids`` to ``target`` as one ``("data", [packed values])``."""
        gather = Gather(rid, target, list(tids))
        self.gathers[rid] = gather
        for tid in gather.pending.copy():
            ts = self.tasks.get(tid)
            if ts is None:
                self._notify(target, "cancelled", f"task {tid} is gone")
                del self.gathers[rid]
                return
            if ts.state == MEMORY:
                self._emit(ts.worker, "send", (rid, tid))
            elif ts.state == RELEASED:  # freed or lost: make it again (or fail, below)
                self._recompute(ts)
            if ts.state == ERRED:
                self._notify(target, "error", (ts.key, ts.error))
                del self.gathers[rid]
                return
            if ts.state != MEMORY:
                ts.send_back = True
                if ts.gathers is None:
                    ts.gathers = []
                ts.gathers.append(gather)
        if not gather.pending:
            del self.gathers[rid]
            self._notify(target, "data", gather.answer())

    @stimulus_entry(KeysRequested)
    def request_keys(self, rid: int, keys: list, target: Any) -> None:
        tids = []
        for key in keys:
            ts = self.named.get(key)
            if ts is None:
                self._notify(target, "cancelled", f"{key!r} is not known to the scheduler")
                return
            tids.append(ts.tid)
        self.request_data(rid, tids, target)

    @stimulus_entry(RequestDropped)
    def drop_request(self, rid: int) -> None:
        """The caller stopped waiting (a timeout, an interrupt): forget the request."""
        self.gathers.pop(rid, None)

    def _deliver(self, gather: Gather, tid: int, value: Any) -> None:
        if tid in gather.pending:
            gather.pending.discard(tid)
            gather.values[tid] = value
            if not gather.pending and self.gathers.pop(gather.rid, None) is not None:
                self._notify(gather.target, "data", gather.answer())

    def _fail_gathers(self, ts: TaskState, error: Any) -> None:
        for gather in ts.gathers or ():
            if self.gathers.pop(gather.rid, None) is not None:
                if isinstance(error, BaseException):
                    self._notify(gather.target, "cancelled", str(error))
                else:
                    self._notify(gather.target, "error", (ts.key, error))
        ts.gathers = None

    @stimulus_entry(DataSent)
    def handle_data(self, wid: int, items: list, missing: list, errors: list) -> None:
        """A worker answered ``send``: ``items`` ``(rid, tid, value)``; ``missing`` and
        ``errors`` (results that could not be pickled) ``(rid, tid[, message])``."""
        for rid, tid, value in items:
            gather = self.gathers.get(rid)
            if gather is not None:
                self._deliver(gather, tid, value)
        for rid, tid in missing:
            gather = self.gathers.get(rid)
            ts = self.tasks.get(tid)
            if gather is None or ts is None:
                continue
            if ts.state == MEMORY and ts.worker.wid == wid:
                self._mark_lost(ts)  # should not happen; if it does, make it again
                if ts.holders:
                    self._recompute(ts)
            if ts.state == MEMORY:
                self._emit(ts.worker, "send", (rid, tid))
            elif ts.state in (WAITING, QUEUED, PROCESSING):
                ts.send_back = True
                ts.gathers = (ts.gathers or []) + [gather]
        for rid, tid, exc in errors:
            gather = self.gathers.pop(rid, None)
            ts = self.tasks.get(tid)
            if gather is not None and ts is not None:
                self._notify(gather.target, "error", (ts.key, (exc, None, "")))

    def _send_gathers(self, ts: TaskState, worker: WorkerState, values: dict | None) -> None:
        gathers, ts.gathers = ts.gathers, None
        if values is not None and ts.tid in values:
            value = values[ts.tid]
            for gather in gathers:
                self._deliver(gather, ts.tid, value)
            return
        for gather in gathers:
            if gather.rid in self.gathers:
                self._emit(worker, "send", (gather.rid, ts.tid))
