"""When progress is shown: the run hook, and the ``progress()`` context manager.

Every ``get`` asks :func:`progress_hook` (a run hook, see ``api.add_run_hook``,
registered by ``diagnostics.install`` on first use), which decides from the
``progress`` option (per call, else the config) whether to attach a
:class:`~notebook_sched.diagnostics.bar.ProgressBar` to this run only:

``True``   show progress (a widget in a kernel, text elsewhere);
``False``  do not;
``None``   automatic: on in a notebook kernel, for a compute started on the main
           thread; off in scripts, terminal IPython, and background threads.

Either way a compute nested inside a task of another compute on the same thread gets
no bar of its own.  Inside a kernel, runs on the ``threads`` backend also get an
:class:`~notebook_sched.diagnostics.output.OutputRouter`, so what tasks print lands in
the cell that started them.

``with notebook_sched.progress(): ...`` turns progress on for the block (and picks
the view, the delay before it appears, and the redraw interval); it restores the
previous settings on exit, like ``config.set``.  Nothing here imports IPython or
ipywidgets: the kernel is detected from ``sys.modules``.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

from .. import config
from ..api import Additions, RunRequest
from ..environment import in_kernel

__all__ = ["progress_hook", "progress"]

# Guards _scopes; the innermost progress() block's settings come last.
_scopes_lock = threading.Lock()
_scopes: list[dict] = []
_nesting = threading.local()  # .depth: progress-hooked runs active on this thread


class progress:  # noqa: N801 - reads as a function, like config.set
    """Show progress for computes inside the block.

    ``enabled`` False hides it instead.  ``view`` is ``"auto"`` (a widget in a
    notebook, a text line elsewhere), ``"widget"``, ``"text"`` or a view object;
    ``delay`` is how long a compute runs before its bar appears (seconds);
    ``interval`` overrides how often the view redraws.
    """

    def __init__(
        self,
        enabled: bool = True,
        *,
        view: Any = "auto",
        delay: float = 0.5,
        interval: float | None = None,
    ):
        if enabled not in (True, False):
            raise ValueError(f"progress(enabled=...) must be True or False; got {enabled!r}.")
        if delay < 0 or (interval is not None and interval <= 0):
            raise ValueError(
                f"delay must be >= 0 and interval > 0 (seconds); got delay={delay!r}, "
                f"interval={interval!r}."
            )
        self.enabled = enabled
        self.settings = {"view": view, "delay": delay, "interval": interval}
        self._config: Any = None

    def __enter__(self) -> progress:
        self._config = config.set(progress=self.enabled)
        with _scopes_lock:
            _scopes.append(self.settings)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        with _scopes_lock:
            for i in range(len(_scopes) - 1, -1, -1):
                if _scopes[i] is self.settings:
                    del _scopes[i]
                    break
        self._config.__exit__(*exc_info)

    def __repr__(self) -> str:
        state = "on" if self.enabled else "off"
        return f"<notebook_sched.progress {state} view={self.settings['view']!r}>"


def _scope_settings() -> dict:
    with _scopes_lock:
        return dict(_scopes[-1]) if _scopes else {"view": "auto", "delay": 0.5, "interval": None}


def _wanted(setting: Any) -> bool:
    if setting is None:
        return threading.current_thread() is threading.main_thread() and in_kernel()
    return bool(setting)


def progress_hook(request: RunRequest) -> Additions:
    """Run hook: a progress bar and an output router for this run, when wanted; and a
    wrapper that counts the run on this thread (a compute nested in one of its tasks
    gets no bar of its own)."""
    depth = getattr(_nesting, "depth", 0)
    extra = _observers_for(request.backend, request.options.get("progress"), nested=depth > 0)
    return Additions(observers=tuple(extra), around=_counted)


def _counted(call: Callable[[], Any]) -> Any:
    __tracebackhide__ = True
    depth = getattr(_nesting, "depth", 0)
    _nesting.depth = depth + 1
    try:
        return call()
    finally:
        _nesting.depth = depth


def _observers_for(backend: str, setting: Any, nested: bool) -> list:
    show = not nested and _wanted(setting)
    from ..schedulers import capabilities

    threaded = capabilities(backend).runs_tasks_on_threads
    route = threaded and _kernel_loaded()
    if not (show or route):
        return []
    from .output import OutputRouter, current_parent

    parent = current_parent()
    extra: list = []
    if show:
        from .bar import ProgressBar

        settings = _scope_settings()
        extra.append(
            ProgressBar(
                settings["view"],
                delay=settings["delay"],
                interval=settings["interval"],
                parent=parent,
            )
        )
    if route and parent is not None:
        extra.append(OutputRouter(parent))
    return extra


def _kernel_loaded() -> bool:
    if "ipykernel" not in sys.modules:
        return False
    return in_kernel()
