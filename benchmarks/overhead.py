"""The benchmark harness: ``python -m benchmarks.overhead`` from the repository root.

One run measures our backends and Dask's on the same graphs and prints a report:

1. **Scheduling overhead** (per task, no-op tasks): 10,000 independent tasks plus a
   sum, a 10,000-task chain and a binary tree over 8,192 leaves, on every backend of
   ``backends.REGISTRY`` and its Dask counterpart.  Best of ``--repeats`` rounds
   (ours and Dask alternate) after one warm-up run that also checks both answers.
   Target: ours <= 1/5 of Dask's time.
2. **Deep graphs**: a 1,000,000-task chain on our local backends (one run each;
   Dask is not timed: it would take minutes).  Target: it runs and is right.
3. **Parallel speed-up** (``parallel.py``): NumPy on threads and pure Python on
   processes against sync, with Dask and a bare executor as references, and the CPU
   other programs took meanwhile (the machine may be shared).  Target: >= 1.7x on 2
   workers.
4. **Peak memory** (``memory.py``): a tree reduction over 64 arrays of 8 MB on our
   threads vs Dask's.  Target: ours <= Dask's.
5. **dask.array** (``dask_array.py``): Dask collections (a 4,000 x 4,000 random array:
   ``(x + x.T).mean(axis=0).sum()`` and ``x @ x.T``) computed by Dask on its threaded
   scheduler and on ours: time and peak memory.  Target: ours <= Dask's for both.

Then a summary of every target and an overall PASS/FAIL.  The exit code is 0 even
when a target fails: this is a report, not a test.

Extending: a new backend is a factory in ``backends.py`` (``@register``); a new graph
is a builder in ``workloads.py`` added to ``OVERHEAD_GRAPHS``.  Optional backends run
when asked: ``--distributed`` adds ``scheduler="distributed"`` against a
``distributed.LocalCluster``, or prints why it was skipped.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from contextlib import ExitStack
from functools import partial

from .backends import OPTIONAL, REGISTRY, Backend, Skip
from .report import Tally, environment_lines, interleaved_best, print_table
from .workloads import OVERHEAD_GRAPHS, chain

__all__ = ["main", "run_overhead", "run_deep_chain"]

SECTIONS = ("overhead", "deep", "parallel", "memory", "dask-array")
DEEP_CHAIN = 1_000_000


def run_overhead(backends: dict[str, Backend], repeats: int, tally: Tally) -> None:
    print(
        f"\nScheduling overhead: µs per task, best of {repeats} interleaved rounds "
        f"(ours, Dask, ours, ...) after a warm-up that checks both answers"
    )
    rows = []
    for build in OVERHEAD_GRAPHS:
        work = build()
        tasks = len(work.graph)
        for backend in backends.values():
            best = interleaved_best(
                {
                    f"our {backend.name}": partial(backend.ours, work.graph, work.key),
                    f"Dask {backend.name}": partial(backend.dask, work.graph, work.key),
                },
                work.expected,
                repeats,
                backend.settle,
            )
            ours, dask = best.values()
            ratio = ours / dask
            verdict = tally.check(
                f"overhead, {work.name}, {backend.name}",
                ratio <= backend.target,
                f"ours {ours / tasks * 1e6:.2f} µs/task vs Dask {dask / tasks * 1e6:.2f} "
                f"({ratio:.3f}, target <= {backend.target})",
            )
            rows.append(
                [
                    work.name,
                    backend.name,
                    f"{tasks:,}",
                    f"{ours / tasks * 1e6:.2f}",
                    f"{dask / tasks * 1e6:.2f}",
                    f"{ratio:.3f}",
                    f"1/{dask / ours:.0f}",
                    f"<= {backend.target}",
                    verdict,
                ]
            )
            sys.stdout.flush()
    print_table(
        [
            "graph",
            "backend",
            "tasks",
            "ours µs/task",
            "Dask µs/task",
            "ratio",
            "as fraction",
            "target",
            "",
        ],
        rows,
    )
    for backend in backends.values():
        print(f"  {backend.name}: Dask = {backend.dask_label}")
    for backend in backends.values():
        if backend.note:
            print(f"  note, {backend.note}")


def run_deep_chain(backends: dict[str, Backend], tally: Tally) -> None:
    chosen = [b for b in backends.values() if b.deep_chain]
    if not chosen:
        return
    print(f"\nDeep graph: a {DEEP_CHAIN:,}-task chain, ours only, one run per backend")
    start = time.perf_counter()
    work = chain(DEEP_CHAIN)
    built = time.perf_counter() - start
    rows = []
    for backend in chosen:
        start = time.perf_counter()
        try:
            result = backend.ours(work.graph, work.key)
            error = None if result == work.expected else f"wrong answer {result!r}"
        except Exception as exc:  # a report, so record the failure and go on
            error = f"{type(exc).__name__}: {exc}"
        seconds = time.perf_counter() - start
        verdict = tally.check(
            f"deep chain {DEEP_CHAIN:,}, {backend.name}",
            error is None,
            error or f"ran in {seconds:.1f} s ({seconds / DEEP_CHAIN * 1e6:.2f} µs/task)",
        )
        rows.append(
            [
                work.name,
                backend.name,
                f"{seconds:.2f}",
                f"{seconds / DEEP_CHAIN * 1e6:.2f}",
                "ran, right answer" if error is None else error[:60],
                verdict,
            ]
        )
        gc.collect()
    print_table(["graph", "backend", "seconds", "ours µs/task", "result", ""], rows)
    print(f"  (building the graph dict took {built:.1f} s and is not counted)")


def _open_backends(stack: ExitStack, names: list[str], workers: int) -> dict[str, Backend]:
    opened: dict[str, Backend] = {}
    for name in names:
        factory = REGISTRY.get(name) or OPTIONAL[name]
        try:
            opened[name] = stack.enter_context(factory(workers))
        except Skip as reason:
            print(f"Skipping backend {name!r}: {reason}")
    return opened


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.overhead",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per overhead cell")
    parser.add_argument(
        "--parallel-repeats", type=int, default=5, help="timed rounds per speed-up row"
    )
    parser.add_argument("--workers", type=int, default=2, help="num_workers for both sides")
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {','.join(SECTIONS)} (default: all)",
    )
    parser.add_argument("--all", action="store_true", help="every section (the default)")
    parser.add_argument(
        "--backends",
        default=",".join(REGISTRY),
        help=f"comma-separated subset of {','.join(REGISTRY)} (default: all local ones)",
    )
    for name in OPTIONAL:
        parser.add_argument(
            f"--{name}", action="store_true", help=f"also measure the optional {name!r} backend"
        )
    parser.add_argument(
        "--memory-repeats", type=int, default=21, help="fresh processes per memory cell (median)"
    )
    parser.add_argument(
        "--dask-array-repeats", type=int, default=5, help="timed rounds per dask.array row"
    )
    parser.add_argument(
        "--dask-array-memory-repeats",
        type=int,
        default=3,
        help="fresh processes per dask.array memory cell (median)",
    )
    args = parser.parse_args(argv)
    sections = list(SECTIONS) if args.all else [s.strip() for s in args.sections.split(",")]
    names = [b.strip() for b in args.backends.split(",") if b.strip()]
    names += [name for name in OPTIONAL if getattr(args, name)]
    unknown = [s for s in sections if s not in SECTIONS]
    unknown += [n for n in names if n not in REGISTRY and n not in OPTIONAL]
    if unknown:
        parser.error(
            f"unknown section or backend {unknown[0]!r}; sections: {', '.join(SECTIONS)}; "
            f"backends: {', '.join([*REGISTRY, *OPTIONAL])}"
        )

    started = time.perf_counter()
    print("notebook_sched benchmark report")
    for line in environment_lines(args.workers):
        print(f"  {line}")
    tally = Tally()
    with ExitStack() as stack:
        backends = _open_backends(stack, names, args.workers)
        if "overhead" in sections:
            run_overhead(backends, args.repeats, tally)
        if "deep" in sections:
            run_deep_chain(backends, tally)
        if "parallel" in sections:
            from .parallel import run_parallel

            run_parallel(args.workers, args.parallel_repeats, tally, backends)
    if "memory" in sections:
        from .memory import run_memory

        run_memory(args.workers, args.memory_repeats, tally)
    if "dask-array" in sections:
        from .dask_array import run_dask_array

        run_dask_array(args.workers, args.dask_array_repeats, args.dask_array_memory_repeats, tally)
    tally.print_summary()
    print(f"Total time: {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
