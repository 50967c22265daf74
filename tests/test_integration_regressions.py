"""Regressions found when the session's branches came together."""

from __future__ import annotations

import numpy as np
import pytest

import notebook_sched as ns
from notebook_sched.graph import GraphError

pytestmark = pytest.mark.timeout(60)


class NoTruth:
    """Compares to anything, but has no truth value (like a NumPy array)."""

    def __eq__(self, other):
        return self

    __ne__ = __eq__

    def __bool__(self):
        raise ValueError("no truth value")

    __hash__ = None


@pytest.mark.parametrize("scheduler", ["sync", "threads", "auto"])
def test_graph_values_that_compare_elementwise_are_data(scheduler):
    array = np.ones(3)
    odd = NoTruth()
    got = ns.get({"a": array, "b": (np.sum, "a"), "c": odd}, ["b", "c"], scheduler=scheduler)
    assert got[0] == 3.0 and got[1] is odd


def clean(amounts):
    return [a for a in amounts if a % 2 == 0]


def test_a_list_called_too_early_is_refused_like_any_value():
    broken = {"raw": [1, 2, 3, 4], "even": (clean([1, 2, 3, 4]), "raw")}
    with pytest.raises(GraphError, match=r"\(f, x, 'raw'\)"):
        ns.get(broken, "even", scheduler="sync")
    # A data tuple whose head holds a key stays data, as in Dask.
    assert ns.get({"x": 1, "y": (["x"], "x")}, "y", scheduler="sync") == ([1], 1)
