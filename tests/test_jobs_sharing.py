"""Jobs share the workers: the busy total stays at ``num_workers`` and the slots go
round between jobs (``schedulers/_budget.py``).

Counted, not timed: every task appends ``s <job>`` when it starts and ``e <job>``
when it ends to one log file (``O_APPEND``: lines from threads and worker processes
land whole and in order), and the tests read who ran beside whom from the order of
the lines.  A pure model test checks the targets with no thread at all.
"""

from __future__ import annotations

import os
import time

import pytest

import notebook_sched as ns
from notebook_sched.schedulers._budget import Budget

from .helpers import wait_for

pytestmark = [pytest.mark.usefixtures("no_leaks"), pytest.mark.timeout(120)]


def logged(tag, i, seconds, path):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"s {tag}\n".encode())
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:  # holds the GIL: pure-Python work
            pass
        os.write(fd, f"e {tag}\n".encode())
    finally:
        os.close(fd)
    return i


def logged_graph(tag, n, seconds, path):
    dsk = {f"{tag}-{i}": (logged, tag, i, seconds, path) for i in range(n)}
    dsk["total"] = (sum, [f"{tag}-{i}" for i in range(n)])
    return dsk


def events(path) -> list[tuple[str, str]]:
    with open(path) as f:
        return [tuple(line.split()) for line in f if line.strip()]


def peak_running(log) -> int:
    running = peak = 0
    for kind, _tag in log:
        running += 1 if kind == "s" else -1
        peak = max(peak, running)
    return peak


def starts_while_all_ran(log, tags) -> dict:
    """Tasks each job started while every one of ``tags`` had started and none had
    finished its last task."""
    first = {tag: min(n for n, (k, t) in enumerate(log) if t == tag) for tag in tags}
    last = {tag: max(n for n, (k, t) in enumerate(log) if t == tag) for tag in tags}
    lo, hi = max(first.values()), min(last.values())
    counts = dict.fromkeys(tags, 0)
    for kind, tag in log[lo:hi]:
        if kind == "s":
            counts[tag] += 1
    return counts


def test_targets_serve_the_foreground_first_and_turn_the_odd_slot_round():
    budget = Budget()
    jobs = [budget.join(2, background=True) for _ in range(3)]
    assert all(job.capped for job in jobs)
    turns = []
    for _ in range(30):  # each job takes a slot when owed one, then gives it back
        with budget.cond:
            targets = budget.targets()
        owed = [n for n, job in enumerate(jobs) if targets[job]]
        assert len(owed) == 2
        turns.append(owed)
        for n in owed:
            assert jobs[n].try_take()
        for n in owed:
            jobs[n].give()
    served = [sum(n in owed for owed in turns) for n in range(3)]
    assert max(served) - min(served) <= 1, f"the odd slot stayed with some jobs: {served}"
    cell = budget.join(2, background=False)
    with budget.cond:
        targets = budget.targets()
    assert targets[cell] == 2 and not any(targets[job] for job in jobs)
    for member in [*jobs, cell]:
        member.leave()
    assert budget.members == []


def test_a_lone_run_is_not_capped_and_a_nested_run_does_not_join():
    from notebook_sched.schedulers._budget import IN_TASK

    budget = Budget()
    alone = budget.join(4, background=False)
    assert not alone.capped
    token = IN_TASK.set(True)
    try:
        nested = budget.join(4, background=True)
    finally:
        IN_TASK.reset(token)
    assert nested.budget is None and budget.members == [alone] and not alone.capped
    alone.leave()


@pytest.mark.parametrize("scheduler", ["threads", "processes", "auto"])
def test_three_jobs_on_two_workers_take_turns_and_never_run_more_than_two(
    scheduler, tmp_path, warm
):
    path = str(tmp_path / "log")
    jobs = [
        ns.submit(logged_graph(tag, 36, 0.02, path), "total", scheduler=scheduler, num_workers=2)
        for tag in "abc"
    ]
    for job in jobs:
        assert job.result(90) == sum(range(36))
    log = events(path)
    assert len(log) == 2 * 3 * 36
    assert peak_running(log) <= 2, "more tasks ran at once than num_workers"
    counts = starts_while_all_ran(log, "abc")
    total = sum(counts.values())
    assert total >= 12, f"the jobs hardly overlapped: {counts}"
    assert min(counts.values()) >= 0.2 * total, f"a job waited for the older ones: {counts}"


def test_a_threads_job_and_a_processes_job_share_one_budget(tmp_path, warm):
    path = str(tmp_path / "log")
    a = ns.submit(logged_graph("a", 30, 0.02, path), "total", scheduler="threads", num_workers=2)
    b = ns.submit(logged_graph("b", 30, 0.02, path), "total", scheduler="processes", num_workers=2)
    assert a.result(60) == b.result(60) == sum(range(30))
    log = events(path)
    assert peak_running(log) <= 2
    counts = starts_while_all_ran(log, "ab")
    assert min(counts.values()) >= 0.25 * sum(counts.values()), counts


@pytest.mark.parametrize("scheduler", ["threads", "processes"])
def test_a_foreground_compute_gets_its_share_beside_jobs(scheduler, tmp_path, warm):
    path = str(tmp_path / "log")
    jobs = [
        ns.submit(logged_graph(tag, 200, 0.02, path), "total", scheduler=scheduler, num_workers=2)
        for tag in "ab"
    ]
    wait_for(lambda: all(job.progress[0] > 2 for job in jobs), 30)
    assert ns.get(logged_graph("fg", 20, 0.02, path), "total", scheduler=scheduler) == 190
    log = events(path)
    assert peak_running(log) <= 2
    first = log.index(("s", "fg"))
    last = max(n for n, event in enumerate(log) if event == ("e", "fg"))
    window = [tag for kind, tag in log[first:last] if kind == "s"]
    assert window.count("fg") >= 0.6 * len(window), f"the foreground waited: {window}"
    for job in jobs:
        assert job.cancel()
        assert job._ran.wait(5)


@pytest.mark.parametrize("scheduler, workers", [("sync", 1), ("distributed", 2)])
def test_two_jobs_share_the_workers_on_sync_and_the_cluster(scheduler, workers, tmp_path, warm):
    path = str(tmp_path / "log")
    jobs = [
        ns.submit(
            logged_graph(tag, 24, 0.02, path), "total", scheduler=scheduler, num_workers=workers
        )
        for tag in "ab"
    ]
    for job in jobs:
        assert job.result(90) == sum(range(24))
    log = events(path)
    assert peak_running(log) <= workers
    counts = starts_while_all_ran(log, "ab")
    assert min(counts.values()) >= 0.25 * sum(counts.values()), counts
