"""Dask in a real kernel: ``%%schedule`` sets Dask's default (with our progress bar),
and ``%%schedule dask --address`` runs on a dask.distributed cluster with ``%debug``
landing in the failed task's frame.

The cluster (worker processes, loopback only) runs in the test process; the kernel
connects to it by address, as a notebook connects to a cluster started with
``dask scheduler`` and ``dask worker``.
"""

from __future__ import annotations

import pytest

from .kernel_helpers import FAILING_TASK_CELL, LAST_TASK_FRAME, models, running_kernel

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore:Port 8787 is already in use"),
]

SLOW_BLOCKS = """
import time
import dask
import dask.array as da
def slow(block):
    time.sleep(0.05)
    return block * 2
x = da.ones((40, 40), chunks=5).map_blocks(slow)
"""


@pytest.fixture(scope="module")
def kernel():
    with running_kernel(
        "import notebook_sched as ns\n%load_ext notebook_sched\n" + SLOW_BLOCKS
    ) as k:
        yield k


def test_schedule_cell_runs_a_plain_dask_compute_on_our_backend_with_our_bar(kernel):
    ex = kernel.ok("%%schedule threads --workers 2\nfloat(x.sum().compute())")
    assert ex.result["text/plain"] == "3200.0"
    bars = models(ex.messages, "IntProgressModel")
    assert bars, "no progress bar"
    final = [{k: v for s, _ in history for k, v in s.items()} for history in bars.values()]
    assert all(f["bar_style"] == "success" and f["value"] == f["max"] for f in final)
    assert sum(f["max"] for f in final) >= 64  # every block of the array was a task of ours
    ex = kernel.ok("print(dask.config.get('scheduler', None))")
    assert ex.stdout.strip() == "None"  # Dask's own default again after the cell


def test_schedule_dask_address_runs_there_and_debugs_into_the_task(kernel, dask_cluster):
    address = dask_cluster.scheduler_address
    ex = kernel.ok(f"%%schedule dask --address {address}\nfloat(x.sum().compute())")
    assert ex.result["text/plain"] == "3200.0"
    bars = models(ex.messages, "IntProgressModel")
    assert bars, "no progress bar for the dask backend"
    ex = kernel.execute(f"%%schedule dask --address {address}\n" + FAILING_TASK_CELL)
    assert ex.status == "error" and ex.error["ename"] == "ZeroDivisionError"
    shown = "\n".join(ex.error["traceback"])
    assert "task 'scale-7' failed on the 'dask' scheduler (tcp://127.0.0.1:" in shown
    assert "it failed the same way" in shown  # the rerun's frames; the worker's are the same
    ex = kernel.ok(
        LAST_TASK_FRAME
        + "print(tb.tb_frame.f_code.co_name, sorted(tb.tb_frame.f_locals.items()))\n"
        "print(ns.last_failure().inputs, ns.config.get('scheduler'),"
        " ns.config.get('dask_address'))"
    )
    lines = ex.stdout.strip().splitlines()
    assert lines[0] == "scale_rows [('factor', 0), ('kept', [1, 3]), ('rows', [1, 0, 3])]"
    assert lines[1] == "{'rows': [1, 0, 3], 'factor': 0} threads None"  # the cell's scope ended
