"""The picker's widgets without a kernel: default selections, the binding, "(other)"."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

import notebook_sched as ns

pytest.importorskip("ipywidgets")

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def picker():
    from notebook_sched.ipython.picker import Picker

    saved = ns.config.snapshot()  # the picker's changes are global (plain config.set)
    ns.config.set(scheduler="threads", num_workers=None, progress=None, rerun="auto")
    p = Picker()
    try:
        yield p
    finally:
        p.close()
        ns.config.set(**saved)


def test_automatic_values_are_selected_options(picker):
    # ipywidgets 8 shows a None value as no selection: the widgets hold "auto" instead.
    assert picker.workers.index == 0 and picker.workers.label.startswith("auto (")
    assert picker.progress.index == 0 and picker.progress.label == "auto"
    assert picker.rerun.label == "auto"


def test_auto_in_the_widgets_is_none_in_the_config(picker):
    picker.workers.value = 3
    picker.progress.value = False
    assert (ns.config.get("num_workers"), ns.config.get("progress")) == (3, False)
    picker.workers.value = "auto"
    picker.progress.value = "auto"
    assert (ns.config.get("num_workers"), ns.config.get("progress")) == (None, None)
    ns.config.set(num_workers=5, progress=True)
    assert (picker.workers.value, picker.progress.value) == (5, True)
    ns.config.set(num_workers=None, progress=None)
    assert (picker.workers.label[:4], picker.progress.label) == ("auto", "auto")


def test_other_says_what_it_stands_for_and_which_one(picker):
    assert picker.scheduler.options[-1] == "(other)"
    assert picker.hints.value.count("<div") == len(picker.scheduler.options)
    assert "an executor or get function set in code" in picker.hints.value
    assert "none set now" in picker.hints.value
    with ThreadPoolExecutor(1) as executor, ns.config.set(scheduler=executor):
        assert picker.scheduler.value == "(other)"
        assert "now: the executor ThreadPoolExecutor" in picker.hints.value
    assert picker.scheduler.value == "threads" and "none set now" in picker.hints.value
    with ns.config.set(scheduler=ns.get):
        assert "now: the get function get" in picker.hints.value
