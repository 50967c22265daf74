"""Where the ``auto`` scheduler sends each task: the routing state, a pure object.

``auto`` runs GIL-releasing and waiting tasks on threads in the caller's process and
GIL-holding tasks on the reusable process pool, in the same graph.  This module holds
only the decision and what it learns; the backend that drives threads and the pool
around it asks :meth:`Router.route` for each ready task and reports each finished
task to :meth:`Router.observe`.  No threads, no clocks: tested with plain asserts.

What it learns, per task prefix (the function behind the key), for the life of the
process (a kernel session):

* a prefix never seen runs on threads, measured, until ``PROBE_TASKS`` of its tasks
  have reported (the first tasks of a run are its sample: the rest of the same run
  follows the verdict, not only the next run);
* a prefix whose tasks hold the GIL (busy-GIL share >= 0.5) and take long enough that
  the pool's per-task cost is small beside them goes to processes, **unless** moving
  the task's inputs and result costs more than the GIL time it would free:
  ``(input_bytes + expected output bytes) * 2 * per_byte >= cpu * gil_busy``;
* everything else (releases the GIL, waits, too short to be worth a hop) stays on
  threads.

Means are exponentially weighted (``ALPHA``), so a prefix that changes character
(different input sizes from one cell to the next) is re-learned within a few tasks.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Router", "PrefixModel", "THREADS", "PROCESSES"]

THREADS, PROCESSES = "threads", "processes"
PROBE_TASKS = 2  # tasks of a new prefix measured on threads before it may move
GIL_BOUND = 0.5  # busy-GIL share from which a prefix holds the GIL
MIN_TASK_SECONDS = 0.0005  # shorter GIL-holding tasks are not worth a process hop
ALPHA = 0.3  # weight of the newest task in the running means


@dataclass
class PrefixModel:
    """Running means for one prefix."""

    seen: int = 0
    cpu: float = 0.0
    wall: float = 0.0
    gil_busy: float = 0.0
    bytes_out: float = 0.0

    def update(self, wall: float, cpu: float, gil_busy: float, bytes_out: int) -> None:
        if self.seen == 0:
            self.wall, self.cpu, self.gil_busy, self.bytes_out = wall, cpu, gil_busy, bytes_out
        else:
            a = ALPHA
            self.wall += a * (wall - self.wall)
            self.cpu += a * (cpu - self.cpu)
            self.gil_busy += a * (gil_busy - self.gil_busy)
            self.bytes_out += a * (bytes_out - self.bytes_out)
        self.seen += 1


class Router:
    """Per-prefix routing decisions; not thread-safe (the backend calls it under its lock)."""

    def __init__(self, per_byte: float = 1e-9, min_task_seconds: float = MIN_TASK_SECONDS):
        self.per_byte = per_byte
        self.min_task_seconds = min_task_seconds
        self.models: dict[str, PrefixModel] = {}
        self.reasons: dict[str, str] = {}  # prefix -> why its tasks go where they go

    def route(self, prefix: str, input_bytes: int = 0) -> str:
        """``THREADS`` or ``PROCESSES`` for the next task of ``prefix``."""
        model = self.models.get(prefix)
        if model is None or model.seen < PROBE_TASKS:
            self.reasons[prefix] = "new: measured on threads first"
            return THREADS
        if model.gil_busy < GIL_BOUND:
            what = "waits" if model.cpu < 0.25 * model.wall else "releases the GIL"
            self.reasons[prefix] = f"{what} ({model.gil_busy:.0%} GIL-busy): threads"
            return THREADS
        if model.cpu < self.min_task_seconds:
            self.reasons[prefix] = (
                f"holds the GIL but its tasks are short ({model.cpu * 1e6:.0f} µs): threads"
            )
            return THREADS
        moving = (input_bytes + model.bytes_out) * 2 * self.per_byte
        freed = model.cpu * model.gil_busy
        if moving >= freed:
            self.reasons[prefix] = (
                f"holds the GIL, but moving {input_bytes + model.bytes_out:,.0f} bytes "
                f"(~{moving:.3f} s) costs more than the {freed:.3f} s it frees: threads"
            )
            return THREADS
        self.reasons[prefix] = f"holds the GIL {model.gil_busy:.0%} of its time: processes"
        return PROCESSES

    def observe(
        self, prefix: str, wall: float, cpu: float, gil_busy: float, bytes_out: int = 0
    ) -> None:
        """Learn from one finished task of ``prefix``."""
        self.models.setdefault(prefix, PrefixModel()).update(wall, cpu, gil_busy, bytes_out)

    def forget(self) -> None:
        self.models.clear()
        self.reasons.clear()
