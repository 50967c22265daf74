"""A dask.array workload on Dask's threaded scheduler and on ours, in the same run.

The workload: ``x``, a 4,000 x 4,000 random array in 500 x 500 chunks (64 blocks,
128 MB), and two results computed from it, each a separate ``compute``:

* ``(x + x.T).mean(axis=0).sum()``: elementwise work, a transpose, two reductions;
* ``x @ x.T``: 512 block products (BLAS) summed into a 4,000 x 4,000 result.

Both sides run the same Dask collections through Dask's own ``compute`` (same
optimisation, same graph); only the scheduler differs: ``scheduler="threads"``
against ``partial(notebook_sched.interop.dask_get, scheduler="threads")``, both with
``num_workers=--workers``.  The random blocks are part of the graph, so every
compute makes its data anew.

* **Time**: best of ``--repeats`` interleaved rounds (Dask, ours, Dask, ...) after a
  warm-up round that checks both answers agree.  Target: ours / Dask <= 1.0.
* **Peak memory**: a fresh interpreter per measurement (``--child``) imports both,
  builds the collection, resets the kernel's peak-RSS mark and reports the peak above
  its RSS from just before the compute (``VmHWM``, see ``memory.py``); median of
  ``--memory-repeats`` children per cell, alternating sides.  Target: ours <= Dask's.

Run alone: ``python -m benchmarks.dask_array``; in the harness:
``python -m benchmarks.overhead --sections dask-array``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from functools import partial
from pathlib import Path

from .report import Tally, interleaved_best, print_table, reset_peak_rss, status_kib

__all__ = ["run_dask_array", "WORKLOADS"]

ROOT = Path(__file__).resolve().parent.parent
SIZE = 4_000
CHUNK = 500
WORKLOADS = ("(x + x.T).mean(axis=0).sum()", "x @ x.T")


def build(which: str):
    """The Dask collection for workload ``which`` (an entry of WORKLOADS)."""
    import dask.array as da

    x = da.random.RandomState(42).random((SIZE, SIZE), chunks=(CHUNK, CHUNK))
    if which == WORKLOADS[0]:
        return (x + x.T).mean(axis=0).sum()
    if which == WORKLOADS[1]:
        return x @ x.T
    raise ValueError(f"unknown workload {which!r}; choose one of {WORKLOADS}")


def schedulers(workers: int) -> dict:
    """``{side: compute(collection)}`` for Dask's threaded scheduler and ours."""
    from notebook_sched.interop import dask_get

    ours = partial(dask_get, scheduler="threads")
    return {
        "dask": lambda c: c.compute(scheduler="threads", num_workers=workers),
        "ours": lambda c: c.compute(scheduler=ours, num_workers=workers),
    }


class _Close:
    """Compares equal to arrays/floats within floating-point reordering error."""

    __array_ufunc__ = None  # ``array != _Close(...)`` must come here, not go elementwise

    def __init__(self, value):
        self.value = value

    def __eq__(self, other) -> bool:
        import numpy as np

        return bool(np.allclose(self.value, other, rtol=1e-9, atol=1e-6))

    def __ne__(self, other) -> bool:
        return not self == other

    def __repr__(self) -> str:
        return f"<close to {type(self.value).__name__} of shape {getattr(self.value, 'shape', ())}>"


def _timings(workers: int, repeats: int) -> dict[str, dict[str, float]]:
    import numpy as np

    sides = schedulers(workers)
    out = {}
    for which in WORKLOADS:
        collection = build(which)
        expected = np.asarray(sides["dask"](collection))
        best = interleaved_best(
            {side: partial(run, collection) for side, run in sides.items()},
            _Close(expected),
            repeats,
        )
        out[which] = best
    return out


def _child(side: str, which: str, workers: int) -> None:
    run = schedulers(workers)[side]
    collection = build(which)
    reset_peak_rss()
    baseline = status_kib("VmRSS")
    result = run(collection)
    peak = status_kib("VmHWM")
    print(json.dumps({"baseline_kib": baseline, "peak_kib": peak, "size": int(result.size)}))


def _measure(side: str, which: str, workers: int) -> dict:
    command = [sys.executable, "-m", "benchmarks.dask_array", "--child", side]
    command += ["--workload", which, "--workers", str(workers)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_dask_array(workers: int, repeats: int, memory_repeats: int, tally: Tally) -> None:
    """Print the time and memory tables and record their targets in ``tally``."""
    print(
        f"\ndask.array on Dask's threaded scheduler vs ours (threads), num_workers={workers}: "
        f"a {SIZE:,} x {SIZE:,} random array in {CHUNK} x {CHUNK} chunks"
    )
    times = _timings(workers, repeats)
    rows = []
    for which, best in times.items():
        ratio = best["ours"] / best["dask"]
        verdict = tally.check(
            f"dask.array time, {which}",
            ratio <= 1.0,
            f"ours {best['ours']:.3f} s vs Dask {best['dask']:.3f} s ({ratio:.3f}, target <= 1.0)",
        )
        rows.append([which, f"{best['ours']:.3f}", f"{best['dask']:.3f}", f"{ratio:.3f}", verdict])
    print(f"Time: best of {repeats} interleaved rounds after a checked warm-up")
    print_table(["workload", "ours s", "Dask s", "ratio", ""], rows)

    rows = []
    for which in WORKLOADS:
        above: dict[str, list[float]] = {"ours": [], "dask": []}
        for _ in range(memory_repeats):
            for side in ("dask", "ours"):
                sample = _measure(side, which, workers)
                above[side].append((sample["peak_kib"] - sample["baseline_kib"]) / 1024)
        ours, dask = statistics.median(above["ours"]), statistics.median(above["dask"])
        verdict = tally.check(
            f"dask.array peak memory, {which}",
            ours <= dask,
            f"peak above baseline ours {ours:.0f} MB vs Dask {dask:.0f} MB ({ours / dask:.2f}x)",
        )
        rows.append(
            [
                which,
                f"{ours:.0f}",
                f"{dask:.0f}",
                f"{min(above['ours']):.0f}-{max(above['ours']):.0f}",
                f"{min(above['dask']):.0f}-{max(above['dask']):.0f}",
                f"{ours / dask:.2f}",
                verdict,
            ]
        )
    print(f"Peak memory above the RSS before compute, median of {memory_repeats} fresh processes")
    print_table(["workload", "ours MB", "Dask MB", "ours range", "Dask range", "ratio", ""], rows)
    print(
        f"  For scale: x is {SIZE * SIZE * 8 / 2**20:.0f} MB in blocks of "
        f"{CHUNK * CHUNK * 8 / 2**20:.0f} MB; x @ x.T's result is as large as x."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dask_array", description=__doc__)
    parser.add_argument("--child", choices=("ours", "dask"), help=argparse.SUPPRESS)
    parser.add_argument("--workload", choices=WORKLOADS, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.workload, args.workers)
        return 0
    tally = Tally()
    run_dask_array(args.workers, args.repeats, args.memory_repeats, tally)
    tally.print_summary()
    return 0


if __name__ == "__main__":
    sys.exit(main())
