"""The cluster's status view in a notebook: a table that updates while the cluster runs.

::

    LocalCluster · 2 workers · running · live
    worker    pid    status   running          queued  results  held
    worker-0  4242   running  slow_square (1)  3       5        1.2 MiB
    worker-1  4243   running  -                0       2        80 B

Displaying a :class:`~notebook_sched.distributed.LocalCluster` in a notebook (a cell
ending in ``cluster``) shows this view instead of a snapshot.  It is one ipywidgets
``HTML`` fed from the cluster's public snapshot, ``cluster.workers`` (running keys,
queued tasks, results and bytes held per worker), by a daemon thread that polls every
``INTERVAL`` seconds and sets the widget's value only when the table changed, so an
idle cluster sends nothing.  The thread holds the cluster weakly and stops when the
cluster closes (after drawing it closed), when the widget is closed, or after a
snapshot fails.  If the kernel shuts down or restarts while the view is live, it says
so ("stopped: kernel restarted", ``kernel_life``) instead of "running · live".  Its
text repr (front ends without widgets, saved notebooks) is the cluster's text status
at display time.

The display is hooked up by name (:func:`register`), so neither ipywidgets nor the
cluster module is imported before a cluster is displayed.
"""

from __future__ import annotations

import html
import threading
import weakref
from typing import Any

from . import kernel_life

__all__ = ["ClusterView", "register", "render"]

INTERVAL = 0.5  # seconds between snapshots while the view is live
MAX_KEYS = 3  # running keys shown per worker


def render(cluster: Any, live: bool = True, stopped: str = "") -> str:
    """The status table of ``cluster`` as HTML (from ``cluster.workers``); ``stopped``
    (why the view stopped following it) replaces the status and the table."""
    from ..distributed.protocol import format_bytes
    from .progress import prefix_function

    status = stopped or cluster.status
    workers = cluster.workers if status == "running" else []
    prefix = prefix_function()
    rows = []
    for info in workers:
        names: dict[str, int] = {}
        for key in info.running:
            names[prefix(key)] = names.get(prefix(key), 0) + 1
        running = ", ".join(f"{html.escape(n)} ({c})" for n, c in list(names.items())[:MAX_KEYS])
        rows.append(
            f"<tr><td>{html.escape(info.name)}</td><td>{info.pid or '?'}</td>"
            f"<td>{html.escape(info.status)}</td><td>{running or '-'}</td>"
            f"<td>{info.queued}</td><td>{info.results_held}</td>"
            f"<td>{format_bytes(info.bytes_held)}</td></tr>"
        )
    head = "".join(
        f"<th style='text-align:left'>{h}</th>"
        for h in ("worker", "pid", "status", "running", "queued", "results", "held")
    )
    state = f"{status} · live" if live and status == "running" else html.escape(status)
    title = (
        f"<b>LocalCluster</b> · {cluster.n_workers} workers, {cluster.threads_per_worker} "
        f"thread(s) each, memory limit {format_bytes(cluster.memory_limit)} · {state}"
    )
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    return f"<div>{title}{table if rows else ''}</div>"


class ClusterView:
    """A live HTML widget of one cluster (see module docstring)."""

    def __init__(self, cluster: Any, interval: float = INTERVAL):
        import ipywidgets as widgets

        class _LiveHTML(widgets.HTML):
            text = ""

            def __repr__(self) -> str:
                return self.text

        self.interval = interval
        self._cluster = weakref.ref(cluster)
        self.widget = _LiveHTML(value=render(cluster))
        self.widget.text = str(cluster)
        self._stop = threading.Event()
        self._draw_lock = threading.Lock()  # a redraw does not overwrite the stopped view
        self._thread = threading.Thread(
            target=self._follow, name="notebook_sched-cluster-view", daemon=True
        )
        self._thread.start()
        kernel_life.watch(self)  # drawn stopped if the kernel goes while it is live

    def _follow(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                cluster = self._cluster()
                if cluster is None or self.widget.comm is None:
                    return
                try:
                    value = render(cluster)
                except Exception:
                    return  # the cluster is closing; the last table stays
                with self._draw_lock:
                    if not self._stop.is_set() and value != self.widget.value:
                        self.widget.value = value  # a trait set: one comm message
                if cluster.status == "closed":  # (not "closing": draw it closed first)
                    return
                del cluster
        finally:
            kernel_life.unwatch(self)

    def kernel_stopped(self, restart: bool) -> None:
        """The kernel is shutting down (``kernel_life``): say so instead of "running ·
        live" over workers that are about to go, and stop following."""
        self._stop.set()
        note = kernel_life.stopped_text(restart)
        cluster = self._cluster()
        with self._draw_lock:
            if cluster is not None:
                self.widget.value = render(cluster, live=False, stopped=note)
            else:
                self.widget.value = f"<div><b>LocalCluster</b> · {note}</div>"
            self.widget.text = f"LocalCluster: {note}"

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def _display(cluster: Any) -> None:
    from IPython.display import display

    display(ClusterView(cluster).widget)


def register(shell: Any) -> None:
    """Make IPython display LocalCluster objects as the live view (idempotent)."""
    formatter = shell.display_formatter.ipython_display_formatter
    formatter.for_type_by_name("notebook_sched.distributed.cluster", "LocalCluster", _display)
