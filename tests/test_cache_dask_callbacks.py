"""Dask's own caches and result-reading callbacks on our schedulers.

``dask.cache.Cache`` and ``dask.diagnostics.CacheProfiler`` read each task's result
and ``state["dependencies"]`` in ``posttask``; on our in-process backends they get the
real result and the state Dask documents (and ``Cache`` saves work on the next
compute, as on Dask's scheduler), and on backends whose results stay in other
processes they are refused before anything runs, with what to use instead.
"""

from __future__ import annotations

from functools import partial

import pytest

dask = pytest.importorskip("dask")
pytest.importorskip("cachey")

from dask.cache import Cache  # noqa: E402
from dask.callbacks import Callback  # noqa: E402
from dask.diagnostics import CacheProfiler  # noqa: E402

from notebook_sched.interop import dask_get  # noqa: E402

CALLS: list = []


def slow_square(x):
    CALLS.append(x)
    return x * x


def collection():
    parts = [dask.delayed(slow_square, pure=True)(i) for i in range(6)]
    return dask.delayed(sum, pure=True)(parts)


@pytest.mark.parametrize("backend", ["sync", "threads"])
def test_dask_cache_gets_real_results_and_saves_work(backend, no_leaks):
    cache = Cache(1e6)
    CALLS.clear()
    with cache:
        assert collection().compute(scheduler=partial(dask_get, scheduler=backend)) == 55
    assert sorted(CALLS) == list(range(6))
    assert sorted(v for v in cache.cache.data.values() if isinstance(v, int)) == sorted(
        [0, 1, 4, 9, 16, 25, 55]
    )
    CALLS.clear()
    with cache:
        assert collection().compute(scheduler=partial(dask_get, scheduler=backend)) == 55
    assert CALLS == []  # every task came from Dask's cache, as on Dask's scheduler


def test_cache_profiler_measures_the_results(no_leaks):
    with CacheProfiler(metric=lambda value: value) as profiler:
        collection().compute(scheduler=partial(dask_get, scheduler="threads"))
    metrics = sorted(r.metric for r in profiler.results)
    assert 55 in metrics and 25 in metrics


def test_a_callback_sees_results_and_dask_state(no_leaks):
    seen = {}

    def posttask(key, result, dsk, state, worker_id):
        seen[key] = (result, set(state["dependencies"][key]), set(state["dependents"][key]))

    total = collection()
    with Callback(posttask=posttask):
        total.compute(scheduler=partial(dask_get, scheduler="threads"))
    result, deps, dependents = seen[total.key]
    assert result == 55 and len(deps) == 6 and dependents == set()
    square_keys = [k for k in seen if str(k).startswith("slow_square")]
    assert {seen[k][0] for k in square_keys} == {0, 1, 4, 9, 16, 25}
    assert all(seen[k][2] == {total.key} for k in square_keys)


def test_result_readers_are_refused_up_front_where_results_stay_in_workers():
    CALLS.clear()
    with Cache(1e6), pytest.raises(ValueError, match="reads every task's result") as info:
        collection().compute(scheduler=partial(dask_get, scheduler="processes"))
    assert "scheduler='threads'" in str(info.value) and "cache=" in str(info.value)
    assert CALLS == []
