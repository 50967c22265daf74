"""Parallel speed-up on real work: does a backend use the cores it is given?

Two graphs of 64 independent tasks of ~20-50 ms each, plus a sum:

* NumPy (fill and sort 8 MB float64 arrays; both release the GIL) on ``threads``;
* pure Python (a loop summing ints; holds the GIL) on ``processes``.

Each is timed on our ``sync`` backend and on the parallel one; the target is a
speed-up of at least 1.7x on 2 workers.  Two references are timed on the same tasks,
with no target: Dask's matching scheduler, and a *bare* ``concurrent.futures``
executor mapping the task functions with no scheduler at all.  All four run in turn,
round after round (best of N rounds), so a burst of outside load hits them alike.

The bare speed-up is the ceiling this machine gives right now, and the "others' CPU"
column says how many cores other programs took meanwhile (psutil): on a shared
machine a missed target with a low bare speed-up is the machine's, not the
scheduler's.

Sorting is used rather than a matrix product on purpose: OpenBLAS already runs a
matmul on every core, so a matmul graph would show no speed-up for any scheduler.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from functools import partial

from .backends import Backend
from .report import Tally, interleaved_best, print_table
from .workloads import Workload, numpy_sort_tasks, python_loop_tasks

__all__ = ["run_parallel", "TARGET_SPEEDUP", "CASES"]

TARGET_SPEEDUP = 1.7

# (graph builder, backend name, bare executor class of the same kind)
CASES = (
    (numpy_sort_tasks, "threads", ThreadPoolExecutor),
    (python_loop_tasks, "processes", ProcessPoolExecutor),
)


def _run_task(task: tuple):
    return task[0](*task[1:])


def _bare(executor: Executor, work: Workload) -> int | float:
    """The graph's leaf tasks mapped over ``executor``, then summed: no scheduler."""
    tasks = [spec for key, spec in work.graph.items() if key != work.key]
    return sum(executor.map(_run_task, tasks))


def _open_executor(kind: type, workers: int) -> Executor:
    if kind is ProcessPoolExecutor:
        executor = kind(workers, mp_context=multiprocessing.get_context("spawn"))
    else:
        executor = kind(workers)
    list(executor.map(abs, range(4 * workers)))  # start (and import in) every worker
    return executor


class _ForeignLoad:
    """CPU used by programs other than this process tree, in cores (needs psutil).

    The machine may be shared: a speed-up measured while another program keeps a core
    busy says nothing about the scheduler.  This estimate makes that visible.
    """

    def __init__(self) -> None:
        try:
            import psutil
        except ImportError:
            self.psutil = None
            return
        self.psutil = psutil
        self.start = self._snapshot()

    def _snapshot(self) -> tuple[float, float, float]:
        psutil = self.psutil
        times = psutil.cpu_times()
        busy = sum(times) - times.idle - getattr(times, "iowait", 0.0)
        me = psutil.Process()
        own = sum(me.cpu_times()[:4])  # user, system, children_user, children_system
        for child in me.children(recursive=True):
            try:
                own += sum(child.cpu_times()[:2])
            except psutil.Error:
                pass  # it exited; its time is in children_* once reaped
        return time.perf_counter(), busy, own

    def cores(self) -> str:
        if self.psutil is None:
            return "n/a"
        (t0, busy0, own0), (t1, busy1, own1) = self.start, self._snapshot()
        return f"{max(0.0, (busy1 - busy0) - (own1 - own0)) / (t1 - t0):.2f}"


def run_parallel(workers: int, repeats: int, tally: Tally, backends: dict[str, Backend]) -> None:
    """Print the speed-up table for :data:`CASES`, using the open ``backends``."""
    from notebook_sched.schedulers import sync

    target = TARGET_SPEEDUP if workers >= 2 else 1.0
    print(
        f"\nParallel speed-up vs our sync backend, num_workers={workers}; best of {repeats} "
        f"interleaved rounds after a warm-up (target >= {target}x)"
    )
    rows = []
    ceilings = []
    for build, backend, bare_kind in CASES:
        if backend not in backends:
            print(f"  skipped {build.__name__}: backend {backend!r} is not open")
            continue
        work = build()
        tasks = len(work.graph) - 1
        expected = sync.get(work.graph, work.key)
        with _open_executor(bare_kind, workers) as executor:
            load = _ForeignLoad()
            best = interleaved_best(
                {
                    "sync": partial(sync.get, work.graph, work.key),
                    "ours": partial(backends[backend].ours, work.graph, work.key),
                    "Dask": partial(backends[backend].dask, work.graph, work.key),
                    "bare": partial(_bare, executor, work),
                },
                expected,
                repeats,
            )
            others = load.cores()
        speedup = {label: best["sync"] / seconds for label, seconds in best.items()}
        ceilings.append(speedup["bare"])
        verdict = tally.check(
            f"speed-up, {work.name} on {backend}",
            speedup["ours"] >= target,
            f"{speedup['ours']:.2f}x (target >= {target}x; Dask {speedup['Dask']:.2f}x, "
            f"a bare executor {speedup['bare']:.2f}x)",
        )
        rows.append(
            [
                work.name,
                backend,
                f"{best['sync'] / tasks * 1e3:.1f}",
                f"{best['sync']:.3f}",
                f"{best['ours']:.3f}",
                f"{speedup['ours']:.2f}x",
                f"{best['Dask']:.3f} ({speedup['Dask']:.2f}x)",
                f"{best['bare']:.3f} ({speedup['bare']:.2f}x)",
                others,
                f">= {target}x",
                verdict,
            ]
        )
        sys.stdout.flush()
    print_table(
        [
            "workload",
            "backend",
            "ms/task",
            "sync s",
            "ours s",
            "speed-up",
            "Dask s (speed-up)",
            "bare s (speed-up)",
            "others' CPU",
            "target",
            "",
        ],
        rows,
    )
    print(
        "  others' CPU = cores used on average by programs outside this benchmark while "
        "the row was measured."
    )
    if ceilings and min(ceilings) < target:
        print(
            f"  note: a bare executor reached only {min(ceilings):.2f}x: the cores were not "
            f"free, so no scheduler could meet the target in this run."
        )
