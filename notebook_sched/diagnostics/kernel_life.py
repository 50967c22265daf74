"""Widgets across the kernel's life: the widget channel opened early, live views told of shutdown.

**The kernel status during a kernel's first widget.**  JupyterLab 4.4+ (and Notebook
7.4+) send the comm messages of a target to a kernel *subshell*, one per target, which
the front end creates (``create_subshell_request`` on the control channel) when the
first comm of that target appears.  ipykernel answers every control request with a
``status: busy`` and a ``status: idle`` on IOPub whose parent is that request, and the
front end's status bar takes any status message for the kernel's state (its
``untracked_message_types`` skip kernel-info and debug requests, not subshell ones).
So when a kernel's first widget appears while a cell computes (the progress bar of
the first compute that outlasts half a second: typically the first ``distributed``
one, which starts the cluster), the status bar reads "Idle" from then until the cell
ends, while the cell shows ``[*]``.  Later widgets reuse the subshell.  Nothing in
the kernel can stop the front end from asking; what we can choose is *when* it asks:
:func:`open_widget_channel` (called by ``%load_ext notebook_sched``) opens one hidden
widget, kept for the kernel's life, so the subshell is made while that short cell
runs and no compute's bar is ever the first widget of the kernel.  When the cell's
request comes from a front end that knows subshells (its header has a ``subshell_id``),
it then waits (up to ``SUBSHELL_WAIT``, usually a few milliseconds) for the subshell to
appear (ipykernel 7 lists its subshells), so that the front end's status messages come
before that cell ends and not during the next one, which *Run All* has queued already;
other front ends (nbclient, the classic notebook) ask for nothing and wait for nothing.

**Live views at shutdown.**  A progress bar or a cluster view that is live when the
kernel shuts down or restarts would stay frozen in the front end as it was last drawn
("12 / 41 tasks · ~16 s left", "running · live" with dead pids): the front end keeps
a widget's last state, and the kernel process is gone before the run ends.  Views that
draw a live state register with :func:`watch` while they do; on the first live view
the kernel's ``do_shutdown`` (which ipykernel calls on its control thread for a
``shutdown_request``, restart or not, even while a cell computes) is wrapped to call
each view's ``kernel_stopped(restart)`` first, which draws it stopped ("stopped:
kernel restarted") and stops its redraws.  A kernel that is killed outright (no
shutdown request) gets no such chance.

Nothing here imports IPython or ipywidgets before a kernel asks for them.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any

from ..environment import in_kernel, ipython_shell

__all__ = ["open_widget_channel", "watch", "unwatch", "stopped_text"]

SUBSHELL_WAIT = 3.0  # at most, for a subshell-aware front end's widget subshell
_lock = threading.Lock()  # guards _anchor, _hooked and _live
_anchor: Any = None  # the hidden widget that keeps the widget target's subshell open
_hooked: weakref.WeakSet = weakref.WeakSet()  # kernels whose do_shutdown we wrapped
_live: weakref.WeakSet = weakref.WeakSet()  # views to tell at shutdown


def stopped_text(restart: bool) -> str:
    """What a view says once the kernel has gone: ``stopped: kernel restarted``."""
    return "stopped: kernel restarted" if restart else "stopped: kernel shut down"


def open_widget_channel() -> None:
    """In a kernel with ipywidgets: open the hidden widget now (idempotent; see module
    docstring), so the front end's subshell for widget comms exists before a compute."""
    global _anchor
    if _anchor is not None or not in_kernel():
        return
    try:
        import ipywidgets
    except ImportError:
        return
    kernel = getattr(ipython_shell(), "kernel", None)
    subshells = getattr(getattr(kernel, "shell_channel_thread", None), "manager", None)
    before = _count(subshells)
    with _lock:
        if _anchor is not None:
            return
        _anchor = ipywidgets.Widget()  # never displayed: a comm, no view
    if before is None or not _subshell_aware(kernel):
        return  # no subshells here, or a front end that does not use them: no request
    # Wait (briefly) for the front end's subshell, so that its status messages come
    # before this cell ends, not during the next one (Run All queues it at once).
    deadline = time.monotonic() + SUBSHELL_WAIT
    while time.monotonic() < deadline:
        if (_count(subshells) or 0) > before:
            time.sleep(0.05)  # the control thread's idle status follows the reply
            return
        time.sleep(0.01)


def _subshell_aware(kernel: Any) -> bool:
    """Does the front end of the running cell know subshells?  JupyterLab 4.4+ puts a
    ``subshell_id`` (None for the main shell) in the header of every request it sends;
    jupyter_client, nbclient and older front ends send none."""
    try:
        return "subshell_id" in kernel.get_parent()["header"]
    except Exception:
        return False


def _count(subshells: Any) -> int | None:
    try:
        return len(subshells.list_subshell())
    except Exception:
        return None


def watch(view: Any) -> None:
    """Call ``view.kernel_stopped(restart)`` if the kernel shuts down while it is
    watched (until :func:`unwatch`).  Outside a kernel, does nothing."""
    kernel = getattr(ipython_shell(), "kernel", None)
    if kernel is None or not hasattr(kernel, "do_shutdown"):
        return
    with _lock:
        _live.add(view)
        if kernel in _hooked:
            return
        _hooked.add(kernel)
    original = kernel.do_shutdown

    def do_shutdown(restart: bool) -> Any:
        _stop_views(restart)
        return original(restart)  # a coroutine on ipykernel 6.x-7.x: the caller awaits it

    kernel.do_shutdown = do_shutdown


def unwatch(view: Any) -> None:
    with _lock:
        _live.discard(view)


def _stop_views(restart: bool) -> None:
    with _lock:
        views = list(_live)
        _live.clear()
    for view in views:
        try:
            view.kernel_stopped(restart)
        except Exception:
            pass  # the shutdown goes on whatever a view does
