"""The worker-side meter (notebook_sched/measure.py): CPU, result bytes and the busy-GIL
share of a task, measured in the process that ran it, and a probe that stops when idle."""

import time

import numpy as np
import pytest

from notebook_sched.measure import TaskMeter, result_nbytes

pytestmark = pytest.mark.timeout(60)


def python_loop(seconds: float) -> int:
    end, n = time.perf_counter() + seconds, 0
    while time.perf_counter() < end:
        n += 1
    return n


def measure(meter: TaskMeter, work, *args):
    began = meter.begin()
    value = work(*args)
    return value, meter.end(began, value, time.time())


def test_result_nbytes_reads_sizes_that_are_cheap_and_only_those():
    assert result_nbytes(np.zeros(1000)) == 8000
    assert result_nbytes(b"abc") == 3
    assert result_nbytes(memoryview(bytearray(10))) == 10
    assert result_nbytes([np.zeros(10), b"xy"]) == 82
    assert result_nbytes({"a": 1}) is None  # would need a walk or a pickle
    assert result_nbytes([{"a": 1}]) is None
    assert result_nbytes(list(range(1000))) is None  # too long to sum cheaply

    class Lying:
        nbytes = "many"

    assert result_nbytes(Lying()) is None

    class Raising:
        @property
        def nbytes(self):
            raise RuntimeError("no")

    assert result_nbytes(Raising()) is None


def test_meter_tells_a_python_loop_from_sleep_and_numpy():
    meter = TaskMeter()
    try:
        measure(meter, python_loop, 0.01)  # the first long task starts the probe
        shares = {}
        for name, work, arg in [
            ("python", python_loop, 0.15),
            ("sleep", time.sleep, 0.15),
            ("numpy", lambda n: np.sort(np.random.default_rng(0).random(n)), 4_000_000),
        ]:
            _, measured = measure(meter, work, arg)
            shares[name] = measured
        assert shares["python"].gil_busy > 0.6, shares
        assert shares["sleep"].gil_busy < 0.3, shares
        assert shares["numpy"].gil_busy < 0.4, shares
        assert shares["sleep"].cpu < 0.05, shares
        assert shares["python"].cpu > 0.05, shares
        assert shares["numpy"].nbytes == 32_000_000
    finally:
        meter.stop()


def probe_running(meter: TaskMeter) -> bool:
    """This meter's own probe thread (other meters of the test process may run theirs)."""
    probe = meter._probe
    return probe is not None and probe.running


def test_first_long_task_is_unmeasured_and_short_tasks_start_no_probe():
    meter = TaskMeter()
    try:
        for _ in range(50):
            _, measured = measure(meter, int, 3)
            assert measured.gil_busy is None and measured.nbytes == 8
        assert meter._probe is None  # tiny tasks never pay for a probe
        _, first = measure(meter, python_loop, 0.01)
        assert first.gil_busy is None  # the probe starts after it
        assert probe_running(meter)
    finally:
        meter.stop()
    assert meter._probe is None


def test_probe_stops_by_itself_when_no_task_runs():
    meter = TaskMeter(idle_stop=0.1)
    measure(meter, python_loop, 0.01)
    probe = meter._probe
    assert probe_running(meter)
    deadline = time.monotonic() + 5
    while probe.running and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not probe.running
    # and a new one comes with the next long task, measuring again
    measure(meter, python_loop, 0.01)
    assert probe_running(meter) and meter._probe is not probe
    _, again = measure(meter, python_loop, 0.05)
    assert again.gil_busy is not None and again.gil_busy > 0.5
    meter.stop()


def test_meter_keeps_a_bounded_number_of_samples():
    from notebook_sched import measure as module

    meter = TaskMeter()
    try:
        measure(meter, python_loop, 0.002)
        probe = meter._probe
        probe.samples.extend((0.0, 0.0, 0.0, 0.0) for _ in range(3 * module.KEEP_SAMPLES))
        probe.samples.sort()
        measure(meter, python_loop, 0.002)
        assert len(probe.samples) <= 2 * module.KEEP_SAMPLES
    finally:
        meter.stop()


def test_one_rule_of_a_long_task_starts_probes_and_samples():
    # measure.py owns LONG_TASK; the task runner's sampling rule and the Advisor use it.
    from notebook_sched import measure, task_runner
    from notebook_sched.diagnostics import advice

    assert task_runner.LONG_TASK is measure.LONG_TASK is advice.LONG_TASK
    assert task_runner.skip_after(measure.LONG_TASK) == 0


def test_one_size_estimate_exact_where_cheap_and_a_shallow_guess_elsewhere():
    from notebook_sched.measure import sizeof

    assert sizeof(np.zeros(1000)) == result_nbytes(np.zeros(1000)) == 8000
    assert result_nbytes({"a": 1}) is None and sizeof({"a": 1}) > 0  # never unknown
    assert sizeof([b"x" * 100] * 2000) > 2000  # too long to sum exactly: a guess
    assert sizeof(object()) > 0
