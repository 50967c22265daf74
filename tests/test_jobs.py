"""Background jobs (``ns.submit``) on every local backend: results, futures, cancel,
failures and their local rerun, settings captured at submit, nested submits.

Each test has a timeout and a leak check (``no_leaks``): a job's thread, its workers'
tasks and the view's ticker must all be gone when the test ends.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import CancelledError, as_completed, wait

import pytest

import notebook_sched as ns

from .helpers import alive, local_backends, wait_for

jobs_module = importlib.import_module("notebook_sched.background")  # ns.jobs is the function

pytestmark = [pytest.mark.usefixtures("no_leaks"), pytest.mark.timeout(60)]

BACKENDS = [*local_backends(), "auto"]  # sync, threads, processes, distributed (if it loads)


def spin(i, seconds=0.02):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    return i


def sleeper_writing_marker(i, directory, seconds=1.5):
    time.sleep(seconds)
    with open(os.path.join(directory, f"done-{i}"), "w") as f:
        f.write("finished")
    return i


def divide(a, b):
    ratio = a / b
    return ratio


def graph(n=12, seconds=0.02, tag="t"):
    dsk = {f"{tag}-{i}": (spin, i, seconds) for i in range(n)}
    dsk["total"] = (sum, [f"{tag}-{i}" for i in range(n)])
    return dsk


def where_it_ran():
    return threading.current_thread().name


@pytest.fixture
def backend(request, warm):
    return request.param


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_submit_returns_a_future_with_the_result(backend):
    job = ns.submit(graph(), "total", scheduler=backend, num_workers=2)
    assert isinstance(job, jobs_module.Job)
    assert job.result(30) == sum(range(12))
    assert job.done() and not job.cancelled() and job.exception() is None
    assert job.state == "finished" and job.progress == (12 + 1, 12 + 1)
    assert f"{backend} finished in" in repr(job) and ": int" in repr(job)
    assert job in ns.jobs()


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_other_computes_run_while_a_job_runs_and_it_still_finishes_right(backend):
    job = ns.submit(graph(60, 0.02), "total", scheduler=backend, num_workers=2)
    wait_for(lambda: job.progress[0] > 0, 30)
    for n in range(3):  # the cells the user runs meanwhile
        assert ns.get(graph(4, 0.001, f"fg{n}"), "total", scheduler="sync") == 6
    assert job.result(60) == sum(range(60))
    assert job.state == "finished" and job.progress == (61, 61)


def test_a_job_is_awaitable_and_works_with_wait_and_callbacks():
    called = threading.Event()
    first = ns.submit(graph(4), "total", scheduler="threads")
    first.add_done_callback(lambda f: called.set())
    second = ns.submit(ns.delayed(sum)([1, 2, 3]), scheduler="sync")

    async def both():
        return await first, await second

    assert asyncio.run(both()) == (6, 6)
    done, _ = wait([first, second], timeout=10)
    assert done == {first, second}
    assert {f.result() for f in as_completed([first, second], timeout=10)} == {6}
    assert called.wait(5)


def test_several_collections_give_a_tuple_and_one_gives_its_result():
    a = ns.delayed(sum)([1, 2])
    b = ns.delayed(len)("abcd")
    assert ns.submit(a, b, scheduler="sync").result(10) == (3, 4)
    assert ns.submit(a, scheduler="sync").result(10) == 3


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_cancel_mid_run_stops_within_half_a_second_and_the_next_compute_works(backend, tmp_path):
    if backend in ("processes", "distributed"):  # tasks in other processes: long sleeps
        dsk = {f"s{i}": (sleeper_writing_marker, i, str(tmp_path)) for i in range(6)}
        dsk["total"] = (sum, [f"s{i}" for i in range(6)])
    else:  # pure Python, short tasks: threads stop at the next task boundary
        dsk = graph(400, 0.01)
    job = ns.submit(dsk, "total", scheduler=backend, num_workers=2)
    wait_for(lambda: job.state == "running", 10)
    time.sleep(0.4)
    start = time.monotonic()
    assert job.cancel()
    assert time.monotonic() - start < 0.6, "cancel() must give control back at once"
    assert job.cancelled() and job.state == "cancelled"
    with pytest.raises(CancelledError):
        job.result(1)
    assert job._ran.wait(2)
    done = job.progress[0]
    time.sleep(0.3)
    assert job.progress[0] == done, "tasks kept finishing after the cancel"
    if backend in ("processes", "distributed"):
        time.sleep(1.5)  # longer than a task: a surviving one would write its marker
        assert list(tmp_path.iterdir()) == []
    else:
        assert done < 400
    assert ns.get(graph(4), "total", scheduler=backend, num_workers=2) == 6


def test_cancel_before_start_and_after_the_end():
    job = ns.submit(graph(2), "total", scheduler="sync")
    job.result(10)
    assert not job.cancel() and job.state == "finished"
    assert ns.cancel_all() == 0


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_a_failing_job_raises_the_task_error_and_reruns_locally(backend):
    dsk = {"a": 1, "b": 0, "ratio-1": (divide, "a", "b")}
    job = ns.submit(dsk, "ratio-1", scheduler=backend, num_workers=2)
    with pytest.raises(ZeroDivisionError):
        job.result(30)
    assert job.state == "failed" and "ZeroDivisionError" in repr(job)
    failure = job.failure()
    assert failure is not None and failure.key == "ratio-1" and failure.backend == backend
    with pytest.raises(ZeroDivisionError) as info:
        job.debug()
    tb = info.value.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    assert tb.tb_frame.f_code.co_name == "divide"  # the task's own frame, for %debug
    assert tb.tb_frame.f_locals == {"a": 1, "b": 0}


def test_debug_on_a_job_that_did_not_fail_says_so():
    job = ns.submit(graph(2), "total", scheduler="sync")
    job.result(10)
    with pytest.raises(RuntimeError, match="no failed task"):
        job.debug()


@pytest.mark.usefixtures("warm")
def test_two_jobs_share_the_process_workers_fairly():
    shares = []
    a = ns.submit(graph(40, 0.025, "a"), "total", scheduler="processes", num_workers=2)
    b = ns.submit(graph(40, 0.025, "b"), "total", scheduler="processes", num_workers=2)
    wait_for(lambda: a.progress[0] > 2 and b.progress[0] > 2, 20)
    start = (a.progress[0], b.progress[0])
    while not (a.done() or b.done()):
        time.sleep(0.02)
        shares.append((a.progress[0] - start[0], b.progress[0] - start[1]))
    assert a.result(30) == b.result(30) == sum(range(40))
    ran_a, ran_b = shares[-1]
    assert ran_a + ran_b > 10
    assert min(ran_a, ran_b) / (ran_a + ran_b) >= 0.3, f"unfair share: {shares[-1]}"


@pytest.mark.usefixtures("warm")
def test_a_foreground_compute_gets_workers_while_a_job_runs():
    job = ns.submit(graph(150, 0.025, "bg"), "total", scheduler="processes", num_workers=2)
    wait_for(lambda: job.progress[0] > 5, 20)
    start = time.monotonic()
    assert ns.get(graph(10, 0.02, "fg"), "total", scheduler="processes", num_workers=2) == 45
    assert time.monotonic() - start < 5.0
    assert not job.done(), "the job should still be running beside the foreground"
    assert job.cancel()
    assert job._ran.wait(5)


def test_settings_and_graph_are_captured_at_submit():
    dsk = {"who": (where_it_ran,)}
    with ns.config.set(scheduler="sync"):
        job = ns.submit(dsk, "who")
    dsk["who"] = (len, "changed")  # a later edit of the user's dict
    assert job.backend == "sync" and job.options["scheduler"] == "sync"
    assert job.result(10).startswith("notebook_sched-job-")  # sync: the job's own thread


def test_a_background_cell_s_settings_stay_in_its_job():
    started, release = threading.Event(), threading.Event()

    def cell():
        started.set()
        release.wait(10)
        return ns.get({"who": (where_it_ran,)}, "who")

    job = jobs_module.submit_call(cell, {"scheduler": "sync"})
    assert started.wait(10)
    assert ns.config.get("scheduler") != "sync", "the job's scope leaked to the caller"
    release.set()
    assert job.result(10).startswith("notebook_sched-job-")  # sync: the job's thread
    assert job.progress == (1, 1)  # its computes count in its progress


def test_submit_from_inside_a_task_and_a_job_that_submits_jobs():
    def inner(n):
        return ns.submit(graph(n), "total", scheduler="threads", num_workers=2).result(20)

    dsk = {f"i{n}": (inner, n) for n in (2, 3, 4)}
    dsk["all"] = (sum, ["i2", "i3", "i4"])
    assert ns.submit(dsk, "all", scheduler="threads", num_workers=2).result(30) == 1 + 3 + 6
    assert ns.submit(dsk, "all", scheduler="sync").result(30) == 10


def test_a_finished_job_is_forgotten_once_dropped():
    import gc
    import weakref

    job = ns.submit(graph(2), "total", scheduler="sync")
    assert job.result(10) == 1 and job in ns.jobs()
    ref = weakref.ref(job)
    del job
    gc.collect()
    assert ref() is None, "a finished job (and its result) must be freed once dropped"
    kept = ns.submit(graph(2), "total", scheduler="sync")
    assert kept.result(10) == 1
    jobs_module.drop(kept)
    assert kept not in ns.jobs() and kept.state == "finished"


def test_bad_arguments_say_what_to_write():
    with pytest.raises(TypeError, match="needs something to compute"):
        ns.submit()
    with pytest.raises(TypeError, match=r"submit\(dsk, 'z'\)"):
        ns.submit({"x": 1})


def test_jobs_lists_them_with_a_table_and_cancel_all_stops_them():
    long = ns.submit(graph(300, 0.01, "long"), "total", scheduler="threads", num_workers=2)
    wait_for(lambda: long.state == "running", 10)
    listing = ns.jobs()
    assert long in listing and "<table>" in listing._repr_html_()
    assert long.name in repr(listing)
    assert ns.cancel_all() == 1
    assert long.cancelled()
    assert long._ran.wait(5)


def test_a_script_exiting_with_a_running_job_leaves_no_process(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(
        "import time, notebook_sched as ns\n"
        "from notebook_sched.schedulers import _pool\n"
        "def nap(i):\n    time.sleep(5)\n    return i\n"
        "if __name__ == '__main__':\n"
        "    job = ns.submit({f'n{i}': (nap, i) for i in range(4)}, ['n0', 'n1'],\n"
        "                    scheduler='processes', num_workers=2, progress=True)\n"
        "    while job.progress[1] == 0 or not _pool._pool:\n"
        "        time.sleep(0.05)\n"
        "    time.sleep(0.5)\n"
        "    print(*[w.process.pid for w in _pool._pool.workers], flush=True)\n"
    )
    start = time.monotonic()
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=30, check=True
    )
    assert time.monotonic() - start < 15
    pids = [int(p) for p in out.stdout.split()]
    assert pids and "cancelled" in out.stderr  # the text line of progress=True
    wait_for(lambda: not any(alive(pid) for pid in pids), 5)
