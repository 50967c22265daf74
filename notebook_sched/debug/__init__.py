"""Debugging failed tasks: local reruns, traceback rendering, readable failure records.

Split by concern; each module opens with its design note:

``rerun.py``    rerun a task that failed in another process here, with its recorded
                inputs, so ``%debug`` lands in its frame (the ``failure_hook`` run
                hook); rerun a whole failed graph on ``sync`` (``%sched_rerun``)
``display.py``  what IPython shows for a failure: one headline, the worker's
                traceback, our frames trimmed (``tracebacks.py``); ``post_mortem``
``report.py``   ``last_failure()`` as text and HTML: the task as a call, its inputs

Where we run (an IPython shell, a kernel) is asked of ``notebook_sched.environment``,
which the diagnostics ask too: they do not import this package.  :func:`install`
registers the run hook and the failure-record hook; the package root calls it on
first use (the first ``get``, ``%load_ext``), never at ``import notebook_sched``.
Nothing here imports IPython; the shell is looked up only when already imported.
"""

from __future__ import annotations

from ..environment import in_kernel, ipython_shell
from ..tracebacks import PACKAGE_DIR, name_cells, trim_remote_traceback, trim_traceback  # noqa: F401
from .display import attach_renderer, post_mortem, prepare_display, render_traceback  # noqa: F401
from .report import describe_call, failure_html, format_failure, register_formatters
from .rerun import RERUN_NOTE, RerunUnavailable, failure_hook, rerun_graph, rerun_task  # noqa: F401

__all__ = [
    "RerunUnavailable",
    "post_mortem",
    "failure_hook",
    "prepare_display",
    "rerun_task",
    "rerun_graph",
    "render_traceback",
    "trim_remote_traceback",
    "name_cells",
    "format_failure",
    "describe_call",
    "failure_html",
    "register_formatters",
    "ipython_shell",
    "in_kernel",
    "install",
]


def install() -> None:
    """Register the failure run hook and the failure-record display hook (idempotent)."""
    from ..api import add_run_hook
    from ..failure import set_display_hook

    add_run_hook(failure_hook)
    set_display_hook(prepare_display)
