"""The IPython extension: ``%load_ext notebook_sched``.

Loading registers the magics of ``magics.py`` and display formatters that render
``notebook_sched.last_failure()`` as text and HTML.  Progress bars, local reruns of
failed tasks and traceback rendering need no extension: they are run hooks that act
whenever a kernel is detected.  Unloading removes the magics again.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_ipython_extension", "unload_ipython_extension"]

MAGICS = {"line": ("schedule", "sched_rerun"), "cell": ("schedule",)}


def load_ipython_extension(ipython: Any) -> None:
    from ..debug import register_formatters
    from .magics import ScheduleMagics

    ipython.register_magics(ScheduleMagics)
    register_formatters(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    table = ipython.magics_manager.magics
    for kind, names in MAGICS.items():
        for name in names:
            table[kind].pop(name, None)
