"""The progress observer: a model per run, a view, and a ticker thread that redraws.

::

    backend threads --events--> ProgressBar --append key / record failure--> ProgressModel
                                     |                                          ^
                          graph_started: start ticker                 snapshot() |
                                     v                                          |
    ticker thread:  wait `delay` -> view.show(snapshot) -> every `interval`: view.update
    caller thread:  graph_finished -> stop ticker -> view.final(snapshot)  (if shown)

Why a ticker thread: while a cell computes, the kernel's main thread is blocked (in
the compute itself under ``sync``, waiting under ``threads``), so nothing that waits
for the event loop can redraw.  The ticker only sets widget traits; ipywidgets sends
each change as a comm message straight onto the kernel's IOPub socket, which ipykernel
serves from its own thread, so the bar moves while the cell is blocked.  The ticker is
also what throttles: events never draw, the ticker draws at most ``1/interval`` times a
second, and a run shorter than ``delay`` never shows anything.

A shown bar is watched by ``kernel_life`` until its run ends: if the kernel shuts down
or restarts first, :meth:`ProgressBar.kernel_stopped` draws it stopped.

Views implement ``show(snapshot)``, ``update(snapshot)`` and ``final(snapshot)``
(``text.py``, ``widget.py``).  One ProgressBar follows one run at a time; the run hook
(``hooks.py``) makes a new one per compute.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Hashable
from typing import Any

from ..events import Observer, RunInfo
from . import kernel_life
from .progress import ProgressModel

__all__ = ["ProgressBar", "make_view"]

DEFAULT_DELAY = 0.5
WIDGET_INTERVAL = 0.1
TEXT_INTERVAL = 0.2


def make_view(view: Any = "auto", title: str = "") -> Any:
    """A view object: ``"widget"``, ``"text"``, ``"auto"`` (widget in a kernel), or a view."""
    if not isinstance(view, str):
        return view
    if view == "auto":
        from ..environment import in_kernel

        view = "widget" if in_kernel() and _have_widgets() else "text"
    if view == "widget":
        from .widget import WidgetView

        return WidgetView(title)
    if view == "text":
        from .text import TextView

        return TextView(title)
    raise ValueError(f"view must be 'auto', 'widget', 'text' or a view object; got {view!r}.")


def _have_widgets() -> bool:
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


class ProgressBar(Observer):
    """Shows the progress of the runs it observes, after ``delay`` seconds."""

    def __init__(
        self,
        view: Any = "auto",
        *,
        delay: float = DEFAULT_DELAY,
        interval: float | None = None,
        parent: Any = None,
    ):
        self.view_spec = view
        self.delay = delay
        self.interval = interval
        self.parent = parent  # the kernel message (cell) the view belongs to
        self.model: ProgressModel | None = None
        self.view: Any = None
        self.shown = False
        # The engine calls this list's append directly for every finished task (the
        # cheapest event: no clock, no Python frame); the model reads the list.
        self._finished_keys: list = []
        self.task_done = self._finished_keys.append
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._draw_lock = threading.Lock()  # serialises show/update/final on the view

    def __repr__(self) -> str:
        if self.model is None:
            return "<ProgressBar idle>"
        return (
            f"<ProgressBar {self.model.state()} {len(self.model.done)}/{self.model.total} "
            f"tasks shown={self.shown}>"
        )

    # -- events -----------------------------------------------------------------------
    def graph_started(self, run: RunInfo) -> None:
        self._finished_keys.clear()
        cached = run.extra.get("substituted", ())  # the result cache's hits: done at once
        self.model = ProgressModel(
            run.task_keys, run.scheduler, run.workers, self._finished_keys, cached
        )
        workers = f", {run.workers} workers" if run.workers > 1 else ""
        self.view = make_view(self.view_spec, f"{run.scheduler}{workers}")
        self.shown = False
        self._stop = threading.Event()
        self._ticker = threading.Thread(
            target=self._tick, name="notebook_sched-progress", daemon=True
        )
        self._ticker.start()

    def task_failed(self, key: Hashable, worker: str, error: BaseException) -> None:
        self.model.task_failed(key, error)

    def graph_finished(self, run: RunInfo, error: BaseException | None) -> None:
        model = self.model
        if model is None:
            return
        model.finish(error)
        self._stop.set()
        if self._ticker is not None and self._ticker is not threading.current_thread():
            self._ticker.join(5.0)
        with self._draw_lock:
            if self.shown:
                self.view.final(model.snapshot())
        kernel_life.unwatch(self)

    def kernel_stopped(self, restart: bool) -> None:
        """The kernel is shutting down mid-run (``kernel_life``): draw the run stopped,
        not running with a time left, and stop redrawing."""
        model = self.model
        if model is None:
            return
        model.stop(kernel_life.stopped_text(restart))
        self._stop.set()
        with self._draw_lock:
            if self.shown:
                self.view.final(model.snapshot())

    # -- ticker thread ------------------------------------------------------------------
    def _tick(self) -> None:
        try:
            self._adopt_parent()
            self._draw_until_stopped()
        except Exception as exc:  # a broken view must not lose the computation
            self.shown = False  # graph_finished then leaves the view alone
            warnings.warn(
                f"notebook_sched: the progress view failed and is switched off: {exc!r}",
                RuntimeWarning,
                stacklevel=1,
            )

    def _draw_until_stopped(self) -> None:
        stop, model, view = self._stop, self.model, self.view
        if stop.wait(self.delay):
            return
        interval = self.interval or getattr(view, "interval", WIDGET_INTERVAL)
        with self._draw_lock:
            if model.finished:
                return
            view.show(model.snapshot())
            self.shown = True
        kernel_life.watch(self)  # drawn stopped if the kernel goes before the run ends
        while not stop.wait(interval):
            with self._draw_lock:
                view.update(model.snapshot())

    def _adopt_parent(self) -> None:
        """Send this thread's output and displays to the cell that started the run."""
        if self.parent is None:
            return
        from .output import adopt_parent

        adopt_parent(self.parent)
