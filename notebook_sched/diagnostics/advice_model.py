"""The advisor's model: from measured tasks to a verdict per prefix and a predicted time
per backend.  Pure data in, numbers out: no threads, no clocks, no imports of backends.

Inputs are :class:`TaskSample` records, one per measured task of a run: its wall
time, the CPU time of the thread that ran it, the busy-GIL share measured while it ran
(``notebook_sched/gil.py``) and the bytes of its result.  Task events carry no
dependencies, so the samples are replayed as independent tasks.

Verdicts (per task prefix, from the sums of its tasks):

``holds-gil``     busy-GIL share >= 0.5: pure-Python work; threads take turns on it.
``waits``         otherwise, when CPU is under a quarter of the wall time: sleeping, I/O
                  (not a half: a task whose BLAS runs on several native threads shows
                  only its own thread's share of the CPU, and on a machine loaded by
                  other programs a task's thread gets less CPU than it could use).
``releases-gil``  otherwise: on a CPU without holding the GIL (NumPy, compression...).

Prediction.  Each task gets an *isolated duration* (what it would take alone): its CPU
time when it holds the GIL (time spent waiting for the GIL is not its own), else its
wall time (a sleep takes as long on any backend), and a *GIL-held part*,
``gil_busy * cpu``.  A list scheduler then replays
the graph in its order on ``workers`` slots with backend-specific durations:

* ``sync``: one slot, isolated durations.
* ``threads``: ``workers`` slots; the GIL-held parts of all tasks cannot overlap, so
  the run takes at least their sum: ``max(list schedule, sum of GIL-held parts)``;
  a GIL-releasing task on a CPU beside GIL-holding ones waits for the GIL between its
  C calls (the convoy, ``_convoy``): 1.5x its own time.
* ``processes``: ``workers`` slots, each task costs its isolated duration plus the
  per-task overhead and the transfer of its result at the measured cost per byte,
  twice (back to the caller, out to its reader); no GIL is shared between processes.
* ``auto``: the two mixed on ``workers`` slots: GIL-holding tasks as on processes,
  the others as on threads, whose GIL-held parts still take turns.

A loaded machine.  A task's ``starved`` seconds (runnable, waiting for a CPU: other
programs on the machine) are part of its isolated duration under that load, so a
GIL-holding task counts ``cpu + starved``, not its CPU alone.  :class:`Load` says
what share of a CPU each runnable thread of ours got (``cpu / (cpu + starved)``, over
the run) with how many of ours were runnable; from it, how many other programs
competed (``others``), and so the share each of ``workers`` slots would get: a
prediction on more slots than the run had stretches its tasks by the ratio.

The costs (:class:`Costs`) are measured on the machine (``measure_costs``), not
rules of thumb.  The model ignores memory pressure, cache effects and native thread
pools inside tasks (BLAS threads are limited to one per worker by the backends).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..measure import GIL_BOUND

__all__ = [
    "TaskSample",
    "Costs",
    "PrefixStats",
    "verdict",
    "prefix_stats",
    "predict",
    "BACKENDS",
    "Load",
]

HOLDS_GIL, RELEASES_GIL, WAITS = "holds-gil", "releases-gil", "waits"
BACKENDS = ("sync", "threads", "processes", "auto")
ON_CPU = 0.25  # CPU share of wall time under which a prefix waits
UNLOADED = 0.95  # CPU share of runnable time from which a run saw no other load
CONVOY = 1.5  # a GIL-releasing CPU task's slow-down on threads beside GIL holders


@dataclass(frozen=True)
class TaskSample:
    prefix: str
    wall: float
    cpu: float
    gil_busy: float = 0.0
    bytes_out: int = 0
    starved: float = 0.0  # seconds of ``wall`` spent runnable without a CPU

    @property
    def isolated(self) -> float:
        """Seconds this task would take alone: CPU, plus the waiting that is not GIL."""
        if self.gil_busy >= GIL_BOUND:
            # Time spent waiting for the GIL is not the task's own; waiting for a CPU
            # (other programs) is, under the same load.
            return self.cpu + self.starved
        # Releasing the GIL or waiting: wall time, since a sleep lasts as long anywhere
        # and native thread pools (BLAS) work on threads whose CPU we do not see.
        return self.wall

    @property
    def gil_held(self) -> float:
        return self.gil_busy * (self.cpu + self.starved)


@dataclass(frozen=True)
class Load:
    """How busy the machine was during the measured run (see the module docstring)."""

    cores: int
    share: float  # of a CPU each runnable thread of ours got: cpu / (cpu + starved)
    runnable: int  # threads of ours that were runnable at once (1 on sync)

    @property
    def others(self) -> float:
        """Runnable threads of other programs, on average (0 when ours never waited
        for a CPU: what else ran then is unknown, and left out)."""
        if self.share >= UNLOADED:
            return 0.0
        return max(self.cores / max(self.share, 1e-3) - self.runnable, 0.0)

    def stretch(self, workers: int) -> float:
        """How much longer a task takes on ``workers`` busy slots than measured."""
        now = min(1.0, self.cores / (self.others + workers))
        return max(self.share / now, 1.0) if now > 0 else 1.0


@dataclass(frozen=True)
class Costs:
    """What moving work costs on this machine, in seconds."""

    per_task: dict[str, float] = field(
        default_factory=lambda: {"sync": 2e-6, "threads": 3e-6, "processes": 5e-6, "auto": 5e-6}
    )
    per_byte: float = 1e-9  # pickle + pipe + unpickle, one way


@dataclass(frozen=True)
class PrefixStats:
    prefix: str
    tasks: int
    wall: float
    cpu: float
    gil_busy: float  # 0..1, CPU-weighted over the prefix's tasks
    bytes_out: int
    verdict: str
    starved: float = 0.0


def verdict(wall: float, cpu: float, gil_busy: float, starved: float = 0.0) -> str:
    """The kind of work behind these sums (see the module docstring).  Time spent
    runnable without a CPU (``starved``: a loaded machine) is not waiting."""
    if gil_busy >= GIL_BOUND:
        return HOLDS_GIL
    if cpu < max(wall - starved, 0.0) * ON_CPU:
        return WAITS
    return RELEASES_GIL


def prefix_stats(samples: Sequence[TaskSample]) -> list[PrefixStats]:
    """One row per prefix, the largest total wall time first."""
    sums: dict[str, list] = {}
    for s in samples:
        row = sums.setdefault(s.prefix, [0, 0.0, 0.0, 0.0, 0, 0.0, 0.0])
        row[0] += 1
        row[1] += s.wall
        row[2] += s.cpu
        row[3] += s.gil_busy * s.cpu
        row[4] += s.bytes_out
        row[5] += s.gil_busy
        row[6] += s.starved
    rows = []
    for prefix, (n, wall, cpu, gil_cpu, nbytes, gil_plain, starved) in sums.items():
        busy = gil_cpu / cpu if cpu > 0 else gil_plain / n
        kind = verdict(wall, cpu, busy, starved)
        rows.append(PrefixStats(prefix, n, wall, cpu, busy, nbytes, kind, starved))
    rows.sort(key=lambda r: (-r.wall, r.prefix))
    return rows


def predict(
    samples: Sequence[TaskSample],
    backend: str,
    workers: int,
    costs: Costs,
    replay: bool = False,
    load: Load | None = None,
) -> float:
    """Predicted seconds for the whole graph on ``backend`` with ``workers`` slots.

    ``replay``: the samples were measured on this very backend, so their wall times
    already hold what it costs there (GIL convoys, data moves): they are scheduled as
    measured instead of being rebuilt from isolated durations.  (A GIL-releasing task
    beside a GIL-holding one waits up to a switch interval each time it takes the GIL
    back between C calls; the isolated model cannot see that, the measurement can.)
    """
    if backend not in BACKENDS:
        raise ValueError(f"cannot predict backend {backend!r}; choose one of {BACKENDS}")
    if not samples:
        return 0.0
    if load is not None and not replay:
        runnable = 1 if backend == "sync" else workers
        stretch = load.stretch(runnable)
        if stretch > 1.0:
            return stretch * predict(samples, backend, workers, costs)
    overhead = costs.per_task[backend]
    if replay:
        if backend == "sync":
            return sum(s.wall for s in samples)
        return list_schedule(samples, [s.wall for s in samples], workers)
    if backend == "sync":
        return sum(s.isolated for s in samples) + overhead * len(samples)
    if backend == "threads":
        convoy = any(s.gil_busy >= GIL_BOUND for s in samples) and workers > 1
        durations = [s.isolated * _convoy(s, convoy) + overhead for s in samples]
        schedule = list_schedule(samples, durations, workers)
        return max(schedule, sum(s.gil_held for s in samples))
    if backend == "processes":
        durations = [_in_process(s, overhead, costs) for s in samples]
        return list_schedule(samples, durations, workers)
    # auto: GIL-holding tasks in processes, the rest on threads, sharing the slots; the
    # threads' GIL-held parts still take turns.
    on_threads = costs.per_task["threads"]
    durations = []
    gil = 0.0
    for s in samples:
        if s.gil_busy >= GIL_BOUND:
            durations.append(_in_process(s, overhead, costs))
        else:
            durations.append(s.isolated + on_threads)
            gil += s.gil_held
    return max(list_schedule(samples, durations, workers), gil)


def _convoy(s: TaskSample, holders: bool) -> float:
    """How much longer a task takes on threads beside GIL-holding tasks (the convoy).

    A task on a CPU that releases the GIL (NumPy) takes it back between its C calls;
    beside a thread running Python it waits for that thread's switch interval to end
    each time.  Its calls are of the order of a switch interval (a call much shorter
    would hold the GIL, one much longer would barely notice), so it waits about half
    an interval per interval of its own work: ``CONVOY``, 1.5x.  Waiting tasks (sleep,
    I/O) take the GIL back once at the end, and GIL holders are already serialized
    by the model's sum of GIL-held time."""
    if not holders or s.gil_busy >= GIL_BOUND or s.cpu < s.wall * ON_CPU:
        return 1.0
    return CONVOY


def _in_process(s: TaskSample, overhead: float, costs) -> float:
    """A task's duration on a worker process: its own time plus moving its data.

    Samples carry no dependencies (task events have no edges), so each result is
    counted twice: back to the caller, and out again to the task that reads it."""
    return s.isolated + overhead + 2 * s.bytes_out * costs.per_byte


def list_schedule(samples: Sequence[TaskSample], durations: Sequence[float], slots: int) -> float:
    """Makespan of a greedy list schedule: tasks in sample order, each on the slot that
    frees first (a heap of free slots).  Samples carry no dependencies, so a sample's
    task may start as soon as a slot is free."""
    if slots < 1:
        raise ValueError(f"slots must be at least 1; got {slots!r}")
    free = [0.0] * min(slots, len(samples))
    heapq.heapify(free)
    end = 0.0
    for i in range(len(samples)):
        finish = heapq.heappop(free) + durations[i]
        heapq.heappush(free, finish)
        end = max(end, finish)
    return end
