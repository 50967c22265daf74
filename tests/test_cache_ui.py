"""The result cache in the notebook UI: progress counts cached tasks as done at once,
``%schedule --cache`` maps to the ``cache`` setting, the picker has a cache choice."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError
from IPython.core.magic_arguments import parse_argstring

from notebook_sched.diagnostics.progress import ProgressModel
from notebook_sched.diagnostics.text import format_line
from notebook_sched.ipython.magics import ScheduleMagics, settings_from


def test_cached_tasks_are_done_from_the_start_in_a_count_of_their_own():
    model = ProgressModel(
        ["clean-1", "clean-2"], "threads", 2, cached=["load-1", "load-2", "clean-0"]
    )
    snap = model.snapshot()
    assert (snap.done, snap.total, snap.cached) == (3, 5, 3)
    rows = {p.name: (p.done, p.total, p.cached) for p in snap.prefixes}
    assert rows == {"clean": (1, 3, 1), "load": (2, 2, 2)}
    assert "5 tasks (3 cached)" in format_line(snap)
    model.done.extend(["clean-1", "clean-2"])
    model.finish(None)
    snap = model.snapshot()
    assert (snap.done, snap.total, snap.state) == (5, 5, "done")


def test_a_run_without_cache_hits_shows_no_cached_count():
    snap = ProgressModel(["a-1"], "sync").snapshot()
    assert snap.cached == 0 and "cached" not in format_line(snap)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("threads --cache", {"scheduler": "threads", "cache": "memory"}),
        ("--cache disk", {"cache": "disk"}),
        ('--cache "/tmp/my cache"', {"cache": "/tmp/my cache"}),
        ("--cache /tmp/mycache", {"cache": "/tmp/mycache"}),
        ("--cache off", {"cache": False}),
        ("--no-cache", {"cache": False}),
    ],
)
def test_schedule_cache_option(line, expected):
    assert settings_from(parse_argstring(ScheduleMagics.schedule, line)) == expected


def test_cache_and_no_cache_together_is_a_usage_error():
    with pytest.raises(UsageError, match="--no-cache"):
        settings_from(parse_argstring(ScheduleMagics.schedule, "--cache --no-cache"))


def test_the_picker_sets_and_follows_the_cache_setting(tmp_path):
    import notebook_sched as ns
    from notebook_sched.ipython.picker import Picker

    picker = Picker()
    try:
        with ns.config.set(cache=False):
            assert picker.cache.value is False
            picker.cache.value = "disk"
            assert ns.config.get("cache") == "disk"
            ns.config.set(cache=str(tmp_path))  # a folder set in code: its own choice
            assert picker.cache.value == str(tmp_path)
            assert picker.cache.options[-1] == (tmp_path.name, str(tmp_path))
            ns.config.set(cache=True)
            assert picker.cache.value == "memory"
    finally:
        picker.close()
        ns.config.set(cache=False)


def test_the_widget_header_counts_cached_tasks_in_their_own_colour():
    from notebook_sched.diagnostics.widget import CACHED_COLOUR, WidgetView

    model = ProgressModel(["b-1"], "threads", 2, cached=["a-1", "a-2"])
    view = WidgetView("threads")
    view.build(model.snapshot())
    assert f"color:{CACHED_COLOUR}'>2 cached" in view.header.value
    assert any("(2 cached)" in row.bar.description for row in view.rows)
