"""The scheduler picker: a widget bound both ways to the config.

::

    notebook_sched.picker()

    scheduler  ( ) sync        one task at a time in this thread: debugging, profiling
               (•) threads     a thread pool: NumPy, pandas and other code that releases...
               ( ) processes   worker processes: pure-Python code with small inputs...
               ( ) (other)     an executor or get function set in code; now: none
    workers    [auto (2 CPUs) v]
    progress   [auto | on | off]        rerun  [auto | always | never]
    cache      [off | memory | disk]    (a folder set in code shows as its own choice)

Two columns: the radio buttons carry the names, an HTML column beside them the hints
(grey, one row per button, the rows as tall as the buttons' labels), so a name never
runs into its hint.  "(other)" is selected when the config holds an executor or a get
function (set in code: ``config.set(scheduler=executor)``); its hint names it.

The backends and their hints come from the scheduler registry when the picker is made,
so backends registered later (``distributed``) appear in pickers made after them.

ipywidgets 8 shows an option whose value is ``None`` as no selection, so the automatic
settings have the value ``"auto"`` in the widgets and ``None`` in the config; the
binding maps one to the other (:data:`AUTO`).

Binding: a change in the widget calls ``config.set`` (global, so it applies to the next
compute); a change of the config (``%schedule``, ``config.set``, the end of a
``%%schedule`` cell) reaches the widget through ``config.subscribe`` and sets its
traits, which ipywidgets sends to the front end.  A flag stops the echo: while the
picker applies a config change to its widgets it does not write it back.  The
subscription holds the picker weakly and ends when the picker is closed or collected.

Front ends without widgets show the picker's text repr: the same text as ``%schedule``.
"""

from __future__ import annotations

import html
import os
import threading
import weakref
from concurrent.futures import Executor
from typing import Any

import ipywidgets as widgets

from .. import config, schedulers

__all__ = ["Picker", "picker"]

AUTO = "auto"  # the widgets' value for the config's None (automatic)
_PROGRESS = [("auto", AUTO), ("on", True), ("off", False)]
_RERUN = [("auto", "auto"), ("always", "always"), ("never", "never")]
_CACHE = [("off", False), ("memory", "memory"), ("disk", "disk")]
_OTHER = "(other)"  # scheduler option shown when the config holds an executor or get function
_AUTO_SETTINGS = ("num_workers", "progress")  # None in the config is AUTO in the widget
_GREY = "color:var(--jp-ui-font-color2, #666)"
_ROW = (
    "height:var(--jp-widgets-radio-item-height, 20px);"
    "line-height:var(--jp-widgets-radio-item-height, 20px);white-space:nowrap"
)


def _worker_options(current: Any) -> list:
    cpus = os.cpu_count() or 1
    extra = [current] if isinstance(current, int) else []
    counts = sorted({*range(1, max(2 * cpus, 8) + 1), *extra})
    return [(f"auto ({cpus} CPUs)", AUTO), *((str(n), n) for n in counts)]


def to_widget(name: str, value: Any) -> Any:
    return AUTO if value is None and name in _AUTO_SETTINGS else value


def to_config(name: str, value: Any) -> Any:
    return None if value == AUTO and name in _AUTO_SETTINGS else value


def _cache_options(current: Any) -> list:
    """off / memory / disk, plus a folder the config names (``config.set(cache=path)``)."""
    if current is True:
        current = "memory"
    if current in [v for _, v in _CACHE]:
        return list(_CACHE)
    return [*_CACHE, (os.path.basename(os.fspath(current).rstrip("/")) or "folder", current)]


def _cache_value(current: Any) -> Any:
    return "memory" if current is True else current


def describe_other(scheduler: Any) -> str:
    """The hint of "(other)": what it stands for, and which object is set now."""
    if isinstance(scheduler, str):
        now = "none set now"
    elif isinstance(scheduler, Executor):
        now = f"now: the executor {type(scheduler).__name__}"
    else:
        name = getattr(scheduler, "__qualname__", None) or type(scheduler).__name__
        now = f"now: the get function {name}"
    return (
        f"an executor or get function set in code (config.set(scheduler=...)); {html.escape(now)}"
    )


class Picker(widgets.VBox):
    """Scheduler, workers, progress and rerun controls bound to ``notebook_sched.config``."""

    def __init__(self, **kwargs: Any):
        values = config.snapshot()
        self._names = list(schedulers.names())
        self.scheduler = widgets.RadioButtons(
            options=[*self._names, _OTHER],
            value=self._scheduler_value(values["scheduler"]),
            layout=widgets.Layout(width="auto"),
        )
        self.hints = widgets.HTML(layout=widgets.Layout(width="auto", margin="2px 2px 2px 1.5em"))
        self.workers = widgets.Dropdown(
            options=_worker_options(values["num_workers"]),
            value=to_widget("num_workers", values["num_workers"]),
            description="workers",
        )
        self.progress = widgets.ToggleButtons(
            options=_PROGRESS,
            value=to_widget("progress", values["progress"]),
            description="progress",
        )
        self.rerun = widgets.ToggleButtons(
            options=_RERUN, value=values["rerun"], description="rerun"
        )
        self.cache = widgets.ToggleButtons(
            options=_cache_options(values.get("cache", False)),
            value=_cache_value(values.get("cache", False)),
            description="cache",
            tooltips=["no result cache", "reuse results in this session", "and across sessions"],
        )
        self.status = widgets.HTML()
        self._applying = threading.local()  # .active while writing config values into widgets
        self._show_hints(values["scheduler"])
        super().__init__(
            [
                widgets.HTML("<b>notebook_sched</b> scheduler"),
                widgets.HBox([self.scheduler, self.hints]),
                self.workers,
                self.progress,
                self.rerun,
                self.cache,
                self.status,
            ],
            **kwargs,
        )
        self.scheduler.observe(self._widget_changed("scheduler"), names="value")
        self.workers.observe(self._widget_changed("num_workers"), names="value")
        self.progress.observe(self._widget_changed("progress"), names="value")
        self.rerun.observe(self._widget_changed("rerun"), names="value")
        self.cache.observe(self._widget_changed("cache"), names="value")
        self._subscription = _subscribe(self)

    def _show_hints(self, scheduler: Any) -> None:
        rows = [html.escape(schedulers.hint(name)) for name in self._names]
        rows.append(describe_other(scheduler))
        self.hints.value = "".join(f"<div style='{_ROW};{_GREY}'>{row}</div>" for row in rows)

    def _scheduler_value(self, scheduler: Any) -> str:
        return scheduler if isinstance(scheduler, str) and scheduler in self._names else _OTHER

    # -- widget -> config --------------------------------------------------------------
    def _widget_changed(self, name: str):
        def on_change(change: dict) -> None:
            if getattr(self._applying, "active", False):
                return
            value = change["new"]
            if name == "scheduler" and value == _OTHER:
                return  # only the config can hold an executor or a get function
            try:
                config.set(**{name: to_config(name, value)})
            except (ValueError, TypeError, KeyError) as exc:
                self.status.value = f"<span style='color:#c00'>{exc}</span>"
            else:
                self.status.value = ""

        return on_change

    # -- config -> widget --------------------------------------------------------------
    def config_changed(self, name: str, value: Any) -> None:
        """Show a config change in the widgets (called by the config on any thread)."""
        self._applying.active = True
        try:
            if name == "scheduler":
                self.scheduler.value = self._scheduler_value(value)
                self._show_hints(value)
            elif name == "num_workers":
                value = to_widget(name, value)
                if value not in [v for _, v in self.workers.options]:
                    self.workers.options = _worker_options(value)
                self.workers.value = value
            elif name == "progress":
                self.progress.value = to_widget(name, value)
            elif name == "rerun":
                self.rerun.value = value
            elif name == "cache":
                self.cache.options = _cache_options(value)
                self.cache.value = _cache_value(value)
        finally:
            self._applying.active = False

    def close(self) -> None:
        config.unsubscribe(self._subscription)
        children = (self.scheduler, self.hints, self.workers, self.progress, self.rerun)
        for child in (*children, self.cache):
            child.close()
        super().close()

    def __repr__(self) -> str:
        # What a reader without the widget sees (a saved notebook on GitHub, a terminal):
        # one line, under the 110 characters ipywidgets keeps of a widget's text repr.
        values = config.snapshot()
        scheduler = values["scheduler"]
        if not isinstance(scheduler, str):
            scheduler = getattr(scheduler, "__qualname__", None) or type(scheduler).__name__
        workers = values["num_workers"] or "auto"
        progress = {None: "auto", True: "on", False: "off"}.get(values["progress"])
        return (
            f"notebook_sched picker: scheduler {scheduler}, workers {workers}, "
            f"progress {progress}, rerun {values['rerun']} (%schedule shows the same)"
        )


def _subscribe(picker: Picker):
    ref = weakref.ref(picker)

    def callback(name: str, value: Any) -> None:
        target = ref()
        if target is None:
            config.unsubscribe(callback)
            return
        target.config_changed(name, value)

    config.subscribe(callback)
    return callback


def picker() -> Picker:
    """A widget to choose the scheduler, workers, progress, rerun policy and cache."""
    return Picker()
