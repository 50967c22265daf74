"""Dask collections on our schedulers: same results as Dask's own, Dask's default
scheduler following our config scopes, and dask.diagnostics callbacks fed by our events.
"""

from __future__ import annotations

import copy
import io
import operator
import subprocess
import sys
import textwrap
from functools import partial

import dask
import dask.array as da
import dask.bag as db
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from dask.diagnostics import Profiler, ProgressBar

import notebook_sched as ns
from notebook_sched.events import Observer, RunInfo
from notebook_sched.interop import dask_get

from .conftest import leak_check

pytestmark = pytest.mark.timeout(120)

BACKENDS = ["sync", "threads", "processes", "distributed"]


@pytest.fixture(scope="module", autouse=True)
def _warm_shared_workers():
    """Start the shared process pool and local cluster before any leak baseline."""
    for name in ("processes", "distributed"):
        ns.get({"a": 1, "b": (abs, "a")}, "b", scheduler=name, num_workers=2)
    yield


@pytest.fixture(autouse=True)
def _configs_restored():
    """Each test starts from Dask's own defaults (scheduler, shuffle method) and leaves
    both configs as it found them."""
    saved = ns.config.snapshot()
    dask_saved = copy.deepcopy(dask.config.config)
    dask.config.config.pop("scheduler", None)
    dask.config.config.get("dataframe", {}).get("shuffle", {}).pop("method", None)
    yield
    ns.config.set(**saved)  # a global set, so it mirrors into Dask: put Dask's back after
    dask.config.config.clear()
    dask.config.config.update(dask_saved)


class Runs(Observer):
    """Records which of our backends ran each graph."""

    def __init__(self):
        self.schedulers: list[str] = []

    def graph_started(self, run: RunInfo) -> None:
        self.schedulers.append(run.scheduler)


def slow_double(v):
    return v * 2


def collections() -> dict:
    x = da.random.RandomState(0).random((60, 60), chunks=(25, 25))
    frame = pd.DataFrame(
        {"a": np.arange(60), "b": np.arange(60) % 7, "c": np.random.RandomState(1).rand(60)}
    )
    df = dd.from_pandas(frame, npartitions=4)
    return {
        "array": (x + x.T).mean(axis=0).sum(),
        "array-matmul": x @ x.T,
        "array-deep": _deep_array(x, 120),
        "bag": db.from_sequence(range(50), npartitions=6)
        .map(slow_double)
        .filter(lambda v: v % 3)
        .fold(operator.add),
        "bag-list": db.from_sequence(range(20), npartitions=3).map(slow_double),
        "delayed": dask.delayed(sum)([dask.delayed(slow_double)(i) for i in range(10)]),
        "delayed-chain": _delayed_chain(300),
        "frame-groupby": df.groupby("b").c.mean(),
        "frame-filter": df[df.a > 10].c.sum(),
        "frame-merge": df.merge(df, on="b")[["a_x", "a_y"]],
        "frame-sort": df.set_index("c").a,
    }


def _deep_array(x, depth):
    for i in range(depth):  # Dask fuses this into one deeply nested task per chunk
        x = x + i
    return x.sum()


def _delayed_chain(n):
    value = dask.delayed(0)
    for _ in range(n):
        value = dask.delayed(operator.add)(value, 1)
    return value


def same(want, got) -> bool:
    if isinstance(want, pd.DataFrame | pd.Series):
        if isinstance(want, pd.DataFrame) and "a_x" in want:  # shuffles do not keep row order
            order = ["a_x", "a_y"]
            want = want.sort_values(order).reset_index(drop=True)
            got = got.sort_values(order).reset_index(drop=True)
        return want.equals(got)
    if isinstance(want, np.ndarray):
        return want.shape == got.shape and np.allclose(want, got)
    return want == got


@pytest.fixture(scope="module")
def expected():
    """Dask's own answers (its threaded scheduler), computed once."""
    colls = collections()
    return colls, dict(zip(colls, dask.compute(*colls.values(), scheduler="threads"), strict=True))


@pytest.mark.filterwarnings("ignore:Computing mixed collections")
@pytest.mark.parametrize("backend", BACKENDS)
def test_every_collection_on_every_backend_three_ways(backend, expected):
    colls, want = expected
    runs = Runs()
    with leak_check(), runs:
        # 1. x.compute(scheduler=notebook_sched.get) with our backend chosen by config
        with ns.config.set(scheduler=backend, num_workers=2):
            got = {name: c.compute(scheduler=ns.get) for name, c in colls.items()}
        # 2. dask.compute(...) inside our scope: Dask's default follows our config
        with ns.config.set(scheduler=backend, num_workers=2):
            together = dict(zip(colls, dask.compute(*colls.values()), strict=True))
        # 3. notebook_sched.compute(dask collections)
        ours = dict(zip(colls, ns.compute(*colls.values(), scheduler=backend), strict=True))
    for name in colls:
        assert same(want[name], got[name]), (name, got[name])
        assert same(want[name], together[name]), (name, together[name])
        assert same(want[name], ours[name]), (name, ours[name])
    assert set(runs.schedulers) == {backend}
    assert len(runs.schedulers) >= len(colls) + 2  # a run per compute (set_index adds some)


def test_dask_default_follows_our_scopes_and_is_restored():
    dask.config.set(scheduler="processes")  # a user's own Dask default...
    with ns.config.set(scheduler="sync"):
        chosen = dask.config.get("scheduler")
        assert callable(chosen) and chosen.keywords == {"scheduler": "sync"}
        assert dask.config.get("dataframe.shuffle.method", None) is None  # left alone
        with ns.config.set(scheduler="threads"):
            assert dask.config.get("scheduler").keywords == {"scheduler": "threads"}
        assert dask.config.get("scheduler").keywords == {"scheduler": "sync"}
        with pytest.raises(ZeroDivisionError):
            with ns.config.set(scheduler="threads"):
                raise ZeroDivisionError
        assert dask.config.get("scheduler").keywords == {"scheduler": "sync"}
        with ns.config.set(num_workers=2):  # other settings leave Dask alone
            assert dask.config.get("scheduler").keywords == {"scheduler": "sync"}
    assert dask.config.get("scheduler") == "processes"  # ...comes back
    assert dask.config.get("dataframe.shuffle.method", None) is None


def test_plain_compute_in_our_scope_runs_on_our_backend_with_our_failure_record():
    def boom(block):
        denominator = int(block.sum() - block.sum())
        return block * (1 / denominator)

    x = da.ones((4, 4), chunks=2)
    runs = Runs()
    with runs, ns.config.set(scheduler="sync"):
        assert x.sum().compute() == 16
        with pytest.raises(ZeroDivisionError) as info:
            x.map_blocks(boom, dtype=float).sum().compute()
    assert runs.schedulers == ["sync", "sync"]
    failure = ns.last_failure()
    assert failure.backend == "sync" and isinstance(failure.key, tuple)  # fused block key
    assert failure.inputs is not None
    assert info.value.__traceback__ is not None
    tb = info.value.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    assert tb.tb_frame.f_code.co_name == "boom"  # sync keeps the task's live frame
    assert x.sum().compute() == 16  # outside the scope: Dask's own scheduler again
    assert runs.schedulers == ["sync", "sync"]


def test_dask_progress_bar_and_profiler_work_on_our_backends():
    x = da.ones((40, 40), chunks=10)
    total = (x + 1).sum()
    n_tasks = len(dict(total.__dask_graph__()))
    for backend in ("sync", "threads", "processes"):
        out = io.StringIO()
        with ns.config.set(scheduler=backend), ProgressBar(out=out), Profiler() as prof:
            assert total.compute() == 3200
        assert "100% Completed" in out.getvalue()
        assert 0 < len(prof.results) <= n_tasks
        assert all(r.end_time >= r.start_time for r in prof.results)
        workers = {r.worker_id for r in prof.results}
        assert workers <= {"sync", "thread-0", "thread-1", "caller"} | {
            f"process-{i}" for i in range(8)
        }, workers
    # callbacks= passed to compute reach our get too
    seen = []
    callback = dask.callbacks.Callback(pretask=lambda key, dsk, state: seen.append(dsk[key]))
    on_sync = partial(dask_get, scheduler="sync")
    assert total.compute(scheduler=on_sync, callbacks=[callback]) == 3200
    assert 0 < len(seen) <= n_tasks


def test_callbacks_apply_to_the_outermost_compute_only():
    def nested(block):  # a compute inside a task: Dask's default is ours here too
        return np.atleast_1d(da.from_array(block, chunks=1).sum().compute())

    starts = []
    callback = dask.callbacks.Callback(start=lambda dsk: starts.append(len(dsk)))
    x = da.ones((4,), chunks=2)
    with ns.config.set(scheduler="sync"), callback:
        outer = x.map_blocks(nested, chunks=(1,), meta=np.array((), dtype=float))
        assert outer.sum().compute() == 4
    assert len(starts) == 1  # the two computes inside tasks did not report


def test_picker_changes_dask_default_too():
    pytest.importorskip("ipywidgets")
    from notebook_sched.ipython.picker import Picker

    picker = Picker()
    try:
        picker.scheduler.value = "sync"  # a global change, like %schedule's
        assert dask.config.get("scheduler").keywords == {"scheduler": "sync"}
        runs = Runs()
        with runs:
            da.ones(4, chunks=2).sum().compute()
        assert runs.schedulers == ["sync"]
        with ns.config.set(scheduler="threads"):  # a scope over it, then the picker's again
            assert dask.config.get("scheduler").keywords == {"scheduler": "threads"}
        assert dask.config.get("scheduler").keywords == {"scheduler": "sync"}
    finally:
        picker.close()


def test_import_does_not_import_dask_and_magics_mirror_into_dask():
    script = textwrap.dedent(
        """
        import sys
        import notebook_sched as ns
        assert "dask" not in sys.modules, "import notebook_sched imported dask"
        from IPython.core.interactiveshell import InteractiveShell
        shell = InteractiveShell.instance()
        shell.run_line_magic("load_ext", "notebook_sched")
        assert "dask" not in sys.modules, "%load_ext imported dask"
        class Runs(ns.events.Observer):
            def __init__(self):
                self.schedulers = []
            def graph_started(self, run):
                self.schedulers.append(run.scheduler)
        runs = Runs()
        ns.events.register(runs)
        cell = "import dask.array as da\\nda.ones((6, 6), chunks=3).sum().compute()"
        result = shell.run_cell("%%schedule sync --no-progress\\n" + cell)
        assert result.result == 36, result
        import dask
        assert dask.config.get("scheduler", None) is None, dask.config.get("scheduler")
        shell.run_cell("%schedule processes")
        assert shell.run_cell("da.ones(4, chunks=2).sum().compute()").result == 4
        print(runs.schedulers, dask.config.get("scheduler").keywords)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert last == "['sync', 'processes'] {'scheduler': 'processes'}"
