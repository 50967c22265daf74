"""Dead workers, tasks that kill workers, and interrupts, on a real local cluster."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from notebook_sched.distributed import Client, KilledWorker, LocalCluster

from .helpers import alive as _alive
from .helpers import wait_for


def slow_inc(x, seconds=0.01):
    time.sleep(seconds)
    return x + 1


def add(x, y):
    return x + y


def suicide(x):
    os.kill(os.getpid(), signal.SIGKILL)
    return x


def ticking(path, seconds):
    """Append to ``path`` every 20 ms for ``seconds``: shows whether it still runs."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with open(path, "a") as f:
            f.write(".")
        time.sleep(0.02)
    return seconds


def tree_graph(leaves, seconds):
    dsk = {("leaf", i): (slow_inc, i, seconds) for i in range(leaves)}
    names = [("leaf", i) for i in range(leaves)]
    level = 0
    while len(names) > 1:
        level += 1
        new = []
        for j in range(0, len(names), 2):
            key = ("sum", level, j)
            dsk[key] = (
                (add, names[j], names[j + 1]) if j + 1 < len(names) else (slow_inc, names[j], 0)
            )
            new.append(key)
        names = new
    return dsk, names[0]


@pytest.mark.timeout(60)
def test_sigkill_in_the_middle_of_a_graph_gives_the_right_answer(no_leaks):
    dsk, root = tree_graph(128, 0.01)
    expected = _expected(dsk, root)
    with LocalCluster(n_workers=2) as cluster, Client(cluster) as client:
        victim = cluster.pids[0]
        killer = threading.Timer(0.3, os.kill, (victim, signal.SIGKILL))
        killer.start()
        start = time.monotonic()
        assert client.get(dsk, root) == expected
        assert time.monotonic() - start > 0.3  # the kill happened mid-graph
        killer.join()
        wait_for(lambda: len(cluster.workers) == 2 and victim not in cluster.pids)
        assert all(w.status == "running" for w in cluster.workers)
        assert client.get(dsk, root) == expected  # and the replacement works


def _expected(dsk, root):
    from notebook_sched.schedulers.sync import get

    return get(dsk, root)


@pytest.mark.timeout(60)
def test_data_held_only_by_a_dead_worker_is_recomputed(no_leaks):
    with LocalCluster(n_workers=2) as cluster, Client(cluster) as client:
        a = client.submit(slow_inc, 1)
        b = client.submit(slow_inc, a)
        assert b.result() == 3
        holder = client.who_has([b])[b.key]
        pid = next(w.pid for w in cluster.workers if w.name == holder)
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: pid not in cluster.pids)
        assert b.result(timeout=10) == 3
        assert client.submit(add, a, b).result(timeout=10) == 5


@pytest.mark.timeout(60)
def test_a_task_that_kills_every_worker_fails_after_three(no_leaks):
    with LocalCluster(n_workers=2) as cluster, Client(cluster) as client:
        with pytest.raises(KilledWorker) as info:
            client.get({"x": 1, "deadly": (suicide, "x")}, "deadly")
        message = str(info.value)
        assert "'deadly'" in message and "3 different workers" in message
        assert "SIGKILL" in message
        wait_for(lambda: len(cluster.workers) == 2)
        assert client.get({"x": (slow_inc, 1)}, "x") == 2


@pytest.mark.timeout(60)
def test_interrupt_cancels_the_graph_and_stops_the_workers(no_leaks, tmp_path):
    with LocalCluster(n_workers=2) as cluster, Client(cluster) as client:
        dsk = {f"t{i}": (ticking, str(tmp_path / f"t{i}"), 20.0) for i in range(6)}
        sent: list[float] = []

        def interrupt_once_both_workers_run_a_task():
            # Not at a fixed time: under load the workers may not have started yet.
            deadline = time.monotonic() + 30
            while len(list(tmp_path.iterdir())) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            sent.append(time.monotonic())
            os.kill(os.getpid(), signal.SIGINT)

        timer = threading.Thread(target=interrupt_once_both_workers_run_a_task, daemon=True)
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            client.get(dsk, list(dsk))
        assert time.monotonic() - sent[0] < 1.5  # control back soon after the interrupt
        timer.join()
        # What the workers execute (shared memory), not the scheduler's view, which
        # forgets the run's tasks as soon as it is released.
        wait_for(lambda: not cluster.executing(), timeout=2)
        assert not any(w.running or w.queued for w in cluster.workers)
        sizes = [p.stat().st_size for p in sorted(tmp_path.iterdir())]
        assert len(sizes) == 2  # two workers each started one task; the rest never ran
        time.sleep(0.3)
        assert [p.stat().st_size for p in sorted(tmp_path.iterdir())] == sizes
        assert client.get({"x": (slow_inc, 1)}, "x") == 2  # the next compute works


SCRIPT = """
import os, sys, time
import notebook_sched as ns

if __name__ == "__main__":
    assert ns.get({"a": (os.getpid,)}, "a", scheduler="distributed") != os.getpid()
    from notebook_sched.distributed.backend import current_cluster
    print(" ".join(map(str, current_cluster().pids)), flush=True)
    if sys.argv[1] == "hang":
        time.sleep(60)
"""


def _script_workers(tmp_path, mode):
    import subprocess
    import sys

    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    process = subprocess.Popen(
        [sys.executable, str(script), mode], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    pids = [int(pid) for pid in process.stdout.readline().split()]
    assert len(pids) == (os.cpu_count() or 1)
    return process, pids


@pytest.mark.timeout(60)
def test_the_default_cluster_is_closed_at_exit(tmp_path):
    process, pids = _script_workers(tmp_path, "exit")
    assert process.wait(30) == 0
    wait_for(lambda: not any(_alive(pid) for pid in pids))


@pytest.mark.timeout(60)
def test_a_killed_client_process_leaves_no_workers_behind(tmp_path):
    process, pids = _script_workers(tmp_path, "hang")
    assert all(_alive(pid) for pid in pids)
    process.kill()
    process.wait(10)
    wait_for(lambda: not any(_alive(pid) for pid in pids))
