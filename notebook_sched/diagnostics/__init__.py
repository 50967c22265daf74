"""Listeners of the event protocol: progress bars, the profiler, task-stream plots.

Everything here observes runs through ``notebook_sched.events``, so it works the same
on every backend.  Modules load on first use: importing this package costs nothing,
and ipywidgets / matplotlib are imported only by the widget view and the plots.

``progress``     context manager turning inline progress on for a block (``hooks.py``)
``ProgressBar``  the observer behind it: model + view + ticker thread (``bar.py``)
``Profiler``     records every task; ``.plot()`` and ``.summary()`` (``profiler.py``)
``ClusterView``  a cluster's status table, live while it runs (``cluster_view.py``)
``Advisor``      measures tasks (CPU, the GIL) and advises a scheduler (``advice.py``)

:func:`install` registers this layer's run hooks (progress, then advice; see
``api.add_run_hook``), the drawing behind ``Delayed.visualize()`` and, in IPython, the
cluster display.  The package root calls it on first use (the first ``get`` or
``config`` change, ``%load_ext``), after ``debug.install``, whose failure hook thus
wraps these: a failure is rerun after the progress bar has turned red.  Nothing is
registered at ``import notebook_sched``.  Where we run (a kernel, a shell) is asked
of ``notebook_sched.environment``; this package does not import ``debug``.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["progress", "ProgressBar", "Profiler", "Advisor", "advise", "install"]

_LAZY = {
    "progress": "notebook_sched.diagnostics.hooks",
    "ProgressBar": "notebook_sched.diagnostics.bar",
    "Profiler": "notebook_sched.diagnostics.profiler",
    "Advisor": "notebook_sched.diagnostics.advice",
    "advise": "notebook_sched.diagnostics.advice",
}


def install() -> None:
    """Register the progress and advice run hooks with ``api`` (idempotent)."""
    from ..api import add_run_hook
    from ..lazy import set_visualizer
    from .hooks import progress_hook

    add_run_hook(progress_hook)
    add_run_hook(advise_hook)
    set_visualizer(_visualize)
    register_displays()


def _visualize(obj: Any, filename: str | None = None, **options: Any) -> Any:
    from .graph_plot import visualize

    return visualize(obj, filename, **options)


def advise_hook(request: Any) -> Any:
    """The advice run hook, loaded on first use (``advice.py``)."""
    from .advice import advise_hook as hook

    return hook(request)


def register_displays(shell: Any = None) -> None:
    """In IPython: clusters display as the live status view (``cluster_view.py``)."""
    from ..environment import ipython_shell

    shell = shell if shell is not None else ipython_shell()
    if shell is not None and getattr(shell, "display_formatter", None) is not None:
        from .cluster_view import register

        register(shell)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'notebook_sched.diagnostics' has no attribute {name!r}")
