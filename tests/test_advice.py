"""advise(): verdicts per prefix and a recommendation, from real runs on sync and threads."""

from __future__ import annotations

import time

import numpy as np
import pytest

import notebook_sched as ns
from notebook_sched.diagnostics import advice_model
from notebook_sched.diagnostics.advice import BUSY, Advisor
from notebook_sched.diagnostics.costs import measured_costs

from . import workloads

pytestmark = pytest.mark.timeout(90)

MATRIX = np.random.default_rng(1).random((500, 500))


@pytest.fixture(autouse=True)
def one_blas_thread():
    """BLAS on one thread in the caller: with its own 2 threads, ``sync``'s matmul used
    both cores, so ``threads`` could gain only ~1.3x, the advice's own threshold (the
    speedup check failed at 1.28-1.29 in 2 of 5 runs).  The verdicts are about the
    GIL, not BLAS's threads."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


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
        if rec.busy < BUSY:  # a loaded machine leaves less to gain, and says so
            assert rec.speedup > 1.3, advice
        else:
            assert "The machine was busy" in advice.sentence()
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


def test_auto_advice_says_why_from_the_run_itself(no_leaks):
    # The reasons travel with the run (RunInfo.extra["routes"], noted by auto through
    # the reporter), not read from auto's session router afterwards.
    from notebook_sched.schedulers.auto import router

    router().forget()
    dsk = {("fetch", i): (fetch, i) for i in range(4)}
    with Advisor() as advisor:
        ns.get(dsk, list(dsk), scheduler="auto", num_workers=2)
    router().forget()  # the session's knowledge goes; the run's account stays
    (row,) = advisor.advice().rows
    assert row.ran_on.startswith("auto") and row.why, row


# -- issue 21 / issue 20 item 1: one number per fact, unknown GIL, a loaded machine --------


def spin(i, seconds=0.4, barrier=None):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
    if barrier is not None:  # the tasks end together: none is measured before the other
        barrier.wait(30)
    return i


@pytest.mark.parametrize("scheduler, n", [("sync", 1), ("threads", 2)])
def test_gil_work_that_ran_before_the_probe_started_is_unknown(no_leaks, scheduler, n):
    import threading

    barrier = threading.Barrier(n)
    dsk = {("spin", i): (spin, i, 0.4, barrier) for i in range(n)}
    with Advisor() as advisor:
        ns.get(dsk, list(dsk), scheduler=scheduler, num_workers=2)
    advice = advisor.advice()
    (row,) = advice.rows
    assert row.verdict is None and row.gil_busy is None and row.cpu is not None, advice
    assert "GIL unknown" in repr(advice) and "releases the GIL" not in repr(advice)
    assert advice.recommendation is None
    assert "GIL share of spin is unknown" in advice.sentence()


def test_advice_under_load_accounts_for_the_cpus_this_process_gets(no_leaks):
    from .test_hostile_round3 import cpu_hogs

    dsk = {("spin", i): (spin, i, 0.05) for i in range(8)}
    with cpu_hogs(3):
        with Advisor() as advisor:
            ns.get(dsk, list(dsk), scheduler="sync")
        advice = advisor.advice()
    rec = advice.recommendation
    assert rec is not None and advice.rows[0].verdict == "holds-gil", advice
    assert rec.busy >= BUSY and "The machine was busy" in advice.sentence(), advice
    # GIL-bound work cannot beat sync on threads, loaded or not: the model must not
    # build a prediction from the CPU seconds alone (0.82 s against 3.40 s measured).
    # (Not 1.0: under load the probe's own thread waits too, and reads a lower share.)
    threads = advice_model.predict(
        advisor.samples()[0], "threads", 2, measured_costs(), load=machine_load_of(advisor)
    )
    assert threads >= 0.5 * rec.measured_seconds, advice


def machine_load_of(advisor):
    from notebook_sched.diagnostics.advice import machine_load

    samples, ran_on, workers, _ = advisor.samples()
    return machine_load(samples, ran_on, workers)


def _row(prefix, verdict, gil, wall=1.0, cpu=1.0, why=""):
    from notebook_sched.diagnostics.advice import AdviceRow

    return AdviceRow(prefix, 12, wall, cpu, gil, 0, verdict, "auto: threads", why)


def test_sentences_use_the_tables_numbers_and_the_deciding_reason():
    from notebook_sched.diagnostics.advice import Advice, Recommendation, deciding_row, describe

    rows = [
        _row("np_work", "releases-gil", 0.024, wall=2.0),  # the longest, but not the reason
        _row("py_loop", "holds-gil", 0.9749),
    ]
    assert deciding_row(rows, "processes").prefix == "py_loop"
    assert deciding_row(rows, "threads").prefix == "np_work"
    reason = describe(deciding_row(rows, "processes"))
    advice = Advice(rows, Recommendation("processes", 2, 0.5, 1.0, "sync", 2.0, reason))
    table = repr(advice)
    assert "97%" in table and "py_loop holds the GIL 97% of its time" in advice.sentence()
    assert "2%" in table and describe(rows[0]) == "np_work releases the GIL (2% GIL busy)"
    # After auto: did it do well, against the best prediction?
    good = Advice(rows, Recommendation("threads", 2, 0.95, 1.0, "auto", 1.05, "x"))
    assert good.sentence().startswith("auto did well: auto took 1.00 s; the best other")
    bad = Advice(rows, Recommendation("processes", 2, 0.5, 1.0, "auto", 2.0, reason))
    assert bad.sentence().startswith("auto could do better: auto took 1.00 s")
    assert "py_loop holds the GIL 97%" in bad.sentence()


def test_load_stretch():
    from notebook_sched.diagnostics.advice_model import Load

    quiet = Load(cores=2, share=1.0, runnable=1)
    assert quiet.stretch(2) == 1.0
    hogged = Load(cores=2, share=0.5, runnable=1)  # three hogs beside one thread of ours
    assert hogged.others == pytest.approx(3.0)
    assert hogged.stretch(1) == pytest.approx(1.0)
    assert hogged.stretch(2) == pytest.approx(0.5 / 0.4)
