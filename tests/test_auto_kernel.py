"""%%schedule auto and %sched_advise in a real kernel."""

from __future__ import annotations

import pytest

from .kernel_helpers import running_kernel

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
# The pool runs, as after a processes compute: 10 parses alone are too little work for
# auto to start it (Router.worth_starting; tests/test_auto.py covers that).
_ = ns.get({"warm": (len, "ab")}, "warm", scheduler="processes", num_workers=2)
"""


@pytest.fixture(scope="module")
def kernel():
    with running_kernel(SETUP) as k:
        yield k


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


def test_a_long_compute_that_could_go_faster_gets_one_line_of_advice(kernel):
    # Automatic advice (the default): measured because progress shows in a kernel.
    kernel.ok(
        "ns.config.set(advise=None)\n"
        "from notebook_sched.diagnostics import advice as _advice\n"
        "_advice.ADVICE_AFTER = 0.2\n"
        "_advice.HINT_GAIN = 1.1  # the mechanism under test, not the machine's speed-up"
    )
    cell = (
        "pure = {('crunch', i): (parse, i) for i in range(24)}\n"
        "_ = ns.get(pure, list(pure), scheduler='threads', num_workers=2)\n"
    )
    first = kernel.ok(cell)
    hints = [
        m["content"]["data"].get("text/html", "")
        for m in first.of_type("display_data")
        if "notebook_sched advice" in m["content"]["data"].get("text/html", "")
    ]
    assert len(hints) == 1, [m["content"]["data"] for m in first.of_type("display_data")]
    assert "crunch holds the GIL" in hints[0] and "instead of" in hints[0]
    again = kernel.ok(cell)  # the same kind of graph: no second hint
    assert not any(
        "notebook_sched advice" in m["content"]["data"].get("text/html", "")
        for m in again.of_type("display_data")
    )
    kernel.ok("ns.config.set(advise=False)")
    kernel.ok("pure2 = {('other', i): (parse, i) for i in range(24)}")
    off = kernel.ok("_ = ns.get(pure2, list(pure2), scheduler='threads', num_workers=2)")
    assert not any(
        "notebook_sched advice" in m["content"]["data"].get("text/html", "")
        for m in off.of_type("display_data")
    )
    kernel.ok("ns.config.set(advise=None)")


def test_advice_after_auto_uses_one_number_per_fact(kernel):
    """Issue 20 item 1: the sentences use the table's values, rounded the same way;
    after an auto run the sentence says whether auto did well."""
    import re

    kernel.ok("%sched_advise on")
    kernel.ok(
        "import numpy as np\n"
        "M = np.random.default_rng(0).random((300, 300))\n"
        "def np_work(i):\n"
        "    for _ in range(3):\n"
        "        M @ M\n"
        "    return i\n"
        "mixed = {('py_loop', i): (parse, i) for i in range(12)}\n"
        "mixed.update({('np_work', i): (np_work, i) for i in range(12)})\n"
    )
    kernel.ok("%%schedule auto --workers 2\n_ = ns.get(mixed, list(mixed))\n")
    text = kernel.ok("%sched_advise").result["text/plain"]
    kernel.ok("%sched_advise off")
    lines = text.splitlines()
    table = {}
    for line in lines[2:]:
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) >= 8 and cells[0] in ("py_loop", "np_work"):
            table[cells[0]] = cells[4]  # the GIL busy column
    assert set(table) == {"py_loop", "np_work"}, text
    said = re.findall(r"(py_loop|np_work)\D*?(\d+)% (?:of its time|GIL busy)", text)
    assert said, text
    for prefix, number in said:
        assert table[prefix] == f"{number}%", (prefix, number, text)
    assert "holds-gil" not in text and "% busy)" not in text
    assert "auto did well" in lines[-1] or "auto could do better" in lines[-1], text
