"""No recursion over graph depth anywhere: a long chain (``helpers.LONG_CHAIN`` tasks, a
million under ``make test-scale``) runs on every backend."""

from __future__ import annotations

import operator

import pytest

import notebook_sched as ns

from .helpers import LONG_CHAIN as N


@pytest.fixture(scope="module")
def chain():
    dsk = {"x0": 0}
    dsk.update({f"x{i + 1}": (operator.add, f"x{i}", 1) for i in range(N)})
    return dsk


@pytest.mark.timeout(300)
@pytest.mark.parametrize("scheduler", ["sync", "threads", "processes"])
def test_long_task_chain(chain, scheduler, no_leaks):
    assert ns.get(chain, f"x{N}", scheduler=scheduler) == N


@pytest.mark.timeout(300)
def test_long_chain_built_with_delayed():
    inc = ns.delayed(operator.add)
    x = ns.delayed(0)
    for _ in range(200_000):
        x = inc(x, 1)
    assert x.compute(scheduler="sync") == 200_000


def test_deeply_nested_keys_request():
    dsk = {"a": 1}
    keys: list = ["a"]
    for _ in range(50):
        keys = [keys]
    result = ns.get(dsk, keys, scheduler="sync")
    for _ in range(50):
        (result,) = result
    assert result == (1,)
