"""Freed results leave the process's memory, not just Python's (``heap_trim.py``).

The RSS case runs in a fresh interpreter per case, so glibc's heap state is its own:
it first frees one 30 MiB mapping, which raises glibc's mmap threshold (as a real
run's first freed block does), so the graph's 8 MiB results come from the heap.  A
1 MiB result made after them and kept (requested) sits above them, so glibc's own
trimming of the heap's top cannot give their memory back once they are released.
Without ``malloc_trim`` the process keeps 180-240 MB it no longer uses; with it, all
but the worker threads' arena tops is returned.  Counted in bytes from ``/proc``,
not timed.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import textwrap

import pytest

import notebook_sched as ns
from notebook_sched import config, heap_trim
from notebook_sched.engine import RunState
from notebook_sched.graph import compile_graph

GLIBC = platform.libc_ver()[0] == "glibc"
BLOCKS = 30
BLOCK_MB = 8

CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    import notebook_sched as ns

    PAGE = os.sysconf("SC_PAGE_SIZE")

    def rss():
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * PAGE

    def block(i):
        time.sleep(0.02)  # the run lasts long enough to trim (MIN_INTERVAL)
        return b"\\x01" * ({block_mb} << 20)  # written: resident (calloc'd pages may not be)

    def pin(*blocks):
        return b"\\x01" * (1 << 20)  # from the heap's top, above the blocks: kept

    def total(*blocks):
        return sum(len(b) for b in blocks)

    backend, trim = sys.argv[1], sys.argv[2] == "1"
    raise_threshold = bytearray(30 << 20)  # a mapping ...
    del raise_threshold  # ... freed: glibc now serves 8 MiB blocks from its heap
    graph = {{("block", i): (block, i) for i in range({blocks})}}
    names = list(graph)
    graph["pin"] = (pin, *names)
    graph["total"] = (total, *names)
    before = rss()
    with ns.config.set(trim_memory=trim):
        kept, answer = ns.get(graph, ["pin", "total"], scheduler=backend, num_workers=2)
    after = rss()
    print(json.dumps({{"answer": answer, "kept": len(kept), "held": after - before}}))
    """
).format(blocks=BLOCKS, block_mb=BLOCK_MB)


def _held_after_compute(backend: str, trim: bool) -> int:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, backend, "1" if trim else "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["answer"] == BLOCKS * (BLOCK_MB << 20)
    assert report["kept"] == 1 << 20
    return report["held"]


@pytest.mark.skipif(not GLIBC, reason="malloc_trim is glibc's; elsewhere trimming is off")
@pytest.mark.parametrize("backend", ["sync", "threads"])
def test_released_results_leave_the_process(backend):
    freed = BLOCKS * (BLOCK_MB << 20)
    untrimmed = _held_after_compute(backend, trim=False)
    trimmed = _held_after_compute(backend, trim=True)
    # The control: without a trim, most of the freed blocks stay resident.
    assert untrimmed > freed // 2, f"without trimming {untrimmed >> 20} MB stayed"
    if backend == "sync":  # the main arena: everything free goes back
        assert trimmed < freed // 10, f"with trimming {trimmed >> 20} MB stayed"
    else:
        # Worker threads allocate in arenas of their own, whose free top chunk
        # malloc_trim leaves (glibc trims only the main arena's top): up to the trim
        # threshold (twice the raised mmap threshold) stays per arena, here ~59 MB.
        assert trimmed < untrimmed // 2, f"{trimmed >> 20} MB stayed, {untrimmed >> 20} without"


def test_available_where_glibc_is():
    assert heap_trim.available() is GLIBC
    assert heap_trim.trim() in (True, False)


class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_trimmer_waits_its_interval_and_caps_its_share(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(heap_trim.time, "monotonic", clock)
    calls = []

    def slow_trim(pad: int) -> int:
        calls.append(pad)
        clock.now += 0.01  # each trim takes 10 ms
        return 1

    trimmer = heap_trim.HeapTrimmer(slow_trim)
    trimmer()  # at the start: too soon
    clock.now += heap_trim.MIN_INTERVAL - 0.001
    trimmer()
    assert calls == []
    clock.now += 0.001
    trimmer()
    assert calls == [0]
    # 10 ms at most MAX_SHARE of the time: the next trim comes 1 s later, not 0.25 s.
    wait = 0.01 / heap_trim.MAX_SHARE
    clock.now += wait - 0.001
    trimmer()
    assert len(calls) == 1
    clock.now += 0.002
    trimmer()
    assert len(calls) == 2 and trimmer.trims == 2


def test_short_runs_do_not_trim_at_the_end(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(heap_trim.time, "monotonic", clock)
    calls = []
    trimmer = heap_trim.HeapTrimmer(lambda pad: calls.append(pad) or 0)
    clock.now += heap_trim.MIN_INTERVAL / 2
    trimmer.finished()
    assert calls == []
    clock.now += heap_trim.MIN_INTERVAL
    trimmer.finished()
    assert calls == [0]


def test_run_state_ticks_every_tick_tasks_finishes_with_its_state_whole():
    n = 100
    chain = {("x", 0): (abs, -1)}
    chain.update({("x", i): (abs, ("x", i - 1)) for i in range(1, n)})
    state = RunState(compile_graph(chain, [("x", n - 1)]))
    ticks = []

    def tick():
        # Called last: the next link is already ready, the released one already gone.
        assert bool(state.ready) == bool(state.remaining)
        assert sum(v is not None for v in state.values) == 1
        ticks.append(state.remaining)

    state.tick = tick
    while state.ready:
        i = state.ready.pop()
        state.finish(i, i)
    assert ticks == list(range(96, -1, -heap_trim.TICK_TASKS))  # 13 ticks, the last at 0


def test_a_run_trims_through_the_engine(monkeypatch):
    made = []

    class Counting(heap_trim.HeapTrimmer):
        @classmethod
        def for_run(cls):
            trimmer = cls(lambda pad: 0)
            made.append(trimmer)
            return trimmer

    import notebook_sched.engine as engine

    monkeypatch.setattr(engine, "HeapTrimmer", Counting)
    monkeypatch.setattr(heap_trim, "MIN_INTERVAL", 0.0)
    graph = {("x", i): (abs, -i) for i in range(64)}
    graph["total"] = (sum, list(graph))
    assert ns.get(graph, "total", scheduler="sync") == sum(range(64))
    assert len(made) == 1 and made[0].trims >= 2  # during the run, and at its end
    with ns.config.set(trim_memory=False):
        assert ns.get(graph, "total", scheduler="threads") == sum(range(64))
    assert len(made) == 1  # off: no trimmer


@pytest.mark.parametrize("value", [1, 0, None, "yes"])
def test_trim_memory_takes_only_a_bool(value):
    with pytest.raises(ValueError, match="trim_memory must be True or False"):
        config.validate("trim_memory", value)
