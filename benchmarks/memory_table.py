"""The memory table: peak memory and time of our backends against Dask's, in one run.

``make bench-memory`` (``python -m benchmarks.memory_table``) runs every workload of
``memory_workloads.py`` on our ``sync``, ``threads``, ``processes`` and ``auto`` and on
Dask's ``sync``, ``threads`` and ``processes`` (``auto`` is set beside Dask's
``threads``, its default for arrays and frames), each measurement in a fresh
interpreter (``--child``), ours and Dask's alternating, ``num_workers=2``.

Per measurement (one ``compute`` in a fresh process, after imports, building the
collection and a warm-up: one tiny array compute on the same side's ``sync``, so
neither side's first-use costs, our lazily loaded layers or Dask's lazy imports, are
charged to the workload; no pool is started before the measured compute):

* **peak RSS of the process and its children**: a thread samples the RSS of the
  process tree every 10 ms (``/proc``); the peak of the sum, or the kernel's own peak
  of the process (``VmHWM``, reset before the compute) if that is larger (a short
  run's peak can fall between samples), minus the process's RSS before the compute
  (worker processes start inside the compute on both sides);
* **time**: the compute's wall time, pool start-up included on both sides (Dask's
  ``processes`` starts a pool per compute; ours starts its shared pool on first use);
* **live bytes** (a second, traced run, for the backends in ``--traced``: by default
  ``processes``, where the caller and the workers hold different data): with
  ``PYTHONTRACEMALLOC=1`` in the child's environment, so its worker processes trace
  too, the caller's ``tracemalloc`` peak during the compute above its traced bytes
  before it, and per worker its peak above its traced bytes at exit (written by an
  ``atexit`` hook this module installs in spawned workers, which import it as their
  main module); the largest worker is reported.  NumPy reports its buffers to
  tracemalloc, so this is the peak of live Python objects and arrays: the results
  the caller holds and the inputs a worker holds, without the allocator's slack.

The time of a traced run is not used (tracing slows Dask's bookkeeping more than
ours).  Medians over ``--repeats`` rounds; the default run (one round) takes about
ten minutes on 2 cores; ``--full`` uses issue 22's sizes (much longer).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .memory_workloads import WORKLOADS, array_workloads, build
from .report import Tally, print_table, reset_peak_rss, status_kib

__all__ = ["run_memory_table"]

ROOT = Path(__file__).resolve().parent.parent
TRACE_DIR_ENV = "NOTEBOOK_SCHED_BENCH_TRACE_DIR"
PAIRS = (("sync", "sync"), ("threads", "threads"), ("processes", "processes"), ("auto", "threads"))
TRACED_DEFAULT = ("processes",)
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
SAMPLE_SECONDS = 0.01


# -- in worker processes: report the tracemalloc peak at exit ----------------------------


def _install_worker_hook() -> None:
    directory = os.environ.get(TRACE_DIR_ENV)
    if not directory or __name__ != "__mp_main__":  # only in a spawned worker
        return
    import atexit
    import tracemalloc

    def dump() -> None:
        if tracemalloc.is_tracing():
            current, peak = tracemalloc.get_traced_memory()
            path = Path(directory, f"{os.getpid()}.json")
            path.write_text(json.dumps({"current": current, "peak": peak}))

    atexit.register(dump)


_install_worker_hook()


# -- in the measured process ----------------------------------------------------------------


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * PAGE_KIB
    except (OSError, IndexError, ValueError):
        return 0  # it exited between the listing and the read


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as children:
                found.extend(int(c) for c in children.read().split())
        except OSError:
            pass
    return found


def tree_rss_kib(root: int) -> int:
    """RSS of ``root`` and all its descendants, in KiB."""
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += _rss_kib(pid)
        stack.extend(_children(pid))
    return total


class _Sampler(threading.Thread):
    """The peak of ``tree_rss_kib(this process)``, sampled every SAMPLE_SECONDS."""

    def __init__(self):
        super().__init__(name="rss-sampler", daemon=True)
        self.peak = 0
        self.halt = threading.Event()

    def run(self) -> None:
        pid = os.getpid()
        while not self.halt.is_set():
            self.peak = max(self.peak, tree_rss_kib(pid))
            self.halt.wait(SAMPLE_SECONDS)

    def stop(self) -> int:
        self.halt.set()
        self.join()
        self.peak = max(self.peak, tree_rss_kib(os.getpid()))
        return self.peak


def _runner(side: str, backend: str, workers: int, kind: str, thing):
    import dask

    if kind == "graph":
        graph, key = thing
        if side == "ours":
            import notebook_sched

            return lambda: notebook_sched.get(graph, key, scheduler=backend, num_workers=workers)
        import dask.local
        import dask.multiprocessing
        import dask.threaded

        if backend == "sync":
            return lambda: dask.local.get_sync(graph, key)
        get = dask.threaded.get if backend == "threads" else dask.multiprocessing.get
        return lambda: get(graph, key, num_workers=workers)
    if side == "ours":
        from functools import partial

        from notebook_sched.interop import dask_get

        scheduler = partial(dask_get, scheduler=backend)
    else:
        scheduler = backend

    def run():
        # In the config, not compute(scheduler=): set_index computes its divisions first.
        with dask.config.set(scheduler=scheduler, num_workers=workers):
            return dask.compute(thing)[0]

    return run


def _warm_up(side: str) -> None:
    """One tiny array compute on ``side``'s ``sync``, so the measured compute does not
    pay for first use: our lazily loaded layers, Dask's lazy imports.  Never on a
    pool: a pool's start belongs to the measured compute on both sides.

    ``distributed`` (12 MB of modules, ~0.4 s) is imported first on both sides: Dask's
    ``get_scheduler`` imports it on the first compute with a named scheduler (so
    Dask's warm-up would load it), and dask's shuffle lowering imports it for ours
    too (``get_default_shuffle_method``), inside the measured compute."""
    import dask.array as da

    try:
        import distributed  # noqa: F401
    except ImportError:
        pass
    _runner(side, "sync", 1, "collection", da.ones((4, 4), chunks=2).sum())()


def _child(args) -> None:
    import tracemalloc

    kind, thing, expected = build(args.workload, args.full)
    run = _runner(args.child, args.backend, args.workers, kind, thing)
    _warm_up(args.child)
    traced = tracemalloc.is_tracing()
    sampler = _Sampler()
    baseline = tree_rss_kib(os.getpid())
    reset_peak_rss()  # VmHWM (this process's peak RSS) starts again from now
    if traced:
        tracemalloc.reset_peak()
        traced_before = tracemalloc.get_traced_memory()[0]
    sampler.start()
    start = time.perf_counter()
    result = run()
    seconds = time.perf_counter() - start
    # The kernel's own peak of this process catches what 10 ms samples miss in a short
    # run; with worker processes the sampled sum of the tree is usually the larger.
    peak = max(sampler.stop(), status_kib("VmHWM"))
    out = {"baseline_kib": baseline, "peak_kib": peak, "seconds": seconds}
    if traced:
        out["caller_live"] = tracemalloc.get_traced_memory()[1] - traced_before
    if expected is not None and result != expected:
        raise SystemExit(f"{args.workload}: computed {result!r}, expected {expected!r}")
    del result
    if traced:
        if args.child == "ours":
            from notebook_sched.schedulers import processes

            processes.shutdown()  # the workers exit, and write their peaks
        out["worker_live"] = _worker_live(Path(os.environ[TRACE_DIR_ENV]))
    print(json.dumps(out))


def _worker_live(directory: Path) -> int | None:
    """The largest worker's traced peak above its traced bytes at exit."""
    held = []
    for path in directory.glob("*.json"):
        report = json.loads(path.read_text())
        held.append(report["peak"] - report["current"])
    return max(held) if held else None


# -- the harness ------------------------------------------------------------------------------


def _measure(side: str, backend: str, workload: str, args, traced: bool) -> dict | None:
    command = [sys.executable, "-m", "benchmarks.memory_table", "--child", side]
    command += ["--backend", backend, "--workload", workload, "--workers", str(args.workers)]
    if args.full:
        command.append("--full")
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as directory:
        if traced:
            env.update({"PYTHONTRACEMALLOC": "1", TRACE_DIR_ENV: directory})
        # A session of its own, so a measurement over time is stopped with its workers.
        child = subprocess.Popen(
            command, cwd=ROOT, env=env, text=True, start_new_session=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            stdout, stderr = child.communicate(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            child.communicate()
            print(f"  {side} {backend} {workload}: over {args.timeout} s, left out", flush=True)
            return None
        done = subprocess.CompletedProcess(command, child.returncode, stdout, stderr)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        print(f"  {side} {backend} {workload} failed:\n{tail}", flush=True)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def _median(samples: list[dict], field: str) -> float | None:
    values = [s[field] for s in samples if s is not None and s.get(field) is not None]
    return statistics.median(values) if values else None


def _collect(args) -> dict:
    """``{(workload, ours backend): {"ours": [...], "dask": [...], "traced": {...}}}``."""
    cells: dict = {}
    for workload in args.workloads:
        for ours, theirs in PAIRS:
            if ours not in args.backends:
                continue
            cell = cells[(workload, ours)] = {"ours": [], "dask": [], "ours_t": [], "dask_t": []}
            for round_ in range(args.repeats):
                sides = (("ours", ours), ("dask", theirs))
                for side, backend in sides if round_ % 2 == 0 else sides[::-1]:
                    cell[side].append(_measure(side, backend, workload, args, traced=False))
            if ours in args.traced and workload in array_workloads():
                for side, backend in (("ours", ours), ("dask", theirs)):
                    cell[side + "_t"].append(_measure(side, backend, workload, args, traced=True))
            print(f"  {workload} / {ours}: {_cell_line(cell)}", flush=True)
            if args.json:  # as it goes: a long run stopped early keeps what it measured
                flat = {f"{w} {b}": c for (w, b), c in cells.items()}
                args.json.write_text(json.dumps(flat, indent=1))
    return cells


def _mb(kib: float | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.0f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None or b <= 0 else f"{a / b:.2f}"


def _above(samples: list[dict]) -> float | None:
    values = [s["peak_kib"] - s["baseline_kib"] for s in samples if s is not None]
    return statistics.median(values) if values else None


def _cell_line(cell: dict) -> str:
    ours, dask = _above(cell["ours"]), _above(cell["dask"])
    times = [_median(cell[side], "seconds") for side in ("ours", "dask")]
    live = [
        "/".join(_mb(_live(cell[side], field)) for side in ("ours_t", "dask_t"))
        for field in ("caller_live", "worker_live")
    ]
    seconds = "/".join("-" if t is None else f"{t:.2f}" for t in times)
    return (
        f"ours {_mb(ours)} MB, Dask {_mb(dask)} MB; {seconds} s; "
        f"live caller {live[0]} MB, worker {live[1]} MB"
    )


def _live(samples: list[dict], field: str) -> float | None:
    value = _median(samples, field)
    return None if value is None else value / 1024


def run_memory_table(args, tally: Tally) -> dict:
    """Measure, print the table, record the targets in ``tally``; returns the samples."""
    print(
        f"\nPeak memory and time, ours vs Dask: {len(args.workloads)} workloads "
        f"({'full' if args.full else 'default'} sizes), num_workers={args.workers}, "
        f"a fresh process per measurement, median of {args.repeats} round(s)",
        flush=True,
    )
    cells = _collect(args)
    rows = []
    for (workload, ours_backend), cell in cells.items():
        theirs = dict(PAIRS)[ours_backend]
        ours, dask = _above(cell["ours"]), _above(cell["dask"])
        ours_s, dask_s = _median(cell["ours"], "seconds"), _median(cell["dask"], "seconds")
        verdict = ""
        if ours is not None and dask is not None:
            verdict = tally.check(
                f"memory, {workload}, {ours_backend}",
                ours <= dask * 1.05 + 5 * 1024,  # 5% or 5 MB: a round's noise
                f"peak above baseline ours {ours / 1024:.0f} MB vs Dask {dask / 1024:.0f} MB",
            )
        caller = [_live(cell["ours_t"], "caller_live"), _live(cell["dask_t"], "caller_live")]
        worker = [_live(cell["ours_t"], "worker_live"), _live(cell["dask_t"], "worker_live")]
        rows.append(
            [
                workload,
                f"{ours_backend}/{theirs}",
                _mb(ours),
                _mb(dask),
                _ratio(ours, dask),
                "-" if ours_s is None else f"{ours_s:.2f}",
                "-" if dask_s is None else f"{dask_s:.2f}",
                _ratio(ours_s, dask_s),
                "/".join("-" if v is None else f"{v / 1024:.0f}" for v in caller),
                "/".join("-" if v is None else f"{v / 1024:.0f}" for v in worker),
                verdict,
            ]
        )
    print_table(
        [
            "workload",
            "ours/Dask",
            "ours MB",
            "Dask MB",
            "mem ratio",
            "ours s",
            "Dask s",
            "time ratio",
            "caller live MB",
            "worker live MB",
            "",
        ],
        rows,
    )
    print(
        "  MB = peak RSS of the process and its children above the process's RSS before "
        "the compute (sampled every 10 ms, or the process's VmHWM if larger; after a "
        "warm-up); s = the compute's wall time;\n"
        "  live MB = tracemalloc peak (Python objects and NumPy buffers) in the caller, and "
        "in the largest worker process, ours/Dask (traced runs)."
    )
    return cells


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory_table", description=__doc__)
    parser.add_argument("--child", choices=("ours", "dask"), help=argparse.SUPPRESS)
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--backends", nargs="+", choices=[p[0] for p in PAIRS], default=None)
    parser.add_argument(
        "--traced", nargs="*", default=list(TRACED_DEFAULT), help="backends with a traced run"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per measurement")
    parser.add_argument("--full", action="store_true", help="issue 22's sizes (long)")
    parser.add_argument("--json", type=Path, help="also write the samples here")
    args = parser.parse_args(argv)
    if args.child:
        _child(args)
        return 0
    args.backends = args.backends or [p[0] for p in PAIRS]
    tally = Tally()
    started = time.perf_counter()
    run_memory_table(args, tally)
    print(f"  ({time.perf_counter() - started:.0f} s)")
    tally.print_summary()
    return 0


if __name__ == "__main__":
    sys.exit(main())
