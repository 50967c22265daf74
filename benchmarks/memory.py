"""Peak memory of a tree reduction over large arrays: our threads vs Dask's threads.

The graph (``workloads.array_tree``): 64 leaf tasks each make an 8 MB float64 array,
and ``np.add`` sums them pairwise up a binary tree.  A scheduler that runs the tree
depth-first and drops each input once its reader has run holds a handful of arrays at
a time; one that makes all leaves first holds all 64 (512 MB).

Each measurement runs in a fresh interpreter (``python -m benchmarks.memory --child
ours``), which imports both schedulers (so the baselines match), resets the kernel's
peak-RSS mark, records its RSS, computes the graph once and reports its peak RSS
(``VmHWM``).  We compare the peak above that baseline, median of several children.
(``ru_maxrss`` would not do: Linux carries it across fork and exec, so a child of a
large harness process reports the harness's peak.)

Peak RSS also measures glibc's allocator: after the first 8 MB array is freed, glibc
raises its mmap threshold and serves later arrays from per-thread arenas, which hand
memory back to the system late.  A second series sets ``MALLOC_MMAP_THRESHOLD_`` to
1 MiB in the child, so each array is its own mapping and RSS follows live data: that
isolates what the scheduler decides.

Run alone: ``python -m benchmarks.memory``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from .report import Tally, print_table, reset_peak_rss, status_kib
from .workloads import array_tree

__all__ = ["run_memory"]

ROOT = Path(__file__).resolve().parent.parent
LEAVES = 64
ELEMENTS = 1 << 20  # 8 MB of float64
SERIES = (
    ("default malloc", {}),
    ("MALLOC_MMAP_THRESHOLD_=1MiB", {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)}),
)


def _child(which: str, workers: int) -> None:
    import dask.threaded

    from notebook_sched.schedulers import threads

    work = array_tree(LEAVES, ELEMENTS)
    if which == "ours":
        get = lambda: threads.get(work.graph, work.key, num_workers=workers)
    else:
        get = lambda: dask.threaded.get(work.graph, work.key, num_workers=workers)
    reset_peak_rss()
    baseline = status_kib("VmRSS")
    result = get()
    peak = status_kib("VmHWM")
    if float(result[0]) != work.expected or len(result) != ELEMENTS:
        raise SystemExit(f"{which}: wrong result {result[:3]}...; expected {work.expected}")
    print(json.dumps({"baseline_kib": baseline, "peak_kib": peak}))


def _measure(which: str, workers: int, extra_env: dict) -> dict:
    env = dict(os.environ, **extra_env)
    command = [sys.executable, "-m", "benchmarks.memory", "--child", which]
    command += ["--workers", str(workers)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_memory(workers: int, repeats: int, tally: Tally) -> None:
    """Print the memory table and record its targets in ``tally``."""
    print(
        f"\nPeak memory: tree reduction over {LEAVES} arrays of {ELEMENTS * 8 // 2**20} MB "
        f"(np.add pairwise), threads, num_workers={workers}; a fresh process per "
        f"measurement, median of {repeats}"
    )
    rows = []
    for label, extra_env in SERIES:
        above: dict[str, list[float]] = {"ours": [], "dask": []}
        peaks: dict[str, list[float]] = {"ours": [], "dask": []}
        for _ in range(repeats):
            for which in ("ours", "dask"):  # alternate, so drift hits both alike
                sample = _measure(which, workers, extra_env)
                above[which].append((sample["peak_kib"] - sample["baseline_kib"]) / 1024)
                peaks[which].append(sample["peak_kib"] / 1024)
        ours, dask = statistics.median(above["ours"]), statistics.median(above["dask"])
        ratio = ours / dask
        verdict = tally.check(
            f"memory, {label}",
            ours <= dask,
            f"peak above baseline ours {ours:.0f} MB vs Dask {dask:.0f} MB ({ratio:.2f}x)",
        )
        rows.append(
            [
                label,
                f"{ours:.0f}",
                f"{dask:.0f}",
                f"{statistics.median(peaks['ours']):.0f}",
                f"{statistics.median(peaks['dask']):.0f}",
                f"{min(above['ours']):.0f}-{max(above['ours']):.0f}",
                f"{min(above['dask']):.0f}-{max(above['dask']):.0f}",
                f"{ratio:.2f}",
                "<= 1.00",
                verdict,
            ]
        )
    print_table(
        [
            "allocator",
            "ours MB",
            "Dask MB",
            "ours peak",
            "Dask peak",
            "ours range",
            "Dask range",
            "ratio",
            "target",
            "",
        ],
        rows,
    )
    print(
        "  MB = peak RSS above the child's RSS after imports (median); peak = absolute "
        "peak RSS; range = min-max over the children.\n"
        f"  For scale: one array is {ELEMENTS * 8 / 2**20:.0f} MB; all {LEAVES} leaves would "
        f"be {LEAVES * ELEMENTS * 8 // 2**20} MB."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__)
    parser.add_argument("--child", choices=("ours", "dask"), help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.workers)
        return 0
    tally = Tally()
    run_memory(args.workers, args.repeats, tally)
    tally.print_summary()
    return 0


if __name__ == "__main__":
    sys.exit(main())
