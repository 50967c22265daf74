"""Timing and printing helpers: best-of-N timing, plain-text tables, the PASS/FAIL tally,
and this process's own RSS figures from ``/proc`` (current, peak, resetting the peak)."""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "best_of",
    "interleaved_best",
    "print_table",
    "Tally",
    "environment_lines",
    "status_kib",
    "reset_peak_rss",
]


def status_kib(field: str) -> int:
    """A ``/proc/self/status`` figure in KiB: ``VmRSS`` (now) or ``VmHWM`` (peak)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} line")


def reset_peak_rss() -> None:
    """Make ``VmHWM`` (peak RSS) start again from the current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def best_of(call: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """The shortest wall time of ``repeats`` calls (seconds) and the last result."""
    best = float("inf")
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = call()
        best = min(best, time.perf_counter() - start)
    return best, result


def interleaved_best(
    calls: dict[str, Callable],
    expected: Any,
    repeats: int,
    settle: Callable[[], None] | None = None,
) -> dict[str, float]:
    """Best time of each call over ``repeats`` rounds that run every call once in turn.

    Rounds spread each call's samples over the whole measurement, so a burst of load
    from another program hits every call alike instead of one call's every sample.
    Each call runs once first, untimed, and must return ``expected``.  ``settle``
    runs untimed after every call: backends that keep cleaning up after a call
    returns (a cluster releasing thousands of tasks) finish that before the next
    call is timed, so neither side is timed while the other's leftovers use a core.
    """
    for label, call in calls.items():
        result = call()
        if result != expected:
            raise AssertionError(f"{label} computed {result!r}; expected {expected!r}")
        if settle is not None:
            settle()
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(repeats):
        for label, call in calls.items():
            start = time.perf_counter()
            call()
            best[label] = min(best[label], time.perf_counter() - start)
            if settle is not None:
                settle()
    return best


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print ``rows`` in aligned columns: text left-aligned, numbers right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [
        all(_looks_numeric(row[i]) for row in cells[1:]) if rows else False
        for i in range(len(headers))
    ]

    def line(row: Sequence[str]) -> str:
        parts = [
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(row, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    print(line(cells[0]))
    print("  ".join("-" * w for w in widths))
    for row in cells[1:]:
        print(line(row))
    sys.stdout.flush()


def _looks_numeric(text: str) -> bool:
    stripped = text.rstrip("x%").replace(",", "").replace("-", "", 1)
    return stripped.replace(".", "", 1).isdigit() or text in ("", "—")


class Tally:
    """Every checked target, for the closing summary."""

    def __init__(self) -> None:
        self.checks: list[tuple[str, bool, str]] = []

    def check(self, name: str, passed: bool, detail: str) -> str:
        self.checks.append((name, passed, detail))
        return "PASS" if passed else "FAIL"

    @property
    def failed(self) -> list[tuple[str, bool, str]]:
        return [c for c in self.checks if not c[1]]

    def print_summary(self) -> None:
        print()
        print("Summary")
        print("=======")
        for name, passed, detail in self.checks:
            print(f"  {'PASS' if passed else 'FAIL'}  {name}: {detail}")
        failed = len(self.failed)
        verdict = "PASS" if not failed else "FAIL"
        print(f"\nOVERALL: {verdict} ({len(self.checks) - failed}/{len(self.checks)} targets met)")


def environment_lines(workers: int) -> list[str]:
    """Python, Dask, CPU and BLAS facts that explain the numbers."""
    import dask

    import notebook_sched

    lines = [
        f"Python {platform.python_version()} on {platform.machine()}, "
        f"{os.cpu_count()} CPUs, num_workers={workers}; "
        f"notebook_sched {notebook_sched.__version__}, dask {dask.__version__}",
    ]
    blas_env = {k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS", "OMP_", "MKL_"))}
    if blas_env:
        listed = " ".join(f"{k}={v}" for k, v in sorted(blas_env.items()))
        lines.append(f"BLAS environment: {listed}")
    lines.append(_blas_line())
    return lines


def _blas_line() -> str:
    try:
        import numpy
    except ImportError:
        return "numpy: not installed"
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        threadpool_info = None
    if threadpool_info is not None:
        pools = [
            f"{p.get('internal_api')} {p.get('version')} ({p.get('architecture')}, "
            f"{p.get('num_threads')} threads)"
            for p in threadpool_info()
        ]
        return f"numpy {numpy.__version__}; thread pools: {'; '.join(pools) or 'none'}"
    try:
        config = numpy.show_config(mode="dicts")
        blas = config["Build Dependencies"]["blas"]
        built = f"{blas.get('name')} {blas.get('version')}"
    except Exception:
        built = "unknown BLAS"
    return (
        f"numpy {numpy.__version__} built with {built} "
        f"(threadpoolctl not installed: runtime kernel and thread count not shown)"
    )
