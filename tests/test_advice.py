"""advise(): verdicts per prefix and a recommendation, from real runs on sync and threads."""

from __future__ import annotations

import time

import numpy as np
import pytest

import notebook_sched as ns
from notebook_sched.diagnostics.advice import Advisor

from . import workloads

pytestmark = pytest.mark.timeout(90)

MATRIX = np.random.default_rng(1).random((500, 500))


def parse(i):
    # pure Python, ~12 ms: holds the GIL (the probe starts after the first long task, so
    # a run needs a few of them to be sampled)
    return workloads.parse(i, n=400_000)


def matmul(i):
    for _ in range(4):
        MATRIX @ MATRIX  # BLAS: releases the GIL
    return i


def fetch(i):
    time.sleep(0.02)  # waits
    return i


def advice_for(func, scheduler, n=12):
    dsk = {(func.__name__, i): (func, i) for i in range(n)}
    with Advisor() as advisor:
        ns.get(dsk, list(dsk), scheduler=scheduler, num_workers=2)
    return advisor.advice()


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
@pytest.mark.parametrize(
    "func, verdict, best",
    [
        (parse, "holds-gil", "processes"),
        (matmul, "releases-gil", "threads"),
        (fetch, "waits", "threads"),
    ],
)
def test_verdict_and_recommendation(no_leaks, scheduler, func, verdict, best):
    advice = advice_for(func, scheduler)
    (row,) = advice.rows
    assert row.prefix == func.__name__
    assert row.tasks == 12
    assert row.ran_on == scheduler
    assert row.verdict == verdict, advice
    rec = advice.recommendation
    assert rec.backend == best, advice
    assert rec.predicted_seconds > 0
    if best != scheduler:
        assert rec.speedup > 1.3, advice
        assert f"on {best} (2 workers)" in advice.sentence()
    text, page = repr(advice), advice._repr_html_()
    assert func.__name__ in text and advice.sentence() in text
    assert "<table>" in page and "<td>" + func.__name__ + "</td>" in page


@pytest.mark.parametrize(
    "func, verdict", [(fetch, "waits"), (parse, "holds-gil"), (matmul, "releases-gil")]
)
def test_processes_runs_are_measured_in_the_workers(no_leaks, func, verdict):
    # Each worker's probe starts with its first long task, so a few tasks per worker.
    advice = advice_for(func, "processes", n=8)
    (row,) = advice.rows
    assert row.cpu is not None and row.gil_busy is not None, advice
    assert row.verdict == verdict, advice
    assert row.ran_on == "processes"
    assert advice.recommendation is not None, advice


def test_an_advisor_that_saw_no_run_says_so():
    with pytest.raises(LookupError, match="compute inside it"):
        Advisor().advice()


def test_advise_after_a_compute_with_measuring_on(no_leaks):
    from notebook_sched.diagnostics import advice as advice_module

    advice_module._last_advisor = None
    with pytest.raises(LookupError, match="advise=True"):
        ns.advise()
    dsk = {("fetch", i): (fetch, i) for i in range(6)}
    ns.get(dsk, list(dsk), scheduler="threads")  # not measured: advise is off
    with pytest.raises(LookupError):
        ns.advise()
    with ns.config.set(advise=True):
        ns.get(dsk, list(dsk), scheduler="sync")
    advice = ns.advise()
    (row,) = advice.rows
    assert (row.prefix, row.tasks, row.verdict, row.ran_on) == ("fetch", 6, "waits", "sync")
    assert advice.recommendation.backend in ("threads", "auto")
    with pytest.raises(TypeError, match="takes an Advisor"):
        ns.advise("threads")
    with pytest.raises(ValueError, match="True, False or None"):
        ns.config.set(advise="yes")


class Measured(ns.events.Observer):
    def __init__(self):
        self.records = []

    def task_measured(self, record):
        self.records.append(
            (record.key, record.worker, record.stop - record.start, record.cpu, record.starved)
        )


@pytest.mark.parametrize("scheduler", ["sync", "threads", "auto"])
def test_task_measured_samples_short_tasks_and_measures_every_long_one(scheduler, no_leaks):
    from notebook_sched.task_runner import SAMPLE_EVERY

    n = 20 * SAMPLE_EVERY
    short = {("inc", i): (abs, i) for i in range(n)}
    seen = Measured()
    ns.get(short, list(short), scheduler=scheduler, num_workers=2, observers=[seen])
    assert 1 <= len(seen.records) <= 4 * n // SAMPLE_EVERY  # a sample, not every task
    long = {("fetch", i): (fetch, i) for i in range(12)}  # 20 ms each: all measured
    seen = Measured()
    ns.get(long, list(long), scheduler=scheduler, num_workers=2, observers=[seen])
    assert sorted(r[0] for r in seen.records) == sorted(long)
    for _key, _worker, wall, cpu, starved in seen.records:
        assert wall >= 0.015 and 0.0 <= cpu < wall and starved >= 0.0


def test_processes_measure_cpu_in_the_workers(no_leaks):
    seen = Measured()
    long = {("fetch", i): (fetch, i) for i in range(4)}
    long.update({("parse", i): (parse, i) for i in range(4)})
    ns.get(long, list(long), scheduler="processes", num_workers=2, observers=[seen])
    assert sorted(map(str, (r[0] for r in seen.records))) == sorted(map(str, long))
    by_kind = {r[0][0]: r for r in seen.records}
    _key, worker, wall, cpu, starved = by_kind["fetch"]
    assert worker.startswith("process-") and wall >= 0.015 and cpu < 0.5 * wall
    _key, _worker, wall, cpu, starved = by_kind["parse"]
    # On a CPU in the worker, or runnable and waiting for one (a loaded machine starves
    # workers: the worker's meter reads its run-queue time too).
    assert starved is not None and cpu + starved > 0.5 * wall
    short = {("inc", i): (abs, i) for i in range(2000)}
    seen = Measured()
    ns.get(short, list(short), scheduler="processes", num_workers=2, observers=[seen])
    assert 1 <= len(seen.records) < 200  # a sample of the short ones


def test_advice_counts_every_task_though_few_are_measured(no_leaks):
    n = 3000
    dsk = {("inc", i): (abs, i) for i in range(n)}
    with Advisor() as advisor:
        ns.get(dsk, list(dsk), scheduler="threads", num_workers=2)
    (row,) = advisor.advice().rows
    assert row.prefix == "inc" and row.tasks == n


def test_a_processes_run_shows_worker_cpu_waiting_and_the_gil(no_leaks):
    dsk = {("fetch", i): (fetch, i) for i in range(4)}
    dsk.update({("parse", i): (parse, i) for i in range(4)})
    with Advisor() as advisor:
        ns.get(dsk, list(dsk), scheduler="processes", num_workers=2)
    rows = {r.prefix: r for r in advisor.advice().rows}
    assert rows["fetch"].verdict == "waits" and rows["fetch"].cpu is not None
    assert rows["parse"].cpu is not None and rows["parse"].cpu > 0.2 * rows["parse"].wall
    # measured by the workers' own probes (measure.py), not the caller's
    assert rows["parse"].gil_busy is not None and rows["parse"].verdict == "holds-gil"


@pytest.mark.parametrize(
    "func, verdict", [(fetch, "waits"), (parse, "holds-gil"), (matmul, "releases-gil")]
)
def test_distributed_runs_are_measured_in_the_cluster_workers(no_leaks, func, verdict):
    advice = advice_for(func, "distributed", n=8)
    (row,) = advice.rows
    assert row.ran_on == "distributed"
    assert row.cpu is not None and row.gil_busy is not None, advice
    assert row.verdict == verdict, advice
    assert row.bytes_out > 0, advice
    assert advice.recommendation is not None, advice


@pytest.mark.parametrize("kind", ["threads", "processes"])
@pytest.mark.parametrize("func, verdict", [(fetch, "waits"), (parse, "holds-gil")])
def test_executor_runs_are_measured_where_the_tasks_ran(no_leaks, kind, func, verdict):
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    make = ThreadPoolExecutor if kind == "threads" else ProcessPoolExecutor
    dsk = {(func.__name__, i): (func, i) for i in range(8)}
    with make(2) as pool, Advisor() as advisor:
        ns.get(dsk, list(dsk), scheduler=pool)
    advice = advisor.advice()
    (row,) = advice.rows
    assert row.cpu is not None and row.gil_busy is not None, advice
    assert row.verdict == verdict, advice


@pytest.mark.parametrize("scheduler, hinted", [("threads", True), ("distributed", False)])
def test_automatic_hints_follow_local_runs_only(no_leaks, monkeypatch, scheduler, hinted):
    from notebook_sched.diagnostics import advice as module

    shown = []
    monkeypatch.setattr(module, "ADVICE_AFTER", 0.0)
    monkeypatch.setattr(module, "HINT_GAIN", 1.1)
    monkeypatch.setattr(module, "_hinted", set())
    monkeypatch.setattr(module, "show_hint", shown.append)
    dsk = {("parse", i): (parse, i) for i in range(8)}
    with Advisor() as advisor:
        ns.get(dsk, list(dsk), scheduler=scheduler, num_workers=2)
    assert advisor.advice().recommendation.backend in ("processes", "auto")  # worth a hint
    module._maybe_hint(advisor)
    assert len(shown) == (1 if hinted else 0)
