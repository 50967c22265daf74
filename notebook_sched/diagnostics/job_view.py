"""The progress view of a background job: it stays in the cell that submitted it.

::

    notebook_sched · job-3 · processes · 40 / 64 tasks · 1.2 s      [########----]
    (when it ends:)  ... · done (green) / failed: ValueError: ... (red) / cancelled

A job outlives its cell, so this view differs from the compute bar (``bar.py``) in
when and where things happen:

* the widgets are **created and displayed on the submitting thread**, inside the
  cell that called ``submit`` (ipykernel files a display under the parent header of
  the message being executed, so doing it later from another thread would put the
  bar in whatever cell runs then);
* afterwards they are **only updated by setting traits**, from one ticker thread for
  all live jobs (every ``INTERVAL`` s).  A trait change is a comm message addressed to
  the widget's model, not to a cell: the bar keeps moving after its cell finished,
  while other cells run, and a cleared output only hides it.  Widget state lives in
  the kernel and the front end's widget manager, so a reopened notebook shows the
  last state saved;
* the ticker stops when no job is live (no thread is left behind).

The text view (``view="text"``, or outside a kernel with ``progress=True``) writes
one line when the job ends, to the submitting cell's stream (the job thread runs in
that cell's context, see ``background/``).  This module knows jobs only by duck typing
(``name``, ``backend``, ``progress``, ``elapsed``, ``state``, ``describe()``): the
jobs layer stands above it.
"""

from __future__ import annotations

import html
import sys
import threading
from typing import Any

__all__ = ["make_job_view", "JobWidgetView", "JobTextView", "INTERVAL"]

INTERVAL = 0.2  # seconds between redraws of live job views
STYLES = {"finished": "success", "failed": "danger", "cancelled": "warning"}
COLOURS = {"finished": "green", "failed": "#c00", "cancelled": "#b60"}

# Guards _live and _ticker: the views to redraw, and the thread that does it.
_lock = threading.Lock()
_live: dict[int, tuple[Any, Any]] = {}  # job id -> (job, view)
_ticker: threading.Thread | None = None


def make_job_view(job: Any, view: Any = "auto") -> Any:
    """A view for ``job``, shown now (call on the submitting thread): ``"auto"`` is a
    widget in a kernel's main thread with ipywidgets, else none; ``"widget"``,
    ``"text"``, True (widget if possible, else text)."""
    from ..environment import in_kernel
    from .bar import _have_widgets

    widgets_ok = in_kernel() and _have_widgets()
    if view == "auto":
        if not (widgets_ok and threading.current_thread() is threading.main_thread()):
            return None
        view = "widget"
    elif view is True:
        view = "widget" if widgets_ok else "text"
    if view == "widget":
        shown = JobWidgetView(job)
    elif view == "text":
        shown = JobTextView(job)
    else:
        raise ValueError(f"progress must be True, False, None, 'widget' or 'text'; got {view!r}.")
    _follow(job, shown)
    return shown


def _follow(job: Any, view: Any) -> None:
    global _ticker
    with _lock:
        _live[job.id] = (job, view)
        if _ticker is None or not _ticker.is_alive():
            _ticker = threading.Thread(target=_tick, name="notebook_sched-jobs", daemon=True)
            _ticker.start()


def _tick() -> None:
    global _ticker
    stop = threading.Event()
    while not stop.wait(INTERVAL):
        with _lock:
            live = list(_live.values())
            if not live:
                _ticker = None
                return
        for job, view in live:
            try:
                view.update(job)
            except Exception:  # a closed comm, a broken front end: the job goes on
                with _lock:
                    _live.pop(job.id, None)


def _job_box(widgets: Any) -> type:
    """A VBox whose text repr (front ends without widgets, saved outputs) is a fixed
    line naming the job: the live state is in the widgets, not in a stale text."""

    class JobBox(widgets.VBox):
        line = ""

        def __repr__(self) -> str:
            return self.line or "<notebook_sched job>"

    return JobBox


class JobWidgetView:
    """An HTML line and a bar, built and displayed on the submitting thread."""

    def __init__(self, job: Any):
        import ipywidgets as widgets
        from IPython.display import display

        self.header = widgets.HTML(value=self._header(job))
        self.bar = widgets.IntProgress(
            value=0, min=0, max=1, layout=widgets.Layout(width="auto", max_width="40em")
        )
        self.box = _job_box(widgets)([self.header, self.bar])
        self.box.line = f"notebook_sched {job.name} ({job.backend})"
        self.handle = display(self.box, display_id=True)
        self._ended = threading.Lock()

    @staticmethod
    def _header(job: Any) -> str:
        state = job.state
        parts = ["<b>notebook_sched</b>", html.escape(job.name), html.escape(job.backend)]
        done, total = job.progress
        parts.append(f"{done} / {total} tasks" if total else "compiling")
        parts.append(f"{job.elapsed:.1f} s")
        if state in COLOURS:
            text = html.escape(job.describe())
            parts.append(f"<b style='color:{COLOURS[state]}'>{text}</b>")
        return " · ".join(parts)

    def update(self, job: Any) -> None:
        done, total = job.progress
        header = self._header(job)
        style = STYLES.get(job.state, "")
        bar = self.bar
        with bar.hold_sync():  # one comm message
            if bar.max != max(total, 1):
                bar.max = max(total, 1)
            if bar.value != min(done, bar.max):
                bar.value = min(done, bar.max)
            if bar.bar_style != style:
                bar.bar_style = style
        if self.header.value != header:
            self.header.value = header

    def job_ended(self, job: Any) -> None:
        with _lock:
            _live.pop(job.id, None)
        with self._ended:
            done, total = job.progress
            if job.state == "finished":
                self.bar.max = max(total, 1)
                self.bar.value = self.bar.max  # literals count as done: end full
            self.update(job)

    def __repr__(self) -> str:
        return f"<JobWidgetView {self.header.value!r}>"


class JobTextView:
    """One line when the job ends (a script, or ``progress="text"``)."""

    def __init__(self, job: Any, stream: Any = None):
        self.stream = stream

    def update(self, job: Any) -> None:
        """Text views do not redraw: a job's line would interleave with other output."""

    def job_ended(self, job: Any) -> None:
        with _lock:
            _live.pop(job.id, None)
        stream = self.stream or sys.stderr
        print(f"notebook_sched {job.name} ({job.backend}): {job.describe()}", file=stream)
