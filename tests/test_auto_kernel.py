"""%%schedule auto and %sched_advise in a real kernel."""

from __future__ import annotations

import pytest

from .kernel_helpers import Kernel

pytestmark = pytest.mark.timeout(180)

SETUP = """
import time
import notebook_sched as ns
%load_ext notebook_sched

def parse(i):
    total = 0
    for k in range(300_000):
        total += k ^ i
    return total

def fetch(i):
    time.sleep(0.01)
    return i

graph = {("parse", i): (parse, i) for i in range(10)}
graph.update({("fetch", i): (fetch, i) for i in range(10)})
"""


@pytest.fixture(scope="module")
def kernel():
    k = Kernel()
    try:
        k.ok(SETUP)
        yield k
    finally:
        k.shutdown()


def test_schedule_auto_cell_and_advice(kernel):
    kernel.ok("%sched_advise on")
    ex = kernel.ok(
        "%%schedule auto --workers 2\n"
        "prof = ns.Profiler()\n"
        "with prof:\n"
        "    out = ns.get(graph, list(graph))\n"
        "print(out == tuple(parse(i) for i in range(10)) + tuple(range(10)))\n"
        "print(sorted({r.worker.split('-')[0] for r in prof.records if r.key[0] == 'parse'}))\n"
    )
    lines = ex.stdout.strip().splitlines()
    assert lines[0] == "True"
    assert "process" in lines[1] and "thread" in lines[1]  # measured first, then moved
    ex = kernel.ok("%sched_advise")
    html = ex.result["text/html"]
    assert "<table>" in html and "parse" in html and "fetch" in html
    assert "holds the GIL" in html and "waits" in html
    assert "auto" in ex.result["text/plain"]
    kernel.ok("%sched_advise off")
    ex = kernel.execute("%sched_advise maybe")
    assert ex.status == "error" and "takes nothing" in "".join(ex.error["traceback"])
