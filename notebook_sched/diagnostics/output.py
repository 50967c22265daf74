"""Route output of worker threads to the cell that started the compute.

ipykernel sends ``print`` output and displays with a *parent header*, the message of
the cell they belong to.  It keeps the header in a context variable, so a thread that
the kernel did not start (our worker threads, the progress ticker) falls back to the
kernel-wide header: whichever cell is executing *when the thread writes*.  Output of
a task that is still running after its cell ended (an interrupted run whose task is
stuck in C code; a compute started from a background thread) would land in a later
cell.  ipykernel 6.25+ has a per-thread API for this, ``set_thread_parent`` on the
output streams and the display publisher; :func:`adopt_parent` applies it to the
current thread, and :class:`OutputRouter` does so in every worker thread from the
``worker_started`` event (once per thread, so it costs nothing per task).
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from ..events import Observer

__all__ = ["current_parent", "adopt_parent", "OutputRouter"]


def current_parent() -> Any:
    """The kernel message being handled in this thread (the cell), or None."""
    from ..environment import ipython_shell

    shell = ipython_shell()
    kernel = getattr(shell, "kernel", None)
    if kernel is None:
        return None
    try:
        parent = kernel.get_parent()
    except Exception:
        return None
    return parent if parent and parent.get("header") else None


def adopt_parent(parent: Any) -> None:
    """Make this thread's stdout, stderr and displays belong to ``parent``'s cell."""
    from ..environment import ipython_shell

    targets = [sys.stdout, sys.stderr]
    shell = ipython_shell()
    display_pub = getattr(shell, "display_pub", None)
    if display_pub is not None:
        targets.append(display_pub)
    for target in targets:
        setter = getattr(target, "set_thread_parent", None)
        if setter is not None:
            try:
                setter(parent)
            except Exception:
                pass


class OutputRouter(Observer):
    """Adopts ``parent`` in each thread that runs a task (worker threads live per run)."""

    def __init__(self, parent: Any):
        self.parent = parent
        self._local = threading.local()
        self._main = threading.main_thread()

    def worker_started(self, worker: str) -> None:
        local = self._local
        if getattr(local, "adopted", False):
            return
        local.adopted = True
        if threading.current_thread() is not self._main:
            adopt_parent(self.parent)

    def __repr__(self) -> str:
        header = (self.parent or {}).get("header", {})
        return f"<OutputRouter cell={header.get('msg_id', '?')!r}>"
