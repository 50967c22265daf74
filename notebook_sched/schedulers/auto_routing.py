"""Where the ``auto`` scheduler sends each task: the routing state, a pure object.

``auto`` runs GIL-releasing and waiting tasks on threads in the caller's process and
GIL-holding tasks on the reusable process pool, in the same graph.  This module holds
only the decision and what it learns; the backend that drives threads and the pool
around it asks :meth:`Router.route` for each ready task and reports each finished
task to :meth:`Router.observe`.  No threads, no clocks: tested with plain asserts.

What it learns, per task prefix (the function behind the key), for the life of the
process (a kernel session):

* a prefix never seen runs on threads, measured, until ``MIN_SAMPLES`` probe samples
  were taken while its tasks ran (or ``MAX_PROBES`` tasks, for tasks too short to be
  sampled: those stay on threads) (the first tasks of a run are its sample: the rest
  of the same run follows the verdict, not only the next run).  A share is only
  measurable for a task that had the caller's GIL to itself (no other task of ours
  on a thread meanwhile), so the backend runs a new prefix's probe tasks alone on
  the thread side, and reports ``gil_busy=None`` for tasks that shared it;
* a prefix whose tasks hold the GIL (busy-GIL share >= 0.5) and take long enough that
  the pool's per-task cost is small beside them goes to processes, **unless** moving
  the task's inputs and result costs more than the GIL time it would free:
  ``(input_bytes + expected output bytes) * 2 * per_byte >= cpu * gil_busy``, with
  ``per_byte`` this machine's measured cost (``measure.transfer_cost``: the advisor's);
* everything else (releases the GIL, waits, too short to be worth a hop) stays on
  threads;
* **starting the pool is a cost too** (:meth:`Router.worth_starting`): while no worker
  process runs, a prefix goes to processes only when its tasks still to run in this
  run free more GIL time (``tasks * cpu * gil_busy``) than starting ``num_workers``
  workers costs (``POOL_START_SECONDS`` each: the spawn, our imports and the task's
  own, taken from the same cores the run uses).  A started worker also holds its
  imports (~176 MB once it has loaded pandas, pyarrow and dask.dataframe), memory a
  run on threads never pays: a dataframe groupby whose few short pandas tasks measured
  as GIL-holding used to start the pool for milliseconds of work, at 284-481 MB
  against Dask's threads' 68-89, and up to twice the time.

Times are exponentially weighted means (``ALPHA``) and the busy-GIL share a mean
over the last ``SAMPLE_WINDOW`` samples, so a prefix that changes character
(different input sizes from one cell to the next) is re-learned within a few tasks.
A prefix learned as waiting whose tasks start to compute is measured alone again
(:func:`changed_character`): its tasks on busy threads are never probed.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..graph import key_split
from ..measure import GIL_BOUND, transfer_cost

__all__ = [
    "Router",
    "PrefixModel",
    "THREADS",
    "PROCESSES",
    "POOL_START_SECONDS",
    "routing_prefix",
]

THREADS, PROCESSES = "threads", "processes"
MIN_SAMPLES = 4  # probe samples a prefix needs before it may move
MAX_PROBES = 6  # ...or tasks measured alone, for prefixes too short to be sampled
SAMPLE_WINDOW = 12  # probe samples the estimate keeps (older ones fade out)
MIN_TASK_SECONDS = 0.0005  # shorter GIL-holding tasks are not worth a process hop
ALPHA = 0.3  # weight of the newest task in the running means of times
ON_CPU = 0.25  # CPU share of wall time under which a prefix's tasks wait
RELEARN_CPU = 0.001  # CPU seconds from which a task of a waiting prefix is news
# Starting one worker process: measured here, a bare worker's spawn and first task
# 0.13 s, and importing pandas and dask.dataframe in it 0.27-0.40 s more (a worker
# imports what its first task needs).  Charged per worker (the starts take the cores
# the run uses), once per run; pure-Python work of a second or more still moves.
POOL_START_SECONDS = 0.5


def routing_prefix(key) -> str:
    """The kind of task a key names, for routing: ``key_split``, less trailing digits
    (``w0``, ``w1`` -> ``w``; ``"17"`` and ``17`` -> ``"#"``).  Hand-numbered keys
    would otherwise be a new prefix each, every one measured alone (``auto.py``)."""
    name = key_split(key)
    kind = name.rstrip("0123456789")
    if kind == name:
        return name
    return kind.rstrip("_.") or "#"


@dataclass
class PrefixModel:
    """What is known of one prefix: running means of its times, and its busy-GIL share
    as a mean over the probe samples taken while its tasks ran alone."""

    timed: int = 0  # tasks whose wall and CPU were seen
    cpu: float = 0.0
    wall: float = 0.0
    bytes_out: float = 0.0
    probes: int = 0  # tasks measured alone
    busy_sum: float = 0.0  # probe samples' busy shares, summed (a window, see update)
    samples: float = 0.0  # probe samples behind busy_sum

    @property
    def gil_busy(self) -> float:
        return self.busy_sum / self.samples if self.samples else 0.0

    def update(
        self, wall: float, cpu: float, gil_busy: float | None, bytes_out: int, samples: int = 1
    ) -> None:
        """Fold in one task.  ``gil_busy`` is the mean of the ``samples`` probe samples
        taken while it ran alone; None means it shared the GIL with other tasks of
        ours, which leaves the GIL estimate alone."""
        a = ALPHA if self.timed else 1.0
        self.wall += a * (wall - self.wall)
        self.cpu += a * (cpu - self.cpu)
        self.bytes_out += a * (bytes_out - self.bytes_out)
        self.timed += 1
        if gil_busy is None:
            return
        self.probes += 1
        self.busy_sum += gil_busy * samples
        self.samples += samples
        if self.samples > SAMPLE_WINDOW:  # keep a window: old samples fade out
            scale = SAMPLE_WINDOW / self.samples
            self.busy_sum *= scale
            self.samples = SAMPLE_WINDOW


def changed_character(model: PrefixModel, cpu: float) -> bool:
    """True when a prefix learned as waiting (or as releasing the GIL, with little CPU)
    runs a task that computes: ten times its usual CPU time, and long enough to
    matter.  (Not a share of its wall time: beside other threads holding the GIL, or
    on a loaded machine, a computing task's thread gets a fraction of it.)"""
    learned = model.samples or model.probes
    if not learned or model.gil_busy >= GIL_BOUND or model.cpu >= ON_CPU * model.wall:
        return False
    return cpu >= RELEARN_CPU and cpu >= 10 * model.cpu


class Router:
    """Per-prefix routing decisions; not thread-safe (the backend calls it under its lock)."""

    def __init__(self, per_byte: float | None = None, min_task_seconds: float = MIN_TASK_SECONDS):
        self._per_byte = per_byte  # None: measured when first needed (transfer_cost)
        self.min_task_seconds = min_task_seconds
        self.models: dict[str, PrefixModel] = {}
        self.reasons: dict[str, str] = {}  # prefix -> why its tasks go where they go
        # prefix -> the busy-GIL share behind its last decision (the advice shows it)
        self.shares: dict[str, float] = {}
        self.pinned: set[str] = set()  # prefixes whose tasks could not be shipped

    @property
    def per_byte(self) -> float:
        """Seconds per byte moved to a worker process (measured: ``measure.py``)."""
        if self._per_byte is None:
            self._per_byte = transfer_cost()
        return self._per_byte

    def unshippable(self, prefix: str) -> None:
        """A task of ``prefix`` could not travel to or from a process (an RLock or a
        generator among its inputs, or as its result): its tasks stay on threads from
        now on."""
        self.pinned.add(prefix)

    def route(self, prefix: str, input_bytes: int = 0) -> str:
        """``THREADS`` or ``PROCESSES`` for the next task of ``prefix``."""
        if not self.holds_gil(prefix):
            return THREADS
        model = self.models[prefix]
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

    def holds_gil(self, prefix: str) -> bool:
        """Whether ``prefix``'s tasks hold the GIL long enough to run in a process, data
        aside (``route`` then weighs the bytes); when not, the reason says why."""
        if prefix in self.pinned:
            self.reasons[prefix] = "its tasks cannot be pickled to go to a process: threads"
            return False
        model = self.models.get(prefix)
        if model is None or self.is_new(prefix):
            self.reasons[prefix] = "new: measured on threads first"
            return False
        if model.samples:
            self.shares[prefix] = model.gil_busy
        if model.gil_busy < GIL_BOUND:
            self.reasons[prefix] = f"releases the GIL ({model.gil_busy:.0%} GIL busy): threads"
            return False
        if model.cpu < self.min_task_seconds:
            self.reasons[prefix] = (
                f"holds the GIL but its tasks are short ({model.cpu * 1e6:.0f} µs): threads"
            )
            return False
        return True

    def worth_starting(self, prefix: str, tasks_left: int, workers: int) -> bool:
        """Whether ``tasks_left`` more tasks of ``prefix`` (routed to ``PROCESSES``) free
        more GIL time than starting ``workers`` worker processes costs; when not, the
        reason says so and the caller keeps the prefix on threads for this run."""
        model = self.models[prefix]
        freed = tasks_left * model.cpu * model.gil_busy
        cost = POOL_START_SECONDS * workers
        if freed >= cost:
            return True
        self.reasons[prefix] = (
            f"holds the GIL {model.gil_busy:.0%} of its time, but its {tasks_left} tasks "
            f"left free ~{freed:.3f} s, less than starting {workers} worker processes "
            f"(~{cost:.2f} s): threads"
        )
        return False

    def observe(
        self,
        prefix: str,
        wall: float,
        cpu: float,
        gil_busy: float | None,
        bytes_out: int = 0,
        samples: int = 1,
    ) -> None:
        """Learn from one finished task of ``prefix`` (``gil_busy`` None: not measured).

        A prefix kept on threads because its tasks waited, whose task now spends its
        time on a CPU (``changed_character``), is measured again: its GIL evidence is
        dropped, so its next task runs alone on a thread and is probed.  Tasks on
        threads beside others are never probed (they share the GIL), so without this a
        prefix first seen sleeping stays on threads however much it computes later."""
        model = self.models.setdefault(prefix, PrefixModel())
        if gil_busy is None and changed_character(model, cpu):
            model.probes = 0
            model.busy_sum = model.samples = 0.0
            self.reasons[prefix] = "its tasks now compute: measured on threads again"
        model.update(wall, cpu, gil_busy, bytes_out, samples)

    def is_new(self, prefix: str) -> bool:
        """True while ``prefix`` still needs tasks measured alone (``MIN_SAMPLES``)."""
        model = self.models.get(prefix)
        return model is None or (model.samples < MIN_SAMPLES and model.probes < MAX_PROBES)

    def mean_wall(self, prefix: str) -> float | None:
        model = self.models.get(prefix)
        return model.wall if model is not None and model.timed else None

    def forget(self) -> None:
        self.models.clear()
        self.reasons.clear()
        self.shares.clear()
        self.pinned.clear()
