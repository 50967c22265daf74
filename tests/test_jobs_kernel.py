"""Background jobs in a real IPython kernel: the bar stays in the submitting cell and
keeps moving while later cells run, task output goes to that cell, ``%%schedule
--background``, ``%sched_jobs``, ``%sched_rerun JOB``, a cleared output, and a kernel
restart with jobs running (no process left)."""

from __future__ import annotations

import time

import pytest

from .helpers import alive, wait_for
from .kernel_helpers import models, running_kernel

pytestmark = pytest.mark.timeout(120)

SETUP = """\
import time, threading
import notebook_sched as ns
%load_ext notebook_sched
def step(i, seconds=0.05):
    time.sleep(seconds)
    print(f'task {i} on', threading.current_thread().name, flush=True)
    return i
def slow_graph(n, seconds=0.05):
    dsk = {f'step-{i}': (step, i, seconds) for i in range(n)}
    dsk['total'] = (sum, [f'step-{i}' for i in range(n)])
    return dsk
def spin_print(i, seconds=0.05):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    print(f'task {i} in', __import__('os').getpid(), flush=True)
    print(f'warn {i}', file=__import__('sys').stderr)
    return i
def spin_graph(n, seconds=0.05):
    dsk = {f'spin-{i}': (spin_print, i, seconds) for i in range(n)}
    dsk['total'] = (sum, [f'spin-{i}' for i in range(n)])
    return dsk
"""


@pytest.fixture(scope="module")
def kernel():
    with running_kernel(SETUP) as k:
        yield k


@pytest.mark.parametrize("scheduler", ["sync", "threads", "processes", "auto", "distributed"])
def test_the_bar_moves_in_its_cell_while_later_cells_run_and_output_stays_there(kn, scheduler):
    first = kn.ok(
        f"job = ns.submit(slow_graph(40), 'total', scheduler={scheduler!r}, num_workers=2)"
    )
    later = kn.ok("x = 1 + 1\nprint('later cell')")
    assert later.stdout == "later cell\n"  # no task output leaked into this cell
    waited = kn.ok("job.result(60)")
    messages = first.messages + later.messages + waited.messages + kn.drain(1.0)
    bars = models(messages, "IntProgressModel")
    assert len(bars) == 1, "one bar, created by the submitting cell"
    (history,) = bars.values()
    values = [state["value"] for state, _ in history if "value" in state]
    assert values[-1] == 41 and len(set(values)) > 3, f"the bar did not move: {values}"
    cell_started = later.messages[0]["received"]
    moved_after = [msg["received"] for state, msg in history if msg["received"] > cell_started]
    assert moved_after, "the bar stopped updating once its cell had finished"
    prints = [
        m for m in messages if m["msg_type"] == "stream" and "task " in m["content"].get("text", "")
    ]
    assert prints and all(m["parent_header"]["msg_id"] == first.msg_id for m in prints)
    styles = [state.get("bar_style") for state, _ in history if "bar_style" in state]
    assert styles[-1] == "success"


@pytest.mark.parametrize("scheduler", ["processes", "auto", "distributed"])
def test_what_tasks_in_worker_processes_print_goes_to_the_submitting_cell(kn, scheduler):
    first = kn.ok(
        f"job = ns.submit(spin_graph(30, 0.06), 'total', scheduler={scheduler!r}, num_workers=2)"
    )
    later = kn.ok("time.sleep(0.6)\nprint('later cell')")
    assert later.stdout == "later cell\n" and later.stderr == "", "task output leaked"
    done = kn.ok("print(job.result(60), job.state)")
    assert done.stdout == "435 finished\n"
    messages = first.messages + later.messages + done.messages + kn.drain(1.0)
    streams = [m for m in messages if m["msg_type"] == "stream"]
    prints = [m for m in streams if "task " in m["content"]["text"]]
    warnings = [m for m in streams if "warn " in m["content"]["text"]]
    text = "".join(m["content"]["text"] for m in prints)
    assert sorted(int(line.split()[1]) for line in text.splitlines()) == list(range(30))
    assert all(m["parent_header"]["msg_id"] == first.msg_id for m in prints + warnings)
    assert {m["content"]["name"] for m in warnings} == {"stderr"}


def test_background_cell_returns_the_job_and_jobs_are_listed(kn):
    ex = kn.ok("%%schedule sync --background\nr = ns.get(slow_graph(5, 0.02), 'total')\nr * 2")
    assert ex.result["text/plain"].startswith("<Job 'job-") and " sync " in ex.result["text/plain"]
    kn.ok("bg = _\nassert bg.result(30) == 20, bg")
    listing = kn.ok("%sched_jobs")
    assert "job-" in listing.result["text/plain"] and "finished" in listing.result["text/plain"]


def test_a_failed_job_reruns_in_the_task_frame(kn):
    kn.ok(
        "def divide(a, b):\n    return a / b\n"
        "bad = ns.submit({'a': 1, 'b': 0, 'q': (divide, 'a', 'b')}, 'q', scheduler='processes',"
        " num_workers=1)\n"
        "try:\n    bad.result(30)\nexcept ZeroDivisionError:\n    pass"
    )
    ex = kn.execute("%sched_rerun bad")
    assert ex.error is not None and ex.error["ename"] == "ZeroDivisionError"
    kn.ok(
        "import sys\ntb = sys.last_traceback\nwhile tb.tb_next: tb = tb.tb_next\n"
        "assert tb.tb_frame.f_code.co_name == 'divide', tb.tb_frame"
    )


def test_the_stop_button_interrupts_the_foreground_cell_only(kn):
    kn.ok("going = ns.submit(slow_graph(60, 0.1), 'total', scheduler='threads', num_workers=2)")
    msg_id = kn.send("time.sleep(20)")
    time.sleep(1.0)
    kn.manager.interrupt_kernel()
    ex = kn.collect(msg_id, timeout=30)
    assert ex.error is not None and ex.error["ename"] == "KeyboardInterrupt"
    assert kn.ok("print(going.state)").stdout == "running\n"  # the job went on
    assert kn.ok("print(going.result(30), going.state)").stdout == "1770 finished\n"


@pytest.mark.parametrize("scheduler", ["sync", "threads", "processes", "auto", "distributed"])
def test_a_job_whose_cell_output_was_cleared_still_finishes(kn, scheduler):
    cell = kn.ok(
        "from IPython.display import clear_output\n"
        f"cleared = ns.submit(spin_graph(10, 0.02), 'total', scheduler={scheduler!r})\n"
        "clear_output()"
    )
    ex = kn.ok("print(cleared.result(30), cleared.state)")
    assert ex.stdout == "45 finished\n"  # none of the tasks' prints landed here
    assert "clear_output" in {m["msg_type"] for m in cell.messages}


def test_kernel_restart_with_jobs_running_leaves_no_process():
    with running_kernel(SETUP) as k:
        ex = k.ok(
            "from notebook_sched.schedulers import _pool\n"
            "jobs = [ns.submit(slow_graph(200, 0.2), 'total', scheduler='processes',"
            " num_workers=2) for _ in range(2)]\n"
            "others = [ns.submit(slow_graph(200, 0.2), 'total', scheduler=name)\n"
            "          for name in ('threads', 'sync', 'auto', 'distributed')]\n"
            "while _pool._pool is None or jobs[0].progress[0] < 1 or not all(\n"
            "        j.progress[0] for j in others):\n"
            "    time.sleep(0.05)\n"
            "from notebook_sched.distributed import defaults\n"
            "cluster = [p for d in defaults._defaults for p in d.cluster.pids]\n"
            "print('PIDS', *[w.process.pid for w in _pool._pool.workers], *cluster)"
        )
        line = next(x for x in ex.stdout.splitlines() if x.startswith("PIDS"))
        pids = [int(p) for p in line.split()[1:]]
        assert len(pids) >= 3, "the pool's and the cluster's workers"
        kernel_pid = k.manager.provisioner.process.pid
        assert pids and all(alive(p) for p in pids)
        start = time.monotonic()
        k.manager.restart_kernel(now=False)
        wait_for(lambda: not any(alive(p) for p in [*pids, kernel_pid]), 20)
        assert time.monotonic() - start < 20
