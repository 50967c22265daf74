"""The IPython extension: ``%load_ext notebook_sched``.

Loading registers the magics of ``magics.py`` (with the input transformer and cell
event that run ``%%schedule`` cells as ordinary cells) and display formatters that render
``notebook_sched.last_failure()`` as text and HTML, and, in a kernel, opens the widget
channel early (``diagnostics/kernel_life.py``: so JupyterLab's status bar does not read
"Idle" while the first progress bar of the kernel appears).  Progress bars, local reruns of
failed tasks and traceback rendering need no extension: they are run hooks that act
whenever a kernel is detected.  Unloading removes the magics again.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_ipython_extension", "unload_ipython_extension"]

MAGICS = {
    "line": ("schedule", "sched_rerun", "sched_advise", "sched_jobs"),
    "cell": ("schedule",),
}


def load_ipython_extension(ipython: Any) -> None:
    from ..debug import register_formatters
    from ..diagnostics import register_displays
    from ..diagnostics.kernel_life import open_widget_channel
    from .magics import ScheduleMagics, close_cell_scopes, scope_cells

    ipython.register_magics(ScheduleMagics)
    register_formatters(ipython)
    register_displays(ipython)
    # Now, in this short cell: JupyterLab's request for a widget subshell makes its
    # status bar read "Idle"; mid-compute (a first progress bar) it would stay so.
    open_widget_channel()
    # %%schedule cells run as ordinary cells (see magics.py); before IPython's own
    # cell-magic transform, which would turn the cell into one run_cell_magic call.
    if scope_cells not in ipython.input_transformers_cleanup:
        ipython.input_transformers_cleanup.append(scope_cells)
    if close_cell_scopes not in ipython.events.callbacks["post_run_cell"]:
        ipython.events.register("post_run_cell", close_cell_scopes)


def unload_ipython_extension(ipython: Any) -> None:
    from .magics import close_cell_scopes, scope_cells

    table = ipython.magics_manager.magics
    for kind, names in MAGICS.items():
        for name in names:
            table[kind].pop(name, None)
    if scope_cells in ipython.input_transformers_cleanup:
        ipython.input_transformers_cleanup.remove(scope_cells)
    if close_cell_scopes in ipython.events.callbacks["post_run_cell"]:
        ipython.events.unregister("post_run_cell", close_cell_scopes)
