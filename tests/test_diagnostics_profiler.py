"""The Profiler on every backend, its summary table, and the task-stream plot."""

from __future__ import annotations

import time

import matplotlib
import pytest

import notebook_sched as ns
from notebook_sched.diagnostics.profiler import Profiler, ProfileSummary

from .helpers import local_backends
from .workloads import load_clean_total, parse

matplotlib.use("Agg")


BACKENDS = local_backends()


def work(x, seconds=0.004):
    time.sleep(seconds)
    return x + 1


def broken(x):
    raise KeyError(f"no column {x!r}")


def graph(n=12):
    return load_clean_total(work, n)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", BACKENDS)
def test_profiler_records_every_task(backend, warm, no_leaks):
    with Profiler() as prof:
        assert ns.get(graph(), "total", scheduler=backend) == sum(i + 2 for i in range(12))
    ns.get(graph(), "total", scheduler="sync")  # after the block: not recorded
    keys = sorted(str(r.key) for r in prof.records)
    assert keys == sorted(graph())
    for record in prof.records:
        assert record.stop >= record.start and record.error is None
        assert isinstance(record.worker, str) and record.worker
    loads = [r for r in prof.records if str(r.key).startswith("load")]
    assert all(r.duration >= 0.003 for r in loads)  # the task's own sleep is inside
    assert len(prof.runs) == 1 and prof.runs[0][3] is None
    summary = prof.summary()
    assert [row.prefix for row in summary][:2] in (["load", "clean"], ["clean", "load"])
    assert summary["load"].count == 12 and summary["total"].count == 1
    assert summary["load"].total == pytest.approx(sum(r.duration for r in loads))
    assert summary["load"].mean == pytest.approx(summary["load"].total / 12)


def test_threads_spread_over_workers(no_leaks):
    with Profiler() as prof:
        ns.get(graph(20), "total", scheduler="threads", num_workers=2)
    assert set(prof.workers) == {"thread-0", "thread-1"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_profiler_marks_failed_task(backend, warm, no_leaks):
    dsk = {"a": (work, 1), "bad-1": (broken, "a"), "out": (work, "bad-1")}
    with Profiler() as prof:
        with pytest.raises(KeyError):
            ns.get(dsk, "out", scheduler=backend, rerun="never")
    failed = prof.failed
    assert [r.key for r in failed] == ["bad-1"]
    assert isinstance(failed[0].error, KeyError)
    assert failed[0].stop >= failed[0].start
    assert prof.summary()["bad"].failed == 1
    assert isinstance(prof.runs[0][3], KeyError)


def test_summary_renders_as_text_and_html():
    prof = Profiler()
    ns.get(graph(3), "total", scheduler="sync", observers=[prof])
    summary = prof.summary()
    assert isinstance(summary, ProfileSummary) and len(summary) == 3
    text = repr(summary).splitlines()
    assert text[0].split() == [
        "prefix", "count", "failed", "total", "(s)", "mean", "(s)", "CPU", "GIL", "busy", "verdict"
    ]  # fmt: skip
    assert any(line.split()[:3] == ["load", "3", "0"] for line in text)
    assert "<table>" in summary._repr_html_() and "<td>clean</td>" in summary._repr_html_()
    with pytest.raises(KeyError, match="prefixes"):
        summary["nothing"]
    assert "tasks=7" in repr(prof)


def test_plot_draws_a_row_per_worker_and_marks_failures(no_leaks):
    import matplotlib.pyplot as plt

    prof = Profiler()
    ns.get(graph(8), "total", scheduler="threads", num_workers=2, observers=[prof])
    dsk = {"a": (work, 1), "bad-1": (broken, "a")}
    with pytest.raises(KeyError):
        ns.get(dsk, "bad-1", scheduler="sync", observers=[prof])
    ax = prof.plot()
    try:
        labels = [t.get_text() for t in ax.get_yticklabels()]
        assert labels == sorted(prof.workers) and "sync" in labels
        bars = ax.collections
        n_spans = sum(len(c.get_paths()) for c in bars)
        assert n_spans == len(prof.records)
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert {"load", "clean", "total", "failed"} <= set(legend)
        assert "1 failed" in ax.get_title()
        hatched = [c for c in bars if c.get_hatch()]
        assert len(hatched) == 1 and len(hatched[0].get_paths()) == 1
    finally:
        plt.close(ax.figure)
    fig, own = plt.subplots()
    try:
        assert prof.plot(ax=own, title="mine") is own and own.get_title() == "mine"
    finally:
        plt.close(fig)


def test_notebook_display_of_plot_and_profiler(no_leaks):
    """``prof.plot()`` as a cell's last line shows no ``<Axes: ...>``; the Profiler has an
    HTML view with its counts, the summary table and the task stream as an image."""
    import matplotlib.pyplot as plt
    from IPython.core.formatters import DisplayFormatter

    formatter = DisplayFormatter()
    with ns.Profiler() as prof:
        ns.get({"a": (sum, [1, 2]), "b": (str, "a")}, "b", scheduler="threads")
    ax = prof.plot()
    try:
        data, _ = formatter.format(ax)
        assert data == {}, data  # displayed as nothing; the figure shows on its own
    finally:
        plt.close(ax.figure)
    data, _ = formatter.format(prof)
    page = data["text/html"]
    assert "2 tasks, 0 failed, 1 worker, 1 run" in page
    assert "<td>a</td>" in page and "<td>b</td>" in page  # the summary table
    assert "<img alt='task stream' src='data:image/png;base64," in page
    assert plt.get_fignums() == []  # the HTML view drew on its own Figure, not pyplot's


def crunch(i):
    return parse(i, n=200_000)  # pure Python, ~10 ms: holds the GIL


def nap(i):
    time.sleep(0.01)
    return i


def test_summary_says_what_each_prefix_does_and_plot_colours_by_it(no_leaks):
    import matplotlib.pyplot as plt

    dsk = {("crunch", i): (crunch, i) for i in range(16)}  # the probe starts after the first
    dsk.update({("nap", i): (nap, i) for i in range(6)})
    with Profiler() as prof:
        ns.get(dsk, list(dsk), scheduler="threads", num_workers=2)
    summary = prof.summary()
    assert summary["crunch"].verdict == "holds-gil" and summary["crunch"].gil_busy > 0.5
    assert summary["nap"].verdict == "waits" and summary["nap"].cpu < 0.25
    assert "holds the GIL" in repr(summary) and "holds-gil" not in repr(summary)
    assert "waits (I/O or sleep)" in summary._repr_html_()
    assert ns.advise(prof).rows[0].prefix in ("crunch", "nap")  # advise(profiler)
    ax = prof.plot(color_by="verdict")
    labels = {t.get_text() for t in ax.get_legend().get_texts()}
    assert {"holds the GIL", "waits (I/O, sleep)"} <= labels
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="color_by"):
        prof.plot(color_by="colour")
