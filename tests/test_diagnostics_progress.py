"""The progress model, the text view, the progress observer and the run hook.

The model is tested as a pure object; the observer with real runs on every local
backend; the widget view's drawing logic without a kernel (its live behaviour in a
kernel is in test_notebook_kernel.py).
"""

from __future__ import annotations

import html
import io
import re
import threading
import time

import pytest

import notebook_sched as ns
from notebook_sched.diagnostics.bar import ProgressBar
from notebook_sched.diagnostics.progress import (
    DONE,
    FAILED,
    INTERRUPTED,
    RUNNING,
    ProgressModel,
    prefix_function,
)
from notebook_sched.diagnostics.text import TextView, format_line
from notebook_sched.events import Observer
from notebook_sched.graph import key_split

from .helpers import local_backends
from .workloads import load_clean_total

BACKENDS = local_backends()


def slow_inc(x):
    time.sleep(0.003)
    return x + 1


def fail_at(x, bad):
    time.sleep(0.002)
    if x == bad:
        raise ValueError(f"bad row {x}")
    return x


def two_prefix_graph(n=60, task=slow_inc):
    return load_clean_total(task, n)


class TTYBuffer(io.StringIO):
    def isatty(self) -> bool:
        return True


# -- prefixes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "inc-5f2e0c1d9a8b7c6d",
        "inc-12",
        "load-data-5f2e0c1d9a8b7c6d",
        "a-b-1",
        "x-12345678-y-3",
        "12345678-abcdefab",
        "-5",
        "a-",
        "plain",
        ("sum-ab12cd34ef56ab78", 3),
        ("sum-ab12cd34ef56ab78", 3, 4),
        ("getitem-0123456789abcdef", 0),
        ("name", 1),
        b"bytes-key-1",
        42,
        (7, 1),
    ],
)
def test_prefix_function_agrees_with_key_split(key):
    prefix = prefix_function()
    assert prefix(key) == key_split(key)
    assert prefix(key) == key_split(key)  # from the cache this time


def test_prefix_function_cache_does_not_mix_kinds():
    prefix = prefix_function()
    keys = ["inc-1", "inc-ab12cd34ef56ab78", "inc-x-1", "inc-x", "inc-x-ab12cd34ef56", "x-inc"]
    assert [prefix(k) for k in keys] == [key_split(k) for k in keys]


# -- the model -----------------------------------------------------------------------


def test_model_counts_per_prefix_in_input_order():
    keys = ["total"] + [f"clean-{i}" for i in range(3)] + [f"load-{i}" for i in range(3)]
    model = ProgressModel(keys, "sync")
    assert model.snapshot().done == 0
    for key in ["load-0", "load-1", "clean-0"]:
        model.done.append(key)
    snap = model.snapshot()
    assert (snap.done, snap.total, snap.state) == (3, 7, RUNNING)
    assert [(p.name, p.done, p.total) for p in snap.prefixes] == [
        ("load", 2, 3),
        ("clean", 1, 3),
        ("total", 0, 1),
    ]
    model.done.extend(["load-2", "clean-1", "clean-2", "total"])
    model.finish(None)
    snap = model.snapshot()
    assert snap.state == DONE and snap.fraction == 1.0
    assert [p.done for p in snap.prefixes] == [3, 3, 1]


def test_model_failure_and_interrupt_states():
    model = ProgressModel(["a-1", "a-2", "b-1"])
    model.done.append("a-1")
    error = ZeroDivisionError("division by zero")
    model.task_failed("b-1", error)
    model.task_failed("a-2", RuntimeError("later"))  # only the first failure counts
    model.finish(error)
    snap = model.snapshot()
    assert snap.state == FAILED
    assert snap.failed_key == "b-1"
    assert snap.error == "ZeroDivisionError: division by zero"
    assert [(p.name, p.failed) for p in snap.prefixes] == [("b", True), ("a", False)]

    model = ProgressModel(["a-1"])
    model.finish(KeyboardInterrupt())
    assert model.snapshot().state == INTERRUPTED


def test_model_stopped_by_the_kernel_going_reads_the_reason_and_no_time_left():
    from notebook_sched.diagnostics.progress import rate_text

    model = ProgressModel([f"a-{i}" for i in range(41)])
    model.done.extend(f"a-{i}" for i in range(12))
    model.started_at -= 5.0  # 5 s into the run: a rate and a time left would show
    assert "left" in rate_text(model.snapshot())
    model.stop("stopped: kernel restarted")
    snap = model.snapshot()
    assert snap.state == "stopped: kernel restarted" and "left" not in rate_text(snap)
    assert model.snapshot().elapsed == snap.elapsed  # the clock stopped
    model.finish(KeyboardInterrupt())  # the interrupt that comes with a restart
    assert model.snapshot().state == "stopped: kernel restarted"

    done = ProgressModel(["a-1"])
    done.done.append("a-1")
    done.finish(None)
    done.stop("stopped: kernel shut down")
    assert done.snapshot().state == DONE  # a finished run keeps its ending


def test_model_ignores_keys_of_other_runs_and_never_overcounts():
    model = ProgressModel(["a-1", "a-2"])
    model.done.extend(["a-1", "zzz", "a-1", "a-2"])  # a stray key and a duplicate event
    snap = model.snapshot()
    assert snap.done == 2  # capped at the total
    assert snap.prefixes[0].done == 2


def test_model_folds_concurrent_appends_exactly():
    keys = [f"t-{i}" for i in range(20000)]
    model = ProgressModel(keys)

    def worker(part):
        for key in part:
            model.done.append(key)

    threads = [threading.Thread(target=worker, args=(keys[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    seen = []
    while any(t.is_alive() for t in threads):
        seen.append(model.snapshot().done)
    for t in threads:
        t.join()
    assert seen == sorted(seen)  # monotonic while folding concurrently
    assert model.snapshot().prefixes[0].done == 20000


# -- the text view -------------------------------------------------------------------


def test_format_line_running_done_failed():
    model = ProgressModel(["inc-1", "inc-2", "add-1", "add-2"])
    model.done.extend(["inc-1", "inc-2"])
    line = format_line(model.snapshot(), "threads")
    assert line.startswith("threads | [")
    assert "50% 2/4 tasks" in line and "add 0/2" in line and "inc 2/2" in line
    model.task_failed("add-1", KeyError("missing column 'x'"))
    model.finish(KeyError("missing column 'x'"))
    line = format_line(model.snapshot())
    assert "FAILED: task 'add-1' raised KeyError: \"missing column 'x'\"" in line


def test_text_view_writes_only_final_line_to_non_terminals():
    stream = io.StringIO()
    bar = ProgressBar(TextView("sync", stream), delay=0.0, interval=0.01)
    ns.get(two_prefix_graph(30), "total", scheduler="sync", observers=[bar])
    out = stream.getvalue()
    assert "\r" not in out
    assert out.count("\n") == 1
    assert "100% 61/61 tasks" in out and out.rstrip().endswith("done")


@pytest.mark.parametrize("backend", BACKENDS)
def test_progress_bar_redraws_live_and_ends_done(backend, warm, no_leaks):
    stream = TTYBuffer()
    bar = ProgressBar(TextView(backend, stream), delay=0.05, interval=0.02)
    result = ns.get(two_prefix_graph(80), "total", scheduler=backend, observers=[bar])
    assert result == sum(i + 2 for i in range(80))
    frames = stream.getvalue().split("\r")
    assert len(frames) >= 3, frames  # shown, at least one live redraw, final
    done_counts = [int(f.split("% ")[1].split("/")[0]) for f in frames if "% " in f]
    assert done_counts == sorted(done_counts)
    assert any(0 < n < 161 for n in done_counts)  # a redraw while the run was going
    assert frames[-1].rstrip().endswith("done") and "161/161" in frames[-1]
    assert bar.model.state() == DONE


@pytest.mark.parametrize("backend", BACKENDS)
def test_progress_bar_shows_failure_with_key_and_message(backend, warm, no_leaks):
    stream = TTYBuffer()
    bar = ProgressBar(TextView(backend, stream), delay=0.0, interval=0.02)
    dsk = {f"row-{i}": (fail_at, i, 25) for i in range(40)}
    dsk["total"] = (sum, [f"row-{i}" for i in range(40)])
    with pytest.raises(ValueError, match="bad row 25"):
        ns.get(dsk, "total", scheduler=backend, observers=[bar], rerun="never")
    last = stream.getvalue().split("\r")[-1]
    assert "FAILED: task 'row-25' raised ValueError: bad row 25" in last


def test_quick_run_shows_nothing_and_leaves_no_thread(no_leaks):
    stream = TTYBuffer()
    bar = ProgressBar(TextView("sync", stream), delay=0.5)
    assert ns.get({"a": 1, "b": (slow_inc, "a")}, "b", scheduler="sync", observers=[bar]) == 2
    assert stream.getvalue() == ""
    assert not bar.shown


class BrokenView:
    interval = 0.01

    def show(self, snap):
        raise RuntimeError("cannot draw")


def test_a_broken_view_is_switched_off_without_losing_the_result(no_leaks):
    bar = ProgressBar(BrokenView(), delay=0.0)
    with pytest.warns(RuntimeWarning, match="progress view failed"):
        assert ns.get(two_prefix_graph(20), "total", scheduler="threads", observers=[bar]) == 230
    assert not bar.shown


# -- the run hook and progress() -----------------------------------------------------


class RunCounter(Observer):
    def __init__(self):
        self.seen = []

    def graph_started(self, run):
        self.seen.append(run)


def attached_bars(monkeypatch) -> list:
    """Record the ProgressBars the hook attaches (without drawing anything)."""
    made = []

    class Recording(ProgressBar):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    import notebook_sched.diagnostics.bar as bar_module

    monkeypatch.setattr(bar_module, "ProgressBar", Recording)
    return made


def test_hook_attaches_only_when_asked_outside_a_kernel(monkeypatch):
    made = attached_bars(monkeypatch)
    dsk = {"a": (slow_inc, 1)}
    ns.get(dsk, "a", scheduler="sync")  # automatic: no kernel here, so no bar
    assert made == []
    ns.get(dsk, "a", scheduler="sync", progress=True)
    assert len(made) == 1 and made[0].model.total == 1
    with ns.config.set(progress=True):
        ns.get(dsk, "a", scheduler="sync")
        ns.get(dsk, "a", scheduler="sync", progress=False)
    assert len(made) == 2


def test_hook_keeps_user_observers_and_does_not_mutate_their_list(monkeypatch):
    made = attached_bars(monkeypatch)
    mine = RunCounter()
    observers = [mine]
    ns.get({"a": (slow_inc, 1)}, "a", scheduler="threads", observers=observers, progress=True)
    assert observers == [mine] and len(mine.seen) == 1 and len(made) == 1


def nested(x):
    return ns.get({"inner-1": (slow_inc, x)}, "inner-1", scheduler="sync") + 1


def test_nested_compute_in_a_task_gets_no_bar_of_its_own(monkeypatch):
    made = attached_bars(monkeypatch)
    with ns.config.set(progress=True):
        assert ns.get({"outer-1": (nested, 1)}, "outer-1", scheduler="sync") == 3
    assert [bar.model.task_keys for bar in made] == [["outer-1"]]


def test_progress_context_manager_scopes_config_and_view(monkeypatch):
    made = attached_bars(monkeypatch)
    before = ns.config.get("progress")
    with ns.progress(view="text", delay=3.0, interval=0.5) as scope:
        assert ns.config.get("progress") is True
        ns.get({"a": (slow_inc, 1)}, "a", scheduler="sync")
        with ns.progress(False):
            assert ns.config.get("progress") is False
    assert ns.config.get("progress") is before
    assert "on" in repr(scope)
    assert len(made) == 1
    assert (made[0].view_spec, made[0].delay, made[0].interval) == ("text", 3.0, 0.5)
    with pytest.raises(ValueError, match="delay"):
        ns.progress(delay=-1)


def test_progress_restores_settings_when_the_block_raises():
    before = ns.config.get("progress")
    with pytest.raises(RuntimeError):
        with ns.progress():
            raise RuntimeError("boom")
    assert ns.config.get("progress") is before


# -- the widget view, without a kernel ----------------------------------------------


def test_widget_view_styles_and_message():
    pytest.importorskip("ipywidgets")
    from notebook_sched.diagnostics import widget as widget_module

    keys = [f"p{n}-{i}" for n in range(15) for i in range(2)]
    model = ProgressModel(keys, "threads")
    view = widget_module.WidgetView("threads")
    assert view.box is None  # no widget (no comm message) before the view is shown
    view.build(model.snapshot())
    assert len(view.rows) == widget_module.MAX_ROWS  # 15 prefixes: 11 rows + "other"
    model.done.extend(keys[:4])
    view.update(model.snapshot())
    assert [r.bar.bar_style for r in view.rows] == [""] * len(view.rows)
    model.task_failed("p0-0", ValueError("bad <value>"))
    model.finish(ValueError("bad <value>"))
    view.final(model.snapshot())
    styles = [r.bar.bar_style for r in view.rows]
    assert styles[-1] == "danger" and set(styles[:-1]) == {""}  # p0 is in "other"
    assert "p0-0" in view.header.value and "bad &lt;value&gt;" in view.header.value
    failed_row = view.rows[-1].bar
    assert re.sub("<[^>]+>", "", failed_row.description) == "other (4) 4 / 8"  # p0, p1 done
    assert "color:#c00" in failed_row.description and failed_row.layout.border
    text = repr(view.box)
    assert text.startswith("notebook_sched FAILED (") and "tasks in" in text.split(")")[0]
    assert "): task 'p0-0' raised ValueError" in text

    done = ProgressModel(["a-1"], "sync")
    done.done.append("a-1")
    done.finish(None)
    view = widget_module.WidgetView("sync")
    view.build(done.snapshot())
    view.final(done.snapshot())
    assert view.rows[0].bar.bar_style == "success" and view.rows[0].bar.value == 1
    assert "done" in view.header.value


def test_widget_view_says_an_interrupted_or_stopped_run_once_and_turns_orange():
    pytest.importorskip("ipywidgets")
    from notebook_sched.diagnostics import widget as widget_module

    for ending in ("interrupted", "stopped: kernel restarted"):
        model = ProgressModel(["a-1", "a-2"], "threads")
        model.done.append("a-1")
        view = widget_module.WidgetView("threads")
        view.build(model.snapshot())
        if ending == "interrupted":
            model.finish(KeyboardInterrupt())
        else:
            model.stop(ending)
        view.final(model.snapshot())
        assert re.sub("<[^>]+>", "", view.header.value).count(ending) == 1, view.header.value
        assert [row.bar.bar_style for row in view.rows] == ["warning"]


def test_widget_rows_keep_counts_fold_finalize_and_show_a_failure_at_zero():
    pytest.importorskip("ipywidgets")
    from notebook_sched.diagnostics import widget as widget_module

    long_name = "sqrt-var-aggregate-finalize-hlgfinalizecompute"
    keys = [(f"{long_name}-{'a' * 32}", i) for i in range(3)]
    keys += ["finalize-hlgfinalizecompute-" + "b" * 32, "parse-1", "parse-2"]
    model = ProgressModel(keys, "threads")
    view = widget_module.WidgetView("threads")
    view.build(model.snapshot())
    names = [row.name for row in view.rows]
    assert names == [long_name, "parse"] or names == ["parse", long_name]  # no finalize row
    row = next(r for r in view.rows if r.name == long_name)
    assert row.bar.description.endswith(" 0 / 3") and len(row.bar.description) < 35
    assert row.bar.tooltip == long_name  # the full name on hover
    model.task_failed("parse-1", ValueError("bad"))
    model.finish(ValueError("bad"))
    view.final(model.snapshot())
    parse = next(r for r in view.rows if r.name == "parse")
    assert parse.bar.value == 0 and parse.bar.bar_style == "danger"
    assert parse.bar.layout.border == "1px solid #c00" and "color:#c00" in parse.bar.description


def test_rate_and_time_left_once_meaningful():
    from notebook_sched.diagnostics.progress import Snapshot, rate_text

    assert rate_text(Snapshot(done=5, total=100, elapsed=0.5, state="running")) == ""
    assert rate_text(Snapshot(done=50, total=100, elapsed=2.0, state="running")) == (
        "25 tasks/s, ~2 s left"
    )
    assert rate_text(Snapshot(done=3, total=9000, elapsed=2.0, state="running")) == (
        "1.5 tasks/s, ~1 h 39 min left"
    )
    assert rate_text(Snapshot(done=100, total=100, elapsed=4.0, state="done")) == "25 tasks/s"


def test_long_fused_names_are_shortened_with_the_full_name_at_hand():
    """Dask's fused task names read as key_split reads them, in rows, headers and
    errors; the full name stays one step away (the tooltip, ``last_failure().key``)."""
    from notebook_sched.debug.display import _headline
    from notebook_sched.failure import TaskFailure, short_key_repr, short_name

    fused = "bag-from-delayed-file_to_blocks-list-loads-pluck-sum-part"
    assert short_name(fused) == "bag-from-delayed\u2026part"
    assert short_name("sqrt-var-aggregate-finalize-hlgcompute") == "sqrt-var-aggregate\u2026"
    assert short_name("slow_parse") == "slow_parse"
    key = (f"{fused}-6643426f588563c2b4dcb8107bdd09bb", 3)
    assert short_key_repr(key) == "('bag-from-delayed\u2026part-6643426f', 3)"
    assert short_key_repr(("inc-1", 2)) == "('inc-1', 2)"
    failure = TaskFailure(key, ValueError("bad"), "processes", "process-0")
    headline = _headline(failure.exception, failure)
    assert "('bag-from-delayed\u2026part-6643426f', 3)" in headline
    assert "last_failure().key" in headline and "file_to_blocks" not in headline

    pytest.importorskip("ipywidgets")
    from notebook_sched.diagnostics import widget as widget_module

    model = ProgressModel([key, "sum-1"], "processes")
    view = widget_module.WidgetView("processes")
    view.build(model.snapshot())
    row = next(r for r in view.rows if r.name == fused)
    assert row.bar.description.startswith("bag-from-delayed\u2026part 0 / 1")
    assert row.bar.tooltip == fused
    model.task_failed(key, ValueError("bad"))
    model.finish(ValueError("bad"))
    view.final(model.snapshot())
    assert f"title='{html.escape(repr(key), quote=True)}'" in view.header.value
    assert "file_to_blocks" not in re.sub("<[^>]+>", "", view.header.value)
    assert "file_to_blocks" not in repr(view.box)
