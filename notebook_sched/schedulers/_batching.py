"""How many ready tasks go into one batch for a worker process: by time and by bytes.

Used by ``processes`` and by ``auto``'s process side.  A batch is a trade:

* **time**: a batch should hold about ``TARGET_BATCH_SECONDS`` of work (the running mean
  of task times decides; unknown tasks go ``FIRST_BATCH`` at a time), so a cheap task
  does not pay a pipe round trip of its own; and never more than half a worker's share
  of the ready tasks, so the others are not starved;
* **bytes**: every task out in a batch holds memory: its inputs are copied into the
  batch (a pickled copy in the caller until sent, another in the worker), its result
  is kept in the worker until the batch reports, and the caller keeps its inputs
  alive until it returns.  Timing alone went wrong on array graphs: cheap slicing
  tasks pulled the mean time down, batches grew to 39-135 tasks and 96-470 tasks were
  out at once, at 1.9-3.3x the peak memory of Dask's ``processes`` (issue 22; a
  4-task cap, measured, brought the peaks to Dask's level).  So a batch also stops
  once its tasks' input bytes plus their expected result bytes pass a budget: 1 MiB
  (``BATCH_BYTES``), or ``BATCH_RESULTS`` typical results when results are larger,
  so tasks that move data go a few at a time, like Dask's 6-task chunks, whatever
  the chunk size, while tasks that move nothing are batched by time alone.  A worker
  holds at most two batches (the one it runs and the next, queued), so the bytes in
  flight per worker are bounded too.  A single task larger than the budget still
  goes, alone.

What is known, and what is learned: the bytes of every result that reached the caller
(``note``: ``measure.sizeof``) are kept per task, so a
task's input bytes are exact; its result's bytes are the running mean of the results
of its *layer* seen so far (``observe``): the tasks whose keys share a name, like a
Dask array's ``('random_sample-<token>', i, j)`` blocks.  One mean over all results
was not enough: on the anomaly workload the small results of the reductions pulled it
down to 2.6 KB while the random blocks were 180 KB, so batches of up to 84 blocks went
out at once (15 MB in one worker's message).  A layer not seen yet is expected to
make results as large as the largest layer's mean, so its first batch is small.  A
claimed chain costs its first task's inputs and its last task's result.  Nothing here
touches a process or a pipe: it is a pure object the backends ask, and the tests drive
it with plain numbers.
"""

from __future__ import annotations

from typing import Any

from ..measure import result_nbytes, sizeof

__all__ = [
    "BatchSizer",
    "tasks_by_time",
    "TARGET_BATCH_SECONDS",
    "BATCH_BYTES",
    "BATCH_RESULTS",
    "FIRST_BATCH",
]

TARGET_BATCH_SECONDS = 0.02
FIRST_BATCH = 4  # tasks per batch before any task time is known
MAX_BATCH = 1024
BATCH_BYTES = 256 << 10  # a batch's inputs + expected results: at least this much ...
BATCH_RESULTS = 4  # ... or this many typical results, whichever is more


def tasks_by_time(mean_seconds: float | None, cap: int = MAX_BATCH, unknown: int = FIRST_BATCH):
    """Tasks in about ``TARGET_BATCH_SECONDS`` of work at ``mean_seconds`` a task (at most
    ``cap``; ``unknown`` when no task time is known yet)."""
    if not mean_seconds:
        return min(cap, unknown)
    return max(1, min(cap, int(TARGET_BATCH_SECONDS / max(mean_seconds, 1e-7))))


class BatchSizer:
    """One run's batch-sizing knowledge: task times, result bytes, per-task sizes."""

    __slots__ = (
        "workers", "mean_seconds", "mean_bytes", "sizes", "message_bytes", "layer_bytes",
        "largest", "_deps", "_keys",
    )  # fmt: skip

    def __init__(self, graph, workers: int):
        self.workers = workers
        self.mean_seconds: float | None = None
        self.mean_bytes = 0.0  # running mean of a result's bytes
        self.sizes = [0] * len(graph.deps)  # bytes of each result the caller received
        self.message_bytes = 0  # size of the worker's message being read (0: unknown)
        self.layer_bytes: dict = {}  # layer (a tuple key's name) -> running mean of bytes
        self.largest = 0.0  # the largest layer mean (or overall mean) seen
        self._deps = graph.deps
        self._keys = getattr(graph, "keys", None)

    # -- learning -----------------------------------------------------------------------
    def note(self, task: int, value: Any) -> None:
        """``task``'s result reached the caller (from a worker or computed here)."""
        self.sizes[task] = sizeof(value)

    def received(self, message_bytes: int) -> None:
        """The next ``observe`` reads a message of ``message_bytes`` pickled bytes."""
        self.message_bytes = message_bytes

    def observe(self, results: list) -> None:
        """A worker reported ``results`` (``(task, value, start, stop, ...)``).

        A result whose size is not cheap to know (an object of the user's) counts as
        its share of the pickled message it came in: the bytes it really moved."""
        sizes = self.sizes
        count = len(results)
        if not count:
            return
        share = self.message_bytes // count
        self.message_bytes = 0
        spent = 0.0
        moved = 0
        keys, layers = self._keys, self.layer_bytes
        for result in results:
            task, value = result[0], result[1]
            size = result_nbytes(value)
            if size is None:
                size = share or sizeof(value)
            sizes[task] = size
            moved += size
            spent += result[3] - result[2]
            key = keys[task] if keys is not None else None
            if type(key) is tuple and key:
                known = layers.get(key[0])
                layers[key[0]] = size if known is None else 0.5 * (known + size)
                self.largest = max(self.largest, layers[key[0]])
        mean, mean_bytes = spent / count, moved / count
        if self.mean_seconds is None:  # the first results: nothing to average with
            self.mean_seconds, self.mean_bytes = mean, mean_bytes
        else:
            self.mean_seconds = 0.5 * (self.mean_seconds + mean)
            self.mean_bytes = 0.5 * (self.mean_bytes + mean_bytes)
        self.largest = max(self.largest, self.mean_bytes)

    # -- deciding -------------------------------------------------------------------------
    def max_tasks(self, ready: int) -> int:
        """Tasks a batch may take by time, with ``ready`` tasks ready."""
        share = max(1, -(-ready // (2 * self.workers)))
        return tasks_by_time(self.mean_seconds, share)

    def input_bytes(self, task: int) -> int:
        """Bytes of ``task``'s inputs (results the caller holds)."""
        sizes = self.sizes
        return sum([sizes[d] for d in self._deps[task]])

    def result_bytes(self, task: int) -> float:
        """Expected bytes of ``task``'s result: its layer's mean; for a layer not seen
        yet the largest layer's; for a key that names no layer the overall mean."""
        key = self._keys[task] if self._keys is not None else None
        if type(key) is tuple and key:
            return self.layer_bytes.get(key[0], self.largest)
        return self.mean_bytes

    def task_bytes(self, task: int) -> int:
        """What taking ``task`` into a batch costs: its inputs and its expected result."""
        return self.input_bytes(task) + int(self.result_bytes(task))

    def chain_bytes(self, chain) -> int:
        """What taking a claimed ``chain`` costs: its first task's inputs and its last
        task's expected result (the links between stay in the worker, one at a time)."""
        return self.input_bytes(chain[0]) + int(self.result_bytes(chain[-1]))

    def full(self, batch_bytes: int) -> bool:
        """True once a batch holding ``batch_bytes`` should take no more tasks."""
        return batch_bytes >= BATCH_BYTES and batch_bytes >= BATCH_RESULTS * self.mean_bytes
