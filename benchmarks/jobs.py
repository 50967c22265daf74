"""Background jobs (``ns.submit``): the three targets of issue 19, with Dask beside them.

1. **submit latency**: ``submit`` of a 10,000-task graph returns in under 5 ms (the
   graph is compiled on the job's thread).  Reference: handing a Dask ``get`` of the
   same graph to a thread (``ThreadPoolExecutor.submit``), Dask's nearest habit.
2. **two jobs share the workers**: two graphs of 64 x 25 ms pure-Python tasks on
   ``processes`` with ``num_workers=2``, submitted together, both finish within 1.15x
   the time of running them one after the other, and each job gets at least 40% of the
   tasks run while both run.  Reference: two ``dask.multiprocessing.get`` calls
   started together from two threads.
3. **a foreground compute beside a long job**: 20 short tasks (10 ms) computed while a
   long job runs start within 0.1 s (the first task's start, read in the worker) and
   finish within 2x their time on an idle pool.

4. **threads share one budget too**: three jobs of 48 x 10 ms sleeping tasks on
   ``threads`` (``num_workers=2``) and a foreground compute started among them keep
   at most 2 tasks running at once (counted by the tasks), and the job that got
   fewest of the starts while all three ran still got at least 25% of them.
   Reference: three ``dask.threaded.get`` calls started together (each its own pool).

Rounds interleave ours and Dask's; medians are reported.  ``python -m benchmarks.jobs
[rounds]`` (``make bench-jobs``).
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import notebook_sched as ns

from .report import Tally, environment_lines, print_table
from .workloads import independent

WORKERS = 2
SUBMIT_TARGET = 0.005
SHARE_RATIO_TARGET = 1.15
SHARE_TARGET = 0.40
START_TARGET = 0.1
FOREGROUND_RATIO_TARGET = 2.0


def spin(i: int, seconds: float = 0.025) -> int:
    """Pure Python for ``seconds`` (holds the GIL)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    return i


def stamped(i: int, seconds: float) -> float:
    """Spin, and return when the task started (wall clock, comparable across processes)."""
    start = time.time()
    spin(i, seconds)
    return start


def tasks(tag: str, n: int = 64, seconds: float = 0.025) -> dict:
    dsk: dict = {(tag, i): (spin, i, seconds) for i in range(n)}
    dsk["total"] = (sum, [(tag, i) for i in range(n)])
    return dsk


def foreground(n: int = 20, seconds: float = 0.01) -> dict:
    dsk: dict = {("fg", i): (stamped, i, seconds) for i in range(n)}
    dsk["first"] = (min, [("fg", i) for i in range(n)])
    return dsk


# -- 1. submit latency ------------------------------------------------------------------
def submit_round(graph: dict) -> tuple[float, float]:
    start = time.perf_counter()
    job = ns.submit(graph, "total", scheduler="threads", num_workers=WORKERS, progress=False)
    ours = time.perf_counter() - start
    job.result(120)
    import dask.threaded

    with ThreadPoolExecutor(1) as pool:
        start = time.perf_counter()
        future = pool.submit(dask.threaded.get, graph, "total", num_workers=WORKERS)
        theirs = time.perf_counter() - start
        future.result(120)
    return ours, theirs


# -- 2. two jobs at once ----------------------------------------------------------------
def two_jobs_round() -> tuple[float, float, float]:
    """(both together, one after the other, the smaller job's share while both ran)."""
    start = time.perf_counter()
    a = ns.submit(tasks("a"), "total", scheduler="processes", num_workers=WORKERS)
    b = ns.submit(tasks("b"), "total", scheduler="processes", num_workers=WORKERS)
    samples = []
    while not (a.done() or b.done()):
        samples.append((a.progress[0], b.progress[0]))
        time.sleep(0.01)
    first_done = (a.progress[0], b.progress[0])
    a.result(120), b.result(120)
    together = time.perf_counter() - start
    both_started = next(((x, y) for x, y in samples if x and y), (0, 0))
    ran_a, ran_b = first_done[0] - both_started[0], first_done[1] - both_started[1]
    share = min(ran_a, ran_b) / max(1, ran_a + ran_b)
    start = time.perf_counter()
    ns.get(tasks("a"), "total", scheduler="processes", num_workers=WORKERS)
    ns.get(tasks("b"), "total", scheduler="processes", num_workers=WORKERS)
    return together, time.perf_counter() - start, share


def dask_two_round() -> tuple[float, float]:
    import dask.multiprocessing

    def run(tag):
        return dask.multiprocessing.get(tasks(tag), "total", num_workers=WORKERS)

    start = time.perf_counter()
    threads = [threading.Thread(target=run, args=(tag,)) for tag in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    together = time.perf_counter() - start
    start = time.perf_counter()
    run("a"), run("b")
    return together, time.perf_counter() - start


# -- 4. threads jobs share the budget ------------------------------------------------------
_running = [0, 0]  # tasks running now, most at once (guarded by _count_lock)
_count_lock = threading.Lock()
_starts: list = []  # job tags in the order their tasks started (list.append: atomic)


def counted(tag: str, i: int, seconds: float) -> int:
    """Sleep ``seconds`` (releases the GIL), counting how many such tasks run at once."""
    with _count_lock:
        _running[0] += 1
        _running[1] = max(_running[1], _running[0])
    _starts.append(tag)
    time.sleep(seconds)
    with _count_lock:
        _running[0] -= 1
    return i


def counted_tasks(tag: str, n: int = 48, seconds: float = 0.01) -> dict:
    dsk: dict = {(tag, i): (counted, tag, i, seconds) for i in range(n)}
    dsk["total"] = (sum, [(tag, i) for i in range(n)])
    return dsk


def threads_round(dask: bool = False) -> tuple[int, float]:
    """(most tasks running at once, the smallest job's share of starts while all ran)."""
    _running[:] = [0, 0]
    _starts.clear()
    if dask:
        import dask.threaded

        with ThreadPoolExecutor(3) as pool:
            futures = [
                pool.submit(dask.threaded.get, counted_tasks(t), "total", num_workers=WORKERS)
                for t in "abc"
            ]
            [f.result(120) for f in futures]
        return _running[1], 0.0
    jobs = [
        ns.submit(counted_tasks(t), "total", scheduler="threads", num_workers=WORKERS)
        for t in "abc"
    ]
    ns.get(counted_tasks("fg", 8), "total", scheduler="threads", num_workers=WORKERS)
    [job.result(120) for job in jobs]
    starts = list(_starts)
    lo = max(starts.index(t) for t in "abc")
    hi = min(len(starts) - 1 - starts[::-1].index(t) for t in "abc")
    window = [t for t in starts[lo:hi] if t != "fg"]
    share = min(window.count(t) for t in "abc") / max(1, len(window))
    return _running[1], share


# -- 3. a foreground compute beside a long job --------------------------------------------
def foreground_round() -> tuple[float, float, float]:
    """(start latency, time beside a job, time on an idle pool)."""
    start = time.perf_counter()
    ns.get(foreground(), "first", scheduler="processes", num_workers=WORKERS)
    idle = time.perf_counter() - start
    job = ns.submit(tasks("bg", 400), "total", scheduler="processes", num_workers=WORKERS)
    while job.progress[0] < 10:
        time.sleep(0.01)
    called = time.time()
    start = time.perf_counter()
    first = ns.get(foreground(), "first", scheduler="processes", num_workers=WORKERS)
    busy = time.perf_counter() - start
    job.cancel()
    return first - called, busy, idle


def main(rounds: int = 5) -> int:
    print("Background jobs (issue 19): ours vs Dask, medians of", rounds, "rounds")
    for line in environment_lines(WORKERS):
        print(line)
    tally = Tally()
    graph = independent(10_000).graph
    ns.get({"warm": (len, "ab")}, "warm", scheduler="processes", num_workers=WORKERS)
    submits, dask_submits, two, dask_two, fg = [], [], [], [], []
    threads, dask_threads = [], []
    for _ in range(rounds):
        ours, theirs = submit_round(graph)
        submits.append(ours)
        dask_submits.append(theirs)
        two.append(two_jobs_round())
        dask_two.append(dask_two_round())
        fg.append(foreground_round())
        threads.append(threads_round())
        dask_threads.append(threads_round(dask=True))
    med = statistics.median
    submit_ms = med(submits) * 1e3
    together, one_by_one = med(t for t, _, _ in two), med(s for _, s, _ in two)
    ratio = med(t / s for t, s, _ in two)
    share = med(x for _, _, x in two)
    dask_ratio = med(t / s for t, s in dask_two)
    start_latency = med(s for s, _, _ in fg)
    fg_ratio = med(b / i for _, b, i in fg)
    peak = max(p for p, _ in threads)
    threads_share = med(x for _, x in threads)
    print()
    print_table(
        ["measure", "ours", "dask", "target", "verdict"],
        [
            [
                "submit 10,000 tasks (ms)",
                f"{submit_ms:.2f}",
                f"{med(dask_submits) * 1e3:.2f}",
                "< 5",
                tally.check("submit", submit_ms < 5, f"{submit_ms:.2f} ms"),
            ],
            [
                "two jobs together / one after the other",
                f"{ratio:.2f}x ({together:.2f}s / {one_by_one:.2f}s)",
                f"{dask_ratio:.2f}x",
                "<= 1.15x",
                tally.check("two jobs", ratio <= SHARE_RATIO_TARGET, f"{ratio:.2f}x"),
            ],
            [
                "smaller job's share while both ran",
                f"{share:.0%}",
                "",
                ">= 40%",
                tally.check("fair share", share >= SHARE_TARGET, f"{share:.0%}"),
            ],
            [
                "foreground beside a job: start (s)",
                f"{start_latency:.3f}",
                "",
                "<= 0.1",
                tally.check(
                    "foreground start", start_latency <= START_TARGET, f"{start_latency:.3f} s"
                ),
            ],
            [
                "foreground beside a job / idle",
                f"{fg_ratio:.2f}x",
                "",
                "<= 2x",
                tally.check(
                    "foreground time", fg_ratio <= FOREGROUND_RATIO_TARGET, f"{fg_ratio:.2f}x"
                ),
            ],
            [
                "threads: 3 jobs + a cell, most at once",
                f"{peak} (of {WORKERS})",
                f"{max(p for p, _ in dask_threads)}",
                f"<= {WORKERS}",
                tally.check("threads budget", peak <= WORKERS, f"{peak} at once"),
            ],
            [
                "threads: smallest job's share, 3 jobs",
                f"{threads_share:.0%}",
                "",
                ">= 25%",
                tally.check("threads turns", threads_share >= 0.25, f"{threads_share:.0%}"),
            ],
        ],
    )
    tally.print_summary()
    return 0 if not tally.failed else 1


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5))
