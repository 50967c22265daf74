"""The auto scheduler's routing state: pure, no threads."""

from __future__ import annotations

from notebook_sched.schedulers.auto_routing import (
    MAX_PROBES,
    MIN_SAMPLES,
    POOL_START_SECONDS,
    PROCESSES,
    THREADS,
    Router,
)


def learn(router: Router, prefix: str, n: int, **measured) -> None:
    for _ in range(n):
        router.observe(prefix, **measured)


def test_a_new_prefix_starts_on_threads_and_moves_once_it_holds_the_gil():
    router = Router()
    for _ in range(MIN_SAMPLES):
        assert router.route("parse") == THREADS
        router.observe("parse", wall=0.02, cpu=0.02, gil_busy=0.97)
    assert router.route("parse") == PROCESSES
    assert "holds the GIL 97%" in router.reasons["parse"]


def test_gil_releasing_and_waiting_prefixes_stay_on_threads():
    router = Router()
    learn(router, "matmul", 5, wall=0.05, cpu=0.05, gil_busy=0.02)
    learn(router, "fetch", 5, wall=0.05, cpu=0.0005, gil_busy=0.0)
    assert router.route("matmul") == THREADS
    assert "releases the GIL" in router.reasons["matmul"]
    assert router.route("fetch") == THREADS
    assert router.reasons["fetch"].endswith("threads")


def test_short_gil_holding_tasks_are_not_worth_a_hop():
    router = Router()
    learn(router, "inc", 5, wall=2e-6, cpu=2e-6, gil_busy=1.0)
    assert router.route("inc") == THREADS
    assert "short" in router.reasons["inc"]


def test_a_large_input_keeps_pure_python_on_threads_unless_moving_pays():
    router = Router(per_byte=1e-9)
    learn(router, "scan", 3, wall=0.05, cpu=0.05, gil_busy=1.0, samples=2)
    assert router.route("scan", input_bytes=500_000_000) == THREADS  # 1 s to move 50 ms
    assert "costs more" in router.reasons["scan"]
    assert router.route("scan", input_bytes=1_000) == PROCESSES
    learn(router, "crunch", 3, wall=5.0, cpu=5.0, gil_busy=1.0, samples=2)
    assert router.route("crunch", input_bytes=500_000_000) == PROCESSES  # 5 s freed


def test_starting_the_pool_must_pay_for_itself_in_gil_time_freed():
    router = Router(per_byte=1e-9)
    # A groupby's short pandas step: GIL-bound, long enough for a hop once the pool
    # runs, but 60 of them free 0.1 s, far less than starting 2 workers.
    learn(router, "agg", 4, wall=0.003, cpu=0.003, gil_busy=0.6)
    assert router.holds_gil("agg") and router.route("agg") == PROCESSES
    assert not router.worth_starting("agg", tasks_left=60, workers=2)
    reason = router.reasons["agg"]
    assert "60 tasks left free ~0.108 s" in reason and "starting 2 worker" in reason
    assert reason.endswith("threads")
    # The bound itself: freed GIL time against POOL_START_SECONDS per worker.
    needed = 2 * POOL_START_SECONDS / (0.003 * 0.6)
    assert router.worth_starting("agg", tasks_left=int(needed) + 1, workers=2)
    assert not router.worth_starting("agg", tasks_left=int(needed) - 1, workers=2)
    assert router.worth_starting("agg", tasks_left=int(needed) - 1, workers=1)


def test_what_does_not_hold_the_gil_is_never_weighed_for_a_pool():
    router = Router()
    learn(router, "matmul", 5, wall=0.05, cpu=0.05, gil_busy=0.02)
    assert not router.holds_gil("matmul") and "releases the GIL" in router.reasons["matmul"]
    assert not router.holds_gil("unseen") and router.reasons["unseen"].startswith("new")


def test_a_prefix_that_changes_is_relearned_within_a_few_tasks():
    router = Router()
    learn(router, "f", 3, wall=0.05, cpu=0.05, gil_busy=1.0, samples=2)
    assert router.route("f") == PROCESSES
    learn(router, "f", 4, wall=0.05, cpu=0.05, gil_busy=0.0, samples=2)
    assert router.route("f") == THREADS  # 6 busy samples of 14
    learn(router, "f", 30, wall=0.05, cpu=0.05, gil_busy=1.0)
    assert router.route("f") == PROCESSES
    assert router.models["f"].samples <= 12  # a window, so the past fades
    router.forget()
    assert router.route("f") == THREADS
    assert router.reasons["f"].startswith("new")


def test_tasks_that_shared_the_gil_teach_times_but_not_the_verdict():
    router = Router()
    learn(router, "g", 5, wall=0.05, cpu=0.05, gil_busy=None)
    assert router.is_new("g")
    assert router.route("g") == THREADS
    assert router.mean_wall("g") == 0.05
    learn(router, "g", MIN_SAMPLES, wall=0.05, cpu=0.05, gil_busy=1.0)
    assert not router.is_new("g")
    assert router.route("g") == PROCESSES
    assert router.mean_wall("nothing") is None


def test_prefixes_too_short_to_sample_stop_being_probed():
    router = Router()
    learn(router, "tiny", MAX_PROBES, wall=0.001, cpu=0.001, gil_busy=0.0, samples=0)
    assert not router.is_new("tiny")
    assert router.route("tiny") == THREADS


def test_a_prefix_first_seen_sleeping_is_measured_again_when_it_computes():
    router = Router()
    learn(router, "work", MIN_SAMPLES, wall=0.05, cpu=0.0005, gil_busy=0.0)
    assert router.route("work") == THREADS and not router.is_new("work")
    # Later tasks spin, on threads beside each other: not probed (gil_busy None)...
    router.observe("work", wall=1.0, cpu=0.9, gil_busy=None)
    assert router.is_new("work")  # ...so the next one runs alone and is probed
    assert "measured on threads again" in router.reasons["work"]
    for _ in range(MIN_SAMPLES):
        router.observe("work", wall=1.0, cpu=1.0, gil_busy=0.95)
    assert router.route("work") == PROCESSES


def test_a_waiting_prefix_is_not_relearned_for_noise():
    router = Router()
    learn(router, "fetch", MIN_SAMPLES, wall=0.05, cpu=0.001, gil_busy=0.0)
    router.observe("fetch", wall=0.05, cpu=0.003, gil_busy=None)  # a little more CPU
    router.observe("fetch", wall=2e-5, cpu=2e-5, gil_busy=None)  # inline: cpu=wall, tiny
    assert not router.is_new("fetch")
