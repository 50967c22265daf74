"""The advisor's model: verdicts and predicted times from measured tasks (pure, no threads)."""

from __future__ import annotations

import pytest

from notebook_sched.diagnostics.advice_model import (
    Costs,
    TaskSample,
    list_schedule,
    predict,
    prefix_stats,
    verdict,
)

COSTS = Costs(
    per_task={"sync": 0.0, "threads": 0.0, "processes": 0.001, "auto": 0.001}, per_byte=1e-9
)


def independent(n: int, **sample) -> list[TaskSample]:
    return [TaskSample(**sample) for _ in range(n)]


def test_verdicts():
    assert verdict(wall=1.0, cpu=1.0, gil_busy=0.95) == "holds-gil"
    assert verdict(wall=1.0, cpu=0.98, gil_busy=0.02) == "releases-gil"
    assert verdict(wall=1.0, cpu=0.01, gil_busy=0.0) == "waits"
    # A pure-Python task slowed by GIL contention is still holding the GIL.
    assert verdict(wall=2.0, cpu=0.5, gil_busy=0.9) == "holds-gil"


def test_pure_python_goes_faster_on_processes():
    tasks = independent(8, prefix="parse", wall=0.1, cpu=0.1, gil_busy=1.0)
    assert predict(tasks, "sync", 2, COSTS) == pytest.approx(0.8)
    assert predict(tasks, "threads", 2, COSTS) == pytest.approx(0.8)  # the GIL serialises
    assert predict(tasks, "processes", 2, COSTS) == pytest.approx(0.4 + 4 * 0.001)


def test_gil_releasing_work_goes_faster_on_threads():
    tasks = independent(8, prefix="matmul", wall=0.1, cpu=0.1, gil_busy=0.0, bytes_out=8_000_000)
    assert predict(tasks, "threads", 2, COSTS) == pytest.approx(0.4)
    # processes also ship each 8 MB result back: slower than threads.
    assert predict(tasks, "processes", 2, COSTS) > predict(tasks, "threads", 2, COSTS)


def test_waiting_tasks_overlap_on_threads():
    tasks = independent(8, prefix="fetch", wall=0.1, cpu=0.001, gil_busy=0.0)
    assert predict(tasks, "sync", 2, COSTS) == pytest.approx(0.8)
    assert predict(tasks, "threads", 4, COSTS) == pytest.approx(0.2)


def test_a_result_is_moved_back_and_out_again():
    # Samples carry no dependencies: each result crosses twice.
    tasks = independent(1, prefix="np", wall=0.02, cpu=0.02, gil_busy=0.0, bytes_out=8_000_000)
    assert predict(tasks, "processes", 1, COSTS) == pytest.approx(0.02 + 0.001 + 0.016)


def test_list_schedule_is_exact_on_simple_shapes():
    fan = [TaskSample(prefix="f", wall=0, cpu=0) for _ in range(10)]
    assert list_schedule(fan, [1.0] * 10, 3) == pytest.approx(4.0)
    assert list_schedule(fan, [2.0, *[1.0] * 9], 2) == pytest.approx(6.0)
    assert list_schedule([], [], 2) == 0.0
    with pytest.raises(ValueError, match="at least 1"):
        list_schedule(fan, [1.0] * 10, 0)


def test_prefix_stats_sum_and_weight_by_cpu():
    tasks = [
        TaskSample(prefix="a", wall=1.0, cpu=1.0, gil_busy=1.0, bytes_out=10),
        TaskSample(prefix="a", wall=1.0, cpu=3.0, gil_busy=0.0, bytes_out=5),
        TaskSample(prefix="b", wall=0.5, cpu=0.0, gil_busy=0.0),
    ]
    rows = {r.prefix: r for r in prefix_stats(tasks)}
    assert rows["a"].tasks == 2
    assert rows["a"].wall == pytest.approx(2.0)
    assert rows["a"].gil_busy == pytest.approx(0.25)  # CPU-weighted: 1 of 4 CPU seconds
    assert rows["a"].bytes_out == 15
    assert rows["a"].verdict == "releases-gil"
    assert rows["b"].verdict == "waits"
    assert [r.prefix for r in prefix_stats(tasks)] == ["a", "b"]


def test_unknown_backend_is_named():
    with pytest.raises(ValueError, match="'gpu'"):
        predict(independent(1, prefix="x", wall=1, cpu=1), "gpu", 1, COSTS)
    assert predict([], "threads", 2, COSTS) == 0.0


def test_transfer_cost_is_measured_on_this_machine():
    from notebook_sched.diagnostics.costs import measured_costs, per_byte_transfer

    per_byte = per_byte_transfer(nbytes=1 << 20, repeats=3)
    # Between 100 GB/s and 1 MB/s (a loaded machine has been seen at 10 MB/s): a real
    # measurement, not a constant.
    assert 1e-11 < per_byte < 1e-6
    costs = measured_costs()
    assert costs is measured_costs()  # measured once per process
    assert costs.per_task["processes"] > costs.per_task["sync"]


def test_auto_mixes_the_two_and_wins_on_a_mixed_graph():
    mix = independent(8, prefix="parse", wall=0.1, cpu=0.1, gil_busy=1.0) + independent(
        8, prefix="sort", wall=0.1, cpu=0.1, gil_busy=0.0
    )
    costs = Costs(
        per_task={"sync": 0.0, "threads": 0.0, "processes": 0.0, "auto": 0.0}, per_byte=0.0
    )
    times = {b: predict(mix, b, 2, costs) for b in ("sync", "threads", "processes", "auto")}
    assert times["sync"] == pytest.approx(1.6)
    # The sorts take 1.5x beside the parses (the convoy): (8 x 0.15 + 8 x 0.1) / 2.
    assert times["threads"] == pytest.approx(1.0)
    assert times["auto"] == pytest.approx(0.8)
    assert times["processes"] == pytest.approx(0.8)
    # Large results make processes pay for the sorts; auto keeps them on threads.
    heavy = [TaskSample(**{**vars(s), "bytes_out": 50_000_000}) for s in mix]
    slow_pipe = Costs(per_task=costs.per_task, per_byte=1e-9)
    assert predict(heavy, "auto", 2, slow_pipe) < predict(heavy, "processes", 2, slow_pipe)


def test_the_convoy_slows_gil_releasing_cpu_work_beside_holders_only():
    costs = Costs(
        per_task={"sync": 0.0, "threads": 0.0, "processes": 0.0, "auto": 0.0}, per_byte=0.0
    )
    sorts = independent(8, prefix="sort", wall=0.1, cpu=0.1, gil_busy=0.0)
    naps = independent(8, prefix="nap", wall=0.1, cpu=0.001, gil_busy=0.0)
    parses = independent(8, prefix="parse", wall=0.1, cpu=0.1, gil_busy=1.0)
    assert predict(sorts, "threads", 2, costs) == pytest.approx(0.4)  # no holder: no convoy
    assert predict(naps + parses, "threads", 2, costs) == pytest.approx(0.8)  # naps: no CPU
    assert predict(sorts + parses, "threads", 2, costs) == pytest.approx(1.0)
    assert predict(sorts + parses, "threads", 1, costs) == pytest.approx(1.6)  # one thread


def test_time_without_a_cpu_is_not_waiting():
    # 20% CPU over a 1 s task that spent 0.7 s runnable on a loaded machine: on-CPU work.
    assert verdict(wall=1.0, cpu=0.2, gil_busy=0.0, starved=0.7) == "releases-gil"
    assert verdict(wall=1.0, cpu=0.2, gil_busy=0.0) == "waits"


def test_a_replay_schedules_the_measured_walls():
    # Measured on threads: the GIL-releasing tasks were slowed by the GIL-holding ones
    # (convoy), which their wall times show and isolated durations would not.
    mix = independent(4, prefix="py", wall=0.06, cpu=0.03, gil_busy=0.9) + independent(
        4, prefix="np", wall=0.05, cpu=0.02, gil_busy=0.05
    )
    assert predict(mix, "threads", 2, COSTS, replay=True) == pytest.approx(0.22)
    assert predict(mix, "threads", 2, COSTS) < 0.22  # the isolated model is optimistic
    assert predict(mix, "auto", 2, COSTS) < predict(mix, "threads", 2, COSTS, replay=True)
