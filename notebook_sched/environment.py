"""Where we run: an IPython shell, a Jupyter kernel, or a plain script.

Pure lookups in ``sys.modules``: nothing here imports IPython or ipykernel, so asking
costs nothing in a script or a worker process.  It sits at the bottom (beside
``events``) because both the debugging layer (``debug/``: whether to rerun and render
a failure) and the diagnostics (whether to show a widget, route output to a cell)
ask it, and neither should import the other to do so.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["ipython_shell", "in_kernel"]


def ipython_shell() -> Any:
    """The running IPython shell, or None; never imports IPython itself."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return None
    try:
        return ipython.get_ipython()
    except Exception:
        return None


def in_kernel() -> bool:
    """True inside a Jupyter kernel (not terminal IPython, not a plain script)."""
    if "ipykernel" not in sys.modules:
        return False
    shell = ipython_shell()
    return shell is not None and getattr(shell, "kernel", None) is not None
