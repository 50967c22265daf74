"""What fingerprinting costs the result cache: large arguments, and many small tasks.

Two measurements (issue 18's targets), each ours vs a reference in the same run, in
interleaved rounds (every contender once per round, so a burst of load from another
program hits all alike), reported as medians:

1. **Argument hashing speed.**  ``ValuePrinter.digest`` (xxh3_128 over the array's
   memory, in place) against Dask's ``dask.base.tokenize`` on the same NumPy arrays:
   C-ordered float64 arrays of 100 MB and 1 GB, and a strided view (every other
   column of a 100 MB array: copied 256 KB at a time and hashed).  A fresh printer per
   call, so nothing is memoized.  Target: 2 GB/s or more.
2. **Per-task cost.**  ``graph_fingerprints`` on a 10,000-task graph of one function
   with int arguments, and on a 10,000-task chain, in µs per task, beside an uncached
   no-op ``ns.get(..., scheduler="sync")`` run of the same graph (the yardstick for
   the issue's hit-overhead target of at most 10 µs per task; on a loaded machine the
   ratio is the steadier figure).

Run alone: ``python -m benchmarks.cache_hashing`` (``--quick`` skips the 1 GB array).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

import notebook_sched as ns
from notebook_sched.cache.code_print import CodePrinter
from notebook_sched.cache.fingerprint import graph_fingerprints

from .report import environment_lines, print_table

__all__ = ["run_cache_hashing"]

MB = 1 << 20
TASKS = 10_000


def _interleaved_medians(calls: dict[str, Callable[[], object]], rounds: int) -> dict:
    """Median seconds of each call over ``rounds`` rounds (each call once per round)."""
    for call in calls.values():
        call()  # warm: imports, page faults, memos of code objects
    samples: dict[str, list[float]] = {label: [] for label in calls}
    for _ in range(rounds):
        for label, call in calls.items():
            start = time.perf_counter()
            call()
            samples[label].append(time.perf_counter() - start)
    return {label: statistics.median(times) for label, times in samples.items()}


def _ours(value) -> Callable[[], bytes]:
    return lambda: CodePrinter().values.digest(value)


def _dask(value) -> Callable[[], str]:
    from dask.base import tokenize

    return lambda: tokenize(value)


def hashing_rows(sizes_mb: list[int], rounds: int) -> list[list]:
    rows = []
    for size in sizes_mb:
        array = np.random.default_rng(0).random(size * MB // 8)
        cases = [(f"{size} MB C-ordered", array)]
        if size <= 100:
            cases.append((f"{size} MB strided view", array.reshape(-1, 2)[:, 0]))
        for label, value in cases:
            medians = _interleaved_medians({"ours": _ours(value), "dask": _dask(value)}, rounds)
            nbytes = value.nbytes
            ours, dask = nbytes / medians["ours"] / 1e9, nbytes / medians["dask"] / 1e9
            rows.append([label, f"{ours:.2f}", f"{dask:.2f}", f"{ours / dask:.1f}x"])
        del array, cases
    return rows


def _inc(x: int) -> int:
    return x + 1


def per_task_rows(rounds: int) -> list[list]:
    flat = {f"inc-{i:016x}": (_inc, i) for i in range(TASKS)}
    chain = {"inc-0": (_inc, 0)}
    for i in range(1, TASKS):
        chain[f"inc-{i}"] = (_inc, f"inc-{i - 1}")
    rows = []
    for label, graph, keys in (
        ("10,000 tasks of one function, int args", flat, list(flat)),
        ("10,000-task chain", chain, [f"inc-{TASKS - 1}"]),
    ):
        medians = _interleaved_medians(
            {
                "fingerprint": lambda g=graph, k=keys: graph_fingerprints(g, k),
                "sync no-op run": lambda g=graph, k=keys: ns.get(g, k, scheduler="sync"),
            },
            rounds,
        )
        ours = medians["fingerprint"] / TASKS * 1e6
        run = medians["sync no-op run"] / TASKS * 1e6
        rows.append([label, f"{ours:.2f}", f"{run:.2f}", f"{ours / run:.2f}"])
    return rows


def run_cache_hashing(quick: bool = False, rounds: int = 7) -> None:
    for line in environment_lines(workers=1):
        print(line)
    sizes = [100] if quick else [100, 1024]
    print(f"\nArgument hashing, GB/s (median of {rounds} interleaved rounds)")
    print_table(["array", "ours", "dask tokenize", "ratio"], hashing_rows(sizes, rounds))
    print(f"\nFingerprinting cost per task, µs (median of {rounds} interleaved rounds)")
    print_table(["graph", "graph_fingerprints", "sync no-op run", "ratio"], per_task_rows(rounds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the 1 GB array")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    run_cache_hashing(quick=args.quick, rounds=args.rounds)


if __name__ == "__main__":
    main()
