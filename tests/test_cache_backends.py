"""The result cache on every backend: hits on a rerun, recomputes after an edit (and
gives what a fresh compute gives), an entry one backend wrote is a hit for another,
the disk tier survives into a fresh process, and ``cache=False`` changes nothing.

Tasks run long enough (``SLOW``) that their disk entries are worth writing: the disk
tier writes an entry only when loading it is expected to beat recomputing it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import notebook_sched as ns

from . import helpers

SLOW = 0.03  # seconds: worth a disk entry on any disk


def load(i):
    time.sleep(SLOW)
    return list(range(i * 10, i * 10 + 10))


def clean(rows):
    time.sleep(SLOW)
    return [r for r in rows if r % 3]


# The same function edited, as rerunning its notebook cell would define it: same name,
# new body.  Defined in a module that cannot be imported, so processes get its code
# (cloudpickle pickles it by value), as they get a notebook's.
EDITED = """
import time
def clean(rows):
    time.sleep(SLOW)
    return [r for r in rows if r % 4]
"""
_edited: dict = {"__name__": "notebook_cell", "SLOW": SLOW}
exec(compile(EDITED, "<notebook cell>", "exec"), _edited)
clean_edited = _edited["clean"]


def summarise(parts):
    time.sleep(SLOW)
    return sum(map(sum, parts))


def pipeline(cleaner=clean, n=4):
    dsk = {f"load-{i}": (load, i) for i in range(n)}
    dsk.update({f"clean-{i}": (cleaner, f"load-{i}") for i in range(n)})
    dsk["summary"] = (summarise, [f"clean-{i}" for i in range(n)])
    return dsk


def backend_cases():
    cases = [("sync", "memory"), ("threads", "memory"), ("sync", "disk"), ("threads", "disk")]
    cases += [(name, "disk") for name in helpers.remote_backends()]
    # Memory only: results computed in worker processes, intermediates of a chain run
    # inside one worker included (load-i -> clean-i), come home to the memory tier.
    cases += [(name, "memory") for name in helpers.remote_backends()]
    cases += [("auto", "disk"), ("auto", "memory")]
    return cases


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("backend", "tier"), backend_cases())
def test_rerun_hits_and_an_edit_recomputes_what_changed(backend, tier, fresh_cache, warm, no_leaks):
    expected = ns.get(pipeline(), "summary", scheduler="sync")
    assert ns.get(pipeline(), "summary", scheduler=backend, cache=tier) == expected
    first = ns.cache_info()
    assert (first.hits, first.misses, first.uncacheable) == (0, 9, 0)
    assert ns.get(pipeline(), "summary", scheduler=backend, cache=tier) == expected
    again = ns.cache_info()
    assert (again.hits, again.misses) == (1, 0)  # the summary: nothing upstream was needed
    # Editing the cleaning step: the loads hit, cleaning and the summary recompute.
    fresh = ns.get(pipeline(clean_edited), "summary", scheduler="sync")
    assert fresh != expected
    assert ns.get(pipeline(clean_edited), "summary", scheduler=backend, cache=tier) == fresh
    edited = ns.cache_info()
    assert (edited.hits, edited.misses) == (4, 5)
    assert "clean" in edited.explain("clean-2") and "changed" in edited.explain("clean-2")
    assert edited.explain("load-2").startswith("'load-2': hit")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("writer", ["processes", "threads"])
def test_an_entry_written_by_one_backend_is_a_hit_for_another(writer, fresh_cache, warm, no_leaks):
    reader = "threads" if writer == "processes" else "processes"
    expected = ns.get(pipeline(), "summary", scheduler=writer, cache="disk")
    ns.cache_clear(disk=False)  # the memory tier forgets; the disk keeps the entries
    assert ns.get(pipeline(), "summary", scheduler=reader, cache="disk") == expected
    info = ns.cache_info()
    assert (info.hits, info.disk_hits, info.misses) == (1, 1, 0)


@pytest.mark.timeout(60)
def test_a_process_executor_keeps_its_results_in_the_memory_tier(fresh_cache, no_leaks):
    from concurrent.futures import ProcessPoolExecutor

    expected = ns.get(pipeline(), "summary", scheduler="sync")
    with ProcessPoolExecutor(2) as pool:
        assert ns.get(pipeline(), "summary", scheduler=pool, cache="memory") == expected
        info = ns.cache_info()
        assert (info.misses, info.memory_entries) == (9, 9)
        edited = ns.get(pipeline(clean_edited), "summary", scheduler=pool, cache="memory")
    assert edited == ns.get(pipeline(clean_edited), "summary", scheduler="sync")
    assert (ns.cache_info().hits, ns.cache_info().misses) == (4, 5)


@pytest.mark.timeout(60)
def test_an_executor_and_the_memory_tier(fresh_cache, no_leaks):
    with ThreadPoolExecutor(2) as pool:
        expected = ns.get(pipeline(), "summary", scheduler=pool, cache=True)
        assert ns.get(pipeline(), "summary", scheduler=pool, cache=True) == expected
    assert ns.cache_info().hits == 1


def test_an_edited_last_stage_reads_only_its_inputs_from_disk(fresh_cache, monkeypatch):
    """After a restart (memory tier empty) with the last stage edited, the disk tier is
    read for the edited task's inputs only: hits below them are never loaded."""
    from notebook_sched.cache import disk

    ns.get(pipeline(), "summary", scheduler="threads", cache="disk")
    ns.cache_clear(disk=False)
    space: dict = {"__name__": "notebook_cell"}
    exec("def summarise(parts):\n    return sum(map(sum, parts)) + 1\n", space)
    edited = pipeline()
    edited["summary"] = (space["summarise"], edited["summary"][1])
    read: list = []
    real = disk.read_entry

    def counted(folder, digest):
        read.append(digest)
        return real(folder, digest)

    monkeypatch.setattr(disk, "read_entry", counted)
    expected = ns.get(edited, "summary", scheduler="sync")
    read.clear()
    assert ns.get(edited, "summary", scheduler="threads", cache="disk") == expected
    info = ns.cache_info()
    assert (info.hits, info.disk_hits, info.misses) == (4, 4, 1)
    assert len(read) == 5  # the summary (a miss) and its four inputs; no load-i


def test_without_cache_nothing_is_hashed_or_stored(fresh_cache):
    ns.get(pipeline(), "summary", scheduler="sync")
    info = ns.cache_info()
    assert (info.hits, info.misses, info.memory_entries) == (0, 0, 0)


def test_opt_outs_are_uncacheable_and_say_why(fresh_cache):
    calls = []

    @ns.delayed(cache=False)
    def stamp(x):
        calls.append(x)
        return x + 1

    total = ns.delayed(sum)([stamp(i) for i in range(3)])
    assert total.compute(scheduler="sync", cache=True) == 6
    assert total.compute(scheduler="sync", cache=True) == 6
    info = ns.cache_info()
    assert len(calls) == 6 and info.uncacheable == 4 and info.hits == 0
    assert "uncacheable" in info.explain(total)


DISK_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import notebook_sched as ns
    def parse(i):
        time.sleep(0.03)
        return [i] * 1000
    def count(parts):
        time.sleep(0.03)
        return sum(map(len, parts))
    dsk = {f"parse-{i}": (parse, i) for i in range(3)}
    dsk["count"] = (count, [f"parse-{i}" for i in range(3)])
    print(ns.get(dsk, "count", scheduler=sys.argv[1], cache="disk"))
    info = ns.cache_info()
    print(info.hits, info.disk_hits, info.misses)
    """
)


@pytest.mark.timeout(120)
def test_the_disk_tier_gives_hits_in_a_fresh_process(fresh_cache, tmp_path):
    script = tmp_path / "pipeline.py"
    script.write_text(DISK_SCRIPT)
    outputs = []
    for backend in ("threads", "sync"):  # a "kernel restart": a new interpreter
        done = subprocess.run(
            [sys.executable, str(script), backend],
            capture_output=True,
            text=True,
            timeout=100,
            env={**__import__("os").environ, "NOTEBOOK_SCHED_CACHE_DIR": fresh_cache},
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout.split("\n"))
    assert outputs[0][:2] == ["3000", "0 0 4"]
    assert outputs[1][:2] == ["3000", "1 1 0"]


def test_dask_collections_through_our_schedulers_hit_on_rerun(fresh_cache, no_leaks):
    da = pytest.importorskip("dask.array")
    x = da.arange(10_000, chunks=1_000)
    with ns.config.set(scheduler="threads", cache="memory"):
        first = (x + 1).sum().compute()
        info = ns.cache_info()
        assert info.misses > 10 and info.hits == 0
        assert (x + 1).sum().compute() == first == sum(range(1, 10_001))
        info = ns.cache_info()
    assert info.hits >= 1 and info.misses <= 1  # at most Dask's fresh finalize step
