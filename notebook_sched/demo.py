"""``python -m notebook_sched demo``: one real workload on every local backend.

The workload is what a notebook user might write with :func:`notebook_sched.delayed`:
two independent analyses over ``chunks`` pieces of work each, merged pairwise and
summarised at the end (with the default 96 chunks, 383 tasks):

* **NumPy half** (releases the GIL): per chunk, draw 2 million simulated daily
  returns, sort them and read the 1% quantile (a "99% value at risk") and the mean;
  ~30 ms per task.
* **Pure-Python half** (holds the GIL): per chunk, find the longest Collatz chain
  among 6,000 consecutive starting numbers; ~30 ms per task.

The same graph runs on ``sync``, ``threads``, ``processes`` and ``auto``; the table
shows each backend's wall time and speed-up over ``sync``, and checks that every
backend gave the same answer.  What to expect on N cores: ``threads`` parallelises
only the NumPy half (pure-Python tasks take turns on the GIL), so it gains at most ~2x
on the whole graph however many cores there are; ``processes`` runs both halves in
parallel; ``auto`` measures the first tasks of each kind, then keeps the NumPy tasks
on threads and sends the pure-Python ones to the process pool, in the same graph (the
warm-up teaches it, as earlier cells of a session would).

Each backend first runs a small instance of the same workload (untimed), as a
notebook session would have done: the process pool is started and its workers have
imported NumPy before the clock starts; the start-up time is printed separately.

NumPy is imported inside the task functions only, so ``import notebook_sched`` (and
this module) stay free of it.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from .lazy import Delayed, compute, delayed

__all__ = ["build_workload", "run_demo", "main", "BACKENDS"]

BACKENDS = ("sync", "threads", "processes", "auto")
DRAWS = 1 << 21  # simulated returns per NumPy task (16 MB of float64)
COLLATZ_SPAN = 6_000  # starting numbers per pure-Python task


# -- the task functions: plain functions, as a user would write them ------------------


def value_at_risk(seed: int, draws: int = DRAWS) -> tuple[float, float]:
    """``(99% value at risk, mean)`` of ``draws`` simulated daily returns (NumPy)."""
    import numpy as np

    returns = np.random.default_rng(seed).standard_normal(draws) * 0.01
    returns.sort()
    return float(-returns[int(0.01 * draws)]), float(returns.mean())


def longest_collatz(start: int, stop: int) -> tuple[int, int]:
    """``(steps, n)`` of the longest Collatz chain starting in ``[start, stop)`` (pure Python)."""
    best_steps, best_n = -1, start
    for n in range(start, stop):
        steps, x = 0, n
        while x != 1:
            x = x >> 1 if x & 1 == 0 else 3 * x + 1
            steps += 1
        if steps > best_steps:
            best_steps, best_n = steps, n
    return best_steps, best_n


def worse_risk(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    """Merge two risk summaries: the larger value at risk, the summed means."""
    return max(a[0], b[0]), a[1] + b[1]


def longer_chain(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    return max(a, b)


def summarise(risk: tuple[float, float], chain: tuple[int, int], chunks: int) -> dict:
    return {
        "worst 99% value at risk": round(risk[0], 6),
        "mean daily return": round(risk[1] / chunks, 12),
        "longest Collatz chain": chain[0],
        "starting at": chain[1],
    }


# -- the graph -------------------------------------------------------------------------


def _pairwise(merge: Callable, parts: list[Delayed]) -> Delayed:
    """Merge ``parts`` two by two, level by level, into one."""
    merge = delayed(merge)
    while len(parts) > 1:
        merged = [merge(a, b) for a, b in zip(parts[::2], parts[1::2], strict=False)]
        if len(parts) % 2:
            merged.append(parts[-1])
        parts = merged
    return parts[0]


def build_workload(chunks: int = 96, draws: int = DRAWS, span: int = COLLATZ_SPAN) -> Delayed:
    """The demo graph: ``chunks`` NumPy tasks and ``chunks`` pure-Python tasks, merged."""
    risks = [delayed(value_at_risk)(seed, draws) for seed in range(chunks)]
    chains = [delayed(longest_collatz)(1 + i * span, 1 + (i + 1) * span) for i in range(chunks)]
    return delayed(summarise)(_pairwise(worse_risk, risks), _pairwise(longer_chain, chains), chunks)


# -- running and reporting -------------------------------------------------------------


def run_demo(
    workers: int | None = None, chunks: int = 96, out: TextIO | None = None
) -> dict[str, Any]:
    """Run the workload on every backend, print the table, return the measurements.

    Returns ``{"tasks": n, "answers": {backend: answer}, "seconds": {backend: s},
    "same_answer": bool}``.
    """
    out = out if out is not None else sys.stdout
    workers = workers or os.cpu_count() or 1
    work = build_workload(chunks)
    tasks = len(work.__dask_graph__())
    warm_up = build_workload(max(2, workers))
    print(
        f"notebook_sched demo: {tasks} tasks ({chunks} NumPy tasks that release the GIL, "
        f"{chunks} pure-Python tasks that hold it, pairwise merges, one summary) "
        f"on {workers} workers ({os.cpu_count()} CPUs)\n",
        file=out,
    )
    answers: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for backend in BACKENDS:
        start = time.perf_counter()
        compute(warm_up, scheduler=backend, num_workers=workers)
        startup = time.perf_counter() - start
        if backend == "processes":
            print(f"  (process pool started and warmed in {startup:.2f} s, not counted)", file=out)
        start = time.perf_counter()
        (answers[backend],) = compute(work, scheduler=backend, num_workers=workers)
        seconds[backend] = time.perf_counter() - start
    reference = answers["sync"]
    same = all(answer == reference for answer in answers.values())
    _print_table(seconds, answers, reference, workers, out)
    print(f"\nAnswer ({'all backends agree' if same else 'BACKENDS DISAGREE'}):", file=out)
    for name, value in reference.items():
        print(f"  {name}: {value}", file=out)
    if not same:
        for backend, answer in answers.items():
            if answer != reference:
                print(f"  {backend} gave instead: {answer}", file=out)
    print(
        "\nThreads run only the NumPy half in parallel (pure-Python tasks take turns on the "
        "GIL);\nprocesses run both halves in parallel; auto keeps NumPy on threads and sends "
        "pure Python\nto processes, learned from measuring the first tasks of each kind "
        "(notebook_sched.schedulers.auto).",
        file=out,
    )
    return {"tasks": tasks, "answers": answers, "seconds": seconds, "same_answer": same}


def _print_table(
    seconds: dict[str, float], answers: dict, reference: Any, workers: int, out: TextIO
) -> None:
    base = seconds["sync"]
    rows = [
        (
            backend,
            "1" if backend == "sync" else str(workers),
            f"{wall:.2f}",
            f"{base / wall:.2f}x",
            "yes" if answers[backend] == reference else "NO",
        )
        for backend, wall in seconds.items()
    ]
    headers = ("backend", "workers", "wall s", "speed-up vs sync", "same answer")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        print("  ".join(cells), file=out)


def main(workers: int | None = None, chunks: int = 96) -> int:
    """Entry point of ``python -m notebook_sched demo``; 0 when all backends agree."""
    result = run_demo(workers=workers, chunks=chunks)
    return 0 if result["same_answer"] else 1
