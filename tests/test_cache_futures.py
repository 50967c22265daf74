"""The result cache through the futures API: ``Client.compute(..., cache=...)`` on the
local cluster.  With the memory tier the results come home to the caller as they
finish (intermediates included), so a second identical compute is all hits and an
edit of the last function recomputes only it; with the disk tier the workers write."""

from __future__ import annotations

import time

import pytest

import notebook_sched as ns
from notebook_sched.distributed import Client
from notebook_sched.distributed.protocol import unpack
from notebook_sched.distributed.state import MEMORY
from notebook_sched.graph import compile_graph

from .test_cache_backends import SLOW, clean, load
from .test_distributed_state import Sim, Target, inc


def summarise(parts):
    time.sleep(SLOW)
    return sum(map(sum, parts))


# The last function edited, as rerunning its notebook cell would define it.
_edited: dict = {"__name__": "notebook_cell", "SLOW": SLOW, "time": time}
exec(  # noqa: S102 - a stand-in for a notebook cell
    compile("def summarise(parts):\n    return 2 * sum(map(sum, parts))\n", "<cell>", "exec"),
    _edited,
)
summarise_edited = _edited["summarise"]


def pipeline(last=summarise, n=4):
    cleaned = [ns.delayed(clean)(ns.delayed(load)(i)) for i in range(n)]
    return ns.delayed(last)(cleaned)


def run_counts(expected: tuple, timeout: float = 10.0) -> tuple:
    """The last run's ``(hits, misses)``, once they are ``expected`` or ``timeout``
    passed (the client tells the planners on its callback thread when every future of
    a compute is done, so the figures of the compute before may show for a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        info = ns.cache_info()
        counts = (info.hits, info.misses)
        if counts == expected or time.monotonic() > deadline:
            return counts
        time.sleep(0.01)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("tier", ["memory", "disk"])
def test_client_compute_hits_on_rerun_and_recomputes_only_the_edited_last_step(
    tier, fresh_cache, warm, no_leaks
):
    expected = pipeline().compute(scheduler="sync")
    with Client(set_as_default=False) as client:
        future = client.compute(pipeline(), cache=tier)
        assert future.result(timeout=30) == expected
        assert run_counts((0, 9)) == (0, 9)
        if tier == "memory":  # every result came home, intermediates included
            assert ns.cache_info().memory_entries == 9
        else:
            ns.cache_clear(disk=False)  # the workers wrote the entries; memory forgets
        del future
        again = client.compute(pipeline(), cache=tier)  # right away: no waiting
        assert again.result(timeout=30) == expected
        assert run_counts((1, 0)) == (1, 0)  # the summary: nothing upstream was needed
        edited = client.compute(pipeline(summarise_edited), cache=tier)
        assert edited.result(timeout=30) == 2 * expected
        assert run_counts((4, 1)) == (4, 1)  # the cleaned parts hit; only the last step ran


@pytest.mark.timeout(60)
def test_a_rerun_right_after_result_finds_every_result_home(fresh_cache, warm, no_leaks):
    """``result()`` returns once the results that came home are in the memory tier, so
    a compute straight after it is all hits (no race with the callback thread)."""
    with Client(set_as_default=False) as client:
        for _ in range(3):
            ns.cache_clear()
            first = client.compute(pipeline(n=2), cache="memory")
            value = first.result(timeout=30)
            assert ns.cache_info().memory_entries == 5
            rerun = client.compute(pipeline(n=2), cache="memory")
            assert rerun.result(timeout=30) == value
            del first, rerun


class _HookSim(Sim):
    """The state tests' simulated workers, for tasks that carry a result hook (the
    hook itself is the workers' business: dropped here)."""

    def _op_compute(self, wid, items):
        super()._op_compute(wid, [item[:6] for item in items])


def _hook(value, seconds=None):
    return None


def test_the_scheduler_sends_a_computes_home_results_to_its_own_target():
    """State level: the tasks of ``graph.home`` added by ``add_graph`` send their results
    back, and the compute's target hears them as ``(graph index, packed value)``;
    tasks without a home hook, and a compute without a target, send nothing."""
    graph = compile_graph({"a": (inc, 1), "b": (inc, "a"), "c": (inc, "b")}, ["c"])
    index = {key: i for i, key in enumerate(graph.keys)}
    graph.on_result = {index["a"]: _hook, index["b"]: _hook, index["c"]: _hook}
    graph.home = {index["a"]: _hook, index["c"]: _hook}
    sim, target = _HookSim(), Target()
    sim.state.add_graph(graph, target)
    sim.state.acquire("c", None)
    sim.run()
    home = [(i, unpack(v)) for kind, found in target.notices if kind == "home" for i, v in found]
    assert sorted(home) == sorted([(index["a"], 2), (index["c"], 4)])

    other = compile_graph({"x": (inc, 10)}, ["x"])
    other.on_result = other.home = {0: _hook}
    sim.state.add_graph(other)  # no target: the result stays on its worker
    sim.state.acquire("x", None)
    sim.run()
    assert sim.state.named["x"].state == MEMORY and not sim.state.named["x"].send_back
