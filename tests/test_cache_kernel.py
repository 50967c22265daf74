"""The result cache in a real kernel: ``%%schedule threads --cache memory`` cells."""

from __future__ import annotations

import pytest

from .kernel_helpers import running_kernel

DEFINE = """
import time
def load(i):
    time.sleep(0.01)
    return list(range(i * 100, i * 100 + 100))
def clean(rows):
    return [r for r in rows if r % 3]
def summarise(*parts):
    return sum(map(sum, parts))
def graph():
    dsk = {f"load-{i}": (load, i) for i in range(4)}
    dsk.update({f"clean-{i}": (clean, f"load-{i}") for i in range(4)})
    dsk["summary"] = (summarise, *[f"clean-{i}" for i in range(4)])
    return dsk
"""

RUN = """%%schedule threads --cache memory
print(ns.get(graph(), "summary"), ns.config.get("cache"))
info = ns.cache_info()
print(info.hits, info.misses)"""


@pytest.mark.timeout(120)
def test_schedule_cell_with_cache_hits_on_rerun_and_explains_an_edit():
    setup = "import notebook_sched as ns\n%load_ext notebook_sched"
    with running_kernel(setup) as kernel:
        kernel.ok(DEFINE)
        first = kernel.ok(RUN).stdout.split()
        assert first[1:] == ["memory", "0", "9"]
        second = kernel.ok(RUN).stdout.split()
        assert second == [first[0], "memory", "1", "0"]
        assert kernel.ok("print(ns.config.get('cache'))").stdout.strip() == "False"
        # The notebook way to edit: rerun the cell that defines clean, changed.
        kernel.ok("def clean(rows):\n    return [r for r in rows if r % 4]")
        third = kernel.ok(RUN).stdout.split()
        assert third[1:] == ["memory", "4", "5"] and third[0] != first[0]
        why = kernel.ok("print(ns.cache_info().explain('clean-1'))").stdout
        assert "clean" in why and "changed" in why, why
