"""The failure record, readable: ``last_failure()`` as text and as an HTML table.

:func:`describe_call` shows the failed task as a call with its literal arguments;
:func:`format_failure` and :func:`failure_html` add the error, the worker, the inputs
and the trimmed worker traceback; :func:`register_formatters` makes IPython display
every :class:`~notebook_sched.failure.TaskFailure` that way (``%load_ext``, or the
first failure rendered in a shell).
"""

from __future__ import annotations

import html
import threading
from typing import Any

from ..calls import apply, funcname
from ..environment import ipython_shell
from ..failure import RerunOutcome, TaskFailure
from ..graph import is_task
from ..tracebacks import name_cells, trim_remote_traceback

__all__ = ["describe_call", "format_failure", "failure_html", "register_formatters"]

MAX_REPR = 120


def _short(value: Any, limit: int = MAX_REPR) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__} object (repr failed)>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_call(failure: TaskFailure, limit: int = 200) -> str | None:
    """The failed task as a call, with its literal arguments: ``invert(3)``.

    Arguments that are keys of the graph are shown as the key (their values are the
    inputs); so a task of a ``map`` shows which element it had.  None when the task is
    not a plain ``(function, *args)`` tuple of a recorded graph.
    """
    graph = failure.graph
    try:
        task = graph[failure.key] if graph is not None else None
    except Exception:
        return None
    if not is_task(task):
        return None
    func, args, kwargs = task[0], list(task[1:]), {}
    if func is apply and len(args) == 3 and isinstance(args[1], list):
        func, args, kwargs = args[0], args[1], args[2] if isinstance(args[2], dict) else {}
    parts = [_short(a, 60) for a in args]
    parts += [f"{k}={_short(v, 60)}" for k, v in kwargs.items()]
    text = f"{funcname(func)}({', '.join(parts)})"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _rerun(failure: TaskFailure) -> str:
    """What the local rerun found, as one phrase (``failure.extra["rerun"]``)."""
    outcome = RerunOutcome(failure.extra["rerun"])
    return outcome.describe(failure.extra.get("rerun_detail"))


def format_failure(failure: TaskFailure) -> str:
    """A plain-text report of a failure: key, error, worker, inputs, trimmed traceback."""
    exc = failure.exception
    lines = [
        f"TaskFailure: task {failure.key!r} failed on the {failure.backend!r} scheduler "
        f"(worker {failure.worker})",
        f"  error:  {type(exc).__name__}: {exc}",
    ]
    call = describe_call(failure)
    if call is not None:
        lines.append(f"  task:   {call}")
    if failure.inputs is None:
        lines.append("  inputs: not brought back")
    elif not failure.inputs:
        lines.append("  inputs: none (its arguments are all in the task above)")
    else:
        lines.append("  inputs:")
        lines.extend(f"    {_short(k, 50)}: {_short(v)}" for k, v in failure.inputs.items())
    if "rerun" in failure.extra:
        lines.append(f"  local rerun: {_rerun(failure)}")
    if failure.remote_traceback:
        lines.append("  worker traceback (notebook_sched frames left out):")
        text = name_cells(trim_remote_traceback(failure.remote_traceback), ipython_shell())
        lines.extend("    " + line for line in text.rstrip("\n").splitlines())
    lines.append(
        "  %debug after the error opens the task's frame; %sched_rerun reruns the whole "
        "graph on the sync scheduler."
    )
    return "\n".join(lines)


def failure_html(failure: TaskFailure) -> str:
    """An HTML table of the same report, for notebooks."""
    esc = html.escape
    exc = failure.exception
    rows = [
        ("key", f"<code>{esc(_short(failure.key))}</code>"),
        ("error", f"<b>{esc(type(exc).__name__)}</b>: {esc(str(exc))}"),
        ("scheduler", f"{esc(failure.backend)} (worker {esc(str(failure.worker))})"),
    ]
    call = describe_call(failure)
    if call is not None:
        rows.insert(1, ("task", f"<code>{esc(call)}</code>"))
    if failure.inputs is None:
        rows.append(("inputs", "<i>not brought back</i>"))
    else:
        items = "".join(
            f"<li><code>{esc(_short(k, 50))}</code>: <code>{esc(_short(v))}</code></li>"
            for k, v in failure.inputs.items()
        )
        rows.append(("inputs", f"<ul style='margin:0'>{items}</ul>" if items else "<i>none</i>"))
    if "rerun" in failure.extra:
        rows.append(("local rerun", esc(_rerun(failure))))
    if failure.remote_traceback:
        text = esc(name_cells(trim_remote_traceback(failure.remote_traceback), ipython_shell()))
        rows.append(("worker traceback", f"<pre style='margin:0'>{text}</pre>"))
    body = "".join(
        f"<tr><th style='text-align:left;vertical-align:top'>{k}</th>"
        f"<td style='text-align:left'>{v}</td></tr>"
        for k, v in rows
    )
    return (
        f"<div><b>notebook_sched task failure</b><table>{body}</table>"
        f"<small>%debug opens the task's frame; %sched_rerun reruns the graph on sync."
        f"</small></div>"
    )


_formatters_lock = threading.Lock()
_formatters_shell: Any = None


def register_formatters(shell: Any) -> None:
    """Make IPython display :class:`TaskFailure` records as text and HTML."""
    global _formatters_shell
    with _formatters_lock:
        if _formatters_shell is shell:
            return
        _formatters_shell = shell
    formatters = shell.display_formatter.formatters
    formatters["text/plain"].for_type(
        TaskFailure, lambda obj, p, cycle: p.text(format_failure(obj))
    )
    formatters["text/html"].for_type(TaskFailure, failure_html)


def ensure_formatters() -> None:
    shell = ipython_shell()
    if shell is not None and getattr(shell, "display_formatter", None) is not None:
        register_formatters(shell)
