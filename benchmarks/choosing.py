"""Which scheduler should I use?  Five workloads x five backends, and the advisor's call.

``python -m benchmarks.choosing`` (``make bench-auto``) runs, on ``num_workers`` 2:

* four graphs of 64 tasks of ~25 ms plus a sum: NumPy (fill and sort 8 MB arrays:
  releases the GIL), pure Python (a loop: holds it), sleeping (waits), the demo's
  mix of NumPy and pure-Python tasks, and that mix where the NumPy tasks' 8 MB arrays
  are read by the final task (so moving them costs as much as making them);
* on ``sync``, ``threads``, ``processes``, ``distributed`` and ``auto``, round after
  round (every backend once per round), reporting the **median** of the rounds, so a
  burst of outside load hits every backend alike;
* the advisor: each workload runs once on ``sync`` inside an ``Advisor``; its verdict
  per prefix is checked against the kind of work, and the time it predicts for the
  backend it recommends is compared with that backend's measured median.

Targets (issue 11): verdicts right; prediction within 25% of the measurement; ``auto``
within 10% of the best of sync/threads/processes on each single-kind workload and at
least 10% faster than the best of them on the mixed one.  ``auto`` is measured warm:
its first run of a kind (not timed, like every backend's) teaches it the prefixes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from functools import partial

from .report import Tally, print_table
from .workloads import (
    mixed_data_tasks,
    mixed_tasks,
    numpy_sort_tasks,
    python_loop_tasks,
    sleep_tasks,
)

BACKENDS = ("sync", "threads", "processes", "distributed", "auto")
LOCAL = ("sync", "threads", "processes")
# workload builder, {prefix: the verdict it deserves}
WORKLOADS = (
    (numpy_sort_tasks, {"np": "releases-gil"}),
    (python_loop_tasks, {"py": "holds-gil"}),
    (sleep_tasks, {"io": "waits"}),
    (mixed_tasks, {"np": "releases-gil", "py": "holds-gil"}),
    (mixed_data_tasks, {"np": "releases-gil", "py": "holds-gil"}),
)
PREDICTION_TOLERANCE = 0.25
AUTO_SLACK = 0.10


def measure(work, workers: int, rounds: int) -> dict[str, float]:
    """Median seconds per backend over ``rounds`` interleaved rounds (after a warm-up)."""
    import notebook_sched as ns

    calls = {
        name: partial(ns.get, work.graph, work.key, scheduler=name, num_workers=workers)
        for name in BACKENDS
    }
    expected = calls["sync"]()
    for name, call in calls.items():
        result = call()
        if result != expected:
            raise AssertionError(f"{name} computed {result!r}; expected {expected!r}")
    samples: dict[str, list[float]] = {name: [] for name in BACKENDS}
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(times) for name, times in samples.items()}


def advise(work, workers: int):
    import notebook_sched as ns
    from notebook_sched.diagnostics.advice import Advisor

    with Advisor() as advisor:
        ns.get(work.graph, work.key, scheduler="sync", num_workers=workers)
    return advisor.advice()


def run(workers: int, rounds: int, tally: Tally) -> list[list[str]]:
    rows = []
    for build, verdicts in WORKLOADS:
        work = build()
        advice = advise(work, workers)
        medians = measure(work, workers, rounds)
        got = {row.prefix: row.verdict for row in advice.rows if row.prefix in verdicts}
        tally.check(f"verdicts, {work.name}", got == verdicts, f"{got} (expected {verdicts})")
        rec = advice.recommendation
        measured = medians[rec.backend]
        error = abs(rec.predicted_seconds - measured) / measured
        tally.check(
            f"prediction, {work.name}",
            error <= PREDICTION_TOLERANCE,
            f"{rec.backend}: predicted {rec.predicted_seconds:.3f} s, measured {measured:.3f} s "
            f"({error:.0%} off; target <= {PREDICTION_TOLERANCE:.0%})",
        )
        best_local = min(LOCAL, key=medians.__getitem__)
        ratio = medians["auto"] / medians[best_local]
        mixed = len(verdicts) > 1
        target = 1 - AUTO_SLACK if mixed else 1 + AUTO_SLACK
        tally.check(
            f"auto, {work.name}",
            ratio <= target,
            f"auto {medians['auto']:.3f} s vs best {best_local} {medians[best_local]:.3f} s "
            f"= {ratio:.2f} (target <= {target:.2f}); {medians['sync'] / medians['auto']:.2f}x "
            f"over sync",
        )
        rows.append(
            [
                work.name,
                *(f"{medians[b]:.3f}" for b in BACKENDS),
                rec.backend,
                f"{rec.predicted_seconds:.3f}",
            ]
        )
        sys.stdout.flush()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.choosing", description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    tally = Tally()
    print(
        f"Five workloads x five backends, num_workers={args.workers}, median of "
        f"{args.rounds} interleaved rounds (seconds)"
    )
    rows = run(args.workers, args.rounds, tally)
    print_table(["workload", *BACKENDS, "advised", "predicted"], rows)
    tally.print_summary()
    return 0 if not tally.failed else 1


if __name__ == "__main__":
    sys.exit(main())
