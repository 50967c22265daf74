"""The threads backend keeps BLAS's own thread pool from oversubscribing the CPUs."""

from __future__ import annotations

import os

import numpy as np  # noqa: F401 - loads the BLAS library whose pool is limited
import pytest
from threadpoolctl import threadpool_info

import notebook_sched as ns


def blas_threads(_=None) -> int:
    return max(pool["num_threads"] for pool in threadpool_info())


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 CPUs to have a pool to limit")
def test_blas_threads_are_limited_during_a_threaded_run_and_restored(no_leaks):
    before = blas_threads()
    if before < 2:
        pytest.skip(f"this BLAS runs {before} thread already; nothing to limit")
    dsk = {f"t{i}": (blas_threads, i) for i in range(4)}
    seen = ns.get(dsk, list(dsk), scheduler="threads", num_workers=2)
    per_task = max(1, (os.cpu_count() or 1) // 2)
    assert set(seen) == {min(before, per_task)}
    assert blas_threads() == before
    # one worker: each task may use every core
    assert ns.get({"t": (blas_threads, 0)}, "t", scheduler="threads", num_workers=1) == before


def test_limit_is_restored_after_a_failure():
    before = blas_threads()
    with pytest.raises(ZeroDivisionError):
        ns.get(
            {"a": (blas_threads, 0), "b": (divmod, 1, 0), "c": (max, "a", "b")},
            "c",
            scheduler="threads",
            num_workers=2,
        )
    assert blas_threads() == before


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 CPUs to have a pool to limit")
def test_process_workers_limit_blas_threads_to_their_share_of_the_cpus(no_leaks):
    before = blas_threads()
    if before < 2:
        pytest.skip(f"this BLAS runs {before} thread already; nothing to limit")
    dsk = {f"t{i}": (blas_threads, i) for i in range(4)}
    seen = ns.get(dsk, list(dsk), scheduler="processes", num_workers=2)
    assert set(seen) == {min(before, max(1, (os.cpu_count() or 1) // 2))}
    assert blas_threads() == before  # the caller's own pool is not touched
