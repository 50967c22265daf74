"""The GIL probe tells a pure-Python loop from time.sleep and from a large NumPy operation.

Each workload runs on its own thread for about half a second while the probe samples;
the thresholds leave room for a loaded 2-core machine (see the limits in ``gil.py``).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from notebook_sched.gil import GilProbe, attribute

pytestmark = pytest.mark.timeout(60)

SECONDS = 0.5


def python_loop() -> None:
    end = time.perf_counter() + SECONDS
    n = 0
    while time.perf_counter() < end:
        n += 1


def sleeping() -> None:
    time.sleep(SECONDS)


MATRIX = np.random.default_rng(0).random((1000, 1000))


def numpy_matmul() -> None:
    end = time.perf_counter() + SECONDS
    while time.perf_counter() < end:
        MATRIX @ MATRIX  # BLAS releases the GIL for the whole product


def busy_share(work) -> tuple[float, int]:
    with GilProbe() as probe:
        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
    return probe.window(0.0, float("inf"))[0], len(probe.samples)


def test_pure_python_holds_the_gil(no_leaks):
    busy, samples = busy_share(python_loop)
    assert samples >= 10  # ~70 on a quiet machine (one per ~7 ms while the GIL is held)
    assert busy > 0.6, f"a pure-Python loop read only {busy:.2f} GIL-busy"


def test_sleep_leaves_the_gil_free(no_leaks):
    busy, samples = busy_share(sleeping)
    assert samples >= 50
    assert busy < 0.25, f"time.sleep read {busy:.2f} GIL-busy"


def test_numpy_kernel_releases_the_gil(no_leaks):
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # one core for BLAS, one for the probe
        busy, samples = busy_share(numpy_matmul)
    assert samples >= 50
    assert busy < 0.35, f"a BLAS product read {busy:.2f} GIL-busy"


def test_probe_stops_and_restarts(no_leaks):
    probe = GilProbe(interval=0.001)
    probe.start()
    with pytest.raises(RuntimeError, match="already running"):
        probe.start()
    time.sleep(0.02)
    first = len(probe.stop())
    assert first > 0
    assert probe.stop() is probe.samples  # stopping twice is harmless
    time.sleep(0.01)
    assert len(probe.samples) == first  # nothing samples after stop
    with pytest.raises(ValueError, match="positive"):
        GilProbe(interval=0)


def test_attribute_spreads_samples_over_running_tasks():
    samples = [(0.5, 1.0), (1.5, 0.0), (2.5, 1.0), (3.5, 0.5), (9.0, 1.0)]
    intervals = [("parse", 0.0, 3.0), ("load", 1.0, 4.0), ("parse", 3.2, 3.4)]
    shares = attribute(samples, intervals)
    # parse alone at 0.5 (1.0); parse+load at 1.5 (0.0) and 2.5 (1.0); load alone at 3.5.
    assert shares["parse"].samples == pytest.approx(2.0)
    assert shares["parse"].gil_busy == pytest.approx((1.0 + 0.5 * 0.0 + 0.5 * 1.0) / 2.0)
    assert shares["load"].samples == pytest.approx(2.0)
    assert shares["load"].gil_busy == pytest.approx((0.5 * 0.0 + 0.5 * 1.0 + 0.5) / 2.0)
    assert attribute([], intervals) == {}
    assert attribute(samples, []) == {}


def test_window_finds_its_samples_by_bisection():
    probe = GilProbe()
    probe.samples = [(1.0, 1.0), (2.0, 0.0), (3.0, 1.0), (4.0, 1.0)]
    assert probe.window(0.0, float("inf")) == (pytest.approx(0.75), 4)
    assert probe.window(2.0, 3.0) == (pytest.approx(0.5), 2)
    assert probe.window(2.5, 10) == (pytest.approx(1.0), 2)
    assert probe.window(5, 6) == (0.0, 0)


def _spin(seconds: float) -> None:
    end = time.time() + seconds
    while time.time() < end:
        pass


def test_a_starved_cpu_is_not_taken_for_a_busy_gil(no_leaks):
    """Every core busy in other processes: the probe wakes late for want of a CPU, and
    must not read that as GIL contention (the run-queue correction)."""
    import multiprocessing

    from threadpoolctl import threadpool_limits

    context = multiprocessing.get_context("spawn")
    spinners = [context.Process(target=_spin, args=(4.0,)) for _ in range(3)]
    for process in spinners:
        process.start()
    try:
        time.sleep(0.5)  # let them boot and spin
        with threadpool_limits(1):
            numpy_busy, _ = busy_share(numpy_matmul)
            sleep_busy, _ = busy_share(sleeping)
            python_busy, _ = busy_share(python_loop)
    finally:
        for process in spinners:
            process.kill()
            process.join()
    assert numpy_busy < 0.35, f"a BLAS product on a starved CPU read {numpy_busy:.2f}"
    assert sleep_busy < 0.25, f"time.sleep on a starved CPU read {sleep_busy:.2f}"
    assert python_busy > 0.6, f"a pure-Python loop on a starved CPU read {python_busy:.2f}"


def test_run_queue_clock_counts_up_and_keeps_the_gil():
    from notebook_sched.gil import run_queue_seconds

    first = run_queue_seconds()
    python_loop()
    second = run_queue_seconds()
    assert 0.0 <= first <= second
