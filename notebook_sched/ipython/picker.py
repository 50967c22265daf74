"""The scheduler picker: a widget bound both ways to the config.

::

    notebook_sched.picker()

    scheduler  (o) sync       one task at a time in this thread: debugging, profiling, %debug
               (•) threads    a thread pool: NumPy, pandas and other code that releases the GIL
               ( ) processes  worker processes: pure-Python code with small inputs and outputs
    workers    [auto (2 CPUs) v]
    progress   [auto | on | off]        rerun  [auto | always | never]

The backends and their hints come from the scheduler registry when the picker is made,
so backends registered later (``distributed``) appear in pickers made after them.

Binding: a change in the widget calls ``config.set`` (global, so it applies to the next
compute); a change of the config (``%schedule``, ``config.set``, the end of a
``%%schedule`` cell) reaches the widget through ``config.subscribe`` and sets its
traits, which ipywidgets sends to the front end.  A flag stops the echo: while the
picker applies a config change to its widgets it does not write it back.  The
subscription holds the picker weakly and ends when the picker is closed or collected.

Front ends without widgets show the picker's text repr: the same text as ``%schedule``.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any

import ipywidgets as widgets

from .. import config, schedulers
from .describe import describe_settings

__all__ = ["Picker", "picker"]

_PROGRESS = [("auto", None), ("on", True), ("off", False)]
_RERUN = [("auto", "auto"), ("always", "always"), ("never", "never")]
_OTHER = "(other)"  # scheduler option shown when the config holds an executor or get function


def _worker_options(current: Any) -> list:
    cpus = os.cpu_count() or 1
    counts = sorted({*range(1, max(2 * cpus, 8) + 1), *([current] if current else [])})
    return [(f"auto ({cpus} CPUs)", None), *((str(n), n) for n in counts)]


class Picker(widgets.VBox):
    """Scheduler, workers, progress and rerun controls bound to ``notebook_sched.config``."""

    def __init__(self, **kwargs: Any):
        values = config.snapshot()
        backends = schedulers.names()
        self._names = list(backends)
        width = max(len(n) for n in self._names) + 2
        labels = [(f"{name.ljust(width)}{schedulers.hint(name)}", name) for name in self._names] + [
            (_OTHER, _OTHER)
        ]
        self.scheduler = widgets.RadioButtons(
            options=labels,
            value=self._scheduler_value(values["scheduler"]),
            layout=widgets.Layout(width="auto"),
            style={"description_width": "initial"},
        )
        self.workers = widgets.Dropdown(
            options=_worker_options(values["num_workers"]),
            value=values["num_workers"],
            description="workers",
        )
        self.progress = widgets.ToggleButtons(
            options=_PROGRESS, value=values["progress"], description="progress"
        )
        self.rerun = widgets.ToggleButtons(
            options=_RERUN, value=values["rerun"], description="rerun"
        )
        self.status = widgets.HTML()
        self._applying = threading.local()  # .active while writing config values into widgets
        super().__init__(
            [
                widgets.HTML("<b>notebook_sched</b> scheduler"),
                self.scheduler,
                self.workers,
                self.progress,
                self.rerun,
                self.status,
            ],
            **kwargs,
        )
        self.scheduler.observe(self._widget_changed("scheduler"), names="value")
        self.workers.observe(self._widget_changed("num_workers"), names="value")
        self.progress.observe(self._widget_changed("progress"), names="value")
        self.rerun.observe(self._widget_changed("rerun"), names="value")
        self._subscription = _subscribe(self)

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
                config.set(**{name: value})
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
            elif name == "num_workers":
                if value not in [v for _, v in self.workers.options]:
                    self.workers.options = _worker_options(value)
                self.workers.value = value
            elif name == "progress":
                self.progress.value = value
            elif name == "rerun":
                self.rerun.value = value
        finally:
            self._applying.active = False

    def close(self) -> None:
        config.unsubscribe(self._subscription)
        for child in (self.scheduler, self.workers, self.progress, self.rerun, self.status):
            child.close()
        super().close()

    def __repr__(self) -> str:
        return "notebook_sched picker (widgets not available here: use %schedule)\n" + (
            describe_settings()
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
    """A widget to choose the scheduler, workers, progress and rerun policy."""
    return Picker()
