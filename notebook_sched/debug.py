"""Debugging failed tasks: local reruns, trimmed tracebacks, readable failure records.

Under ``sync`` and ``threads`` a failed task's exception already carries the task's
live frames, so ``%debug`` lands in the task.  A task that failed in another process
(``processes``, ``distributed``, a process-pool executor) comes back as a pickled
exception with the worker's traceback as text: no frames, no locals.  So, as the
failure propagates out of ``get``, :func:`failure_hook` (a run hook, see
``api.add_run_hook``) reruns the failed task *here*, on the calling thread, with the
inputs recorded in its :class:`~notebook_sched.failure.TaskFailure`, and raises what
the rerun raised.  ``sys.last_traceback`` then ends in the task function's frame with
its locals, which is where ``%debug`` and ``%pdb on`` go.

Policy (``config.rerun`` or ``get(..., rerun=)``): ``"always"``; ``"never"`` (tasks with
side effects); ``"auto"``: only when an IPython shell is running in this process (a
notebook kernel or terminal IPython), i.e. when a debugger can use the frames.

Honesty rules of the rerun:

* it runs only tasks that raised a Python exception in another process (a worker that
  died, e.g. from a segfault, is never rerun in the kernel);
* if the rerun does not fail, the original error is raised with a note saying so;
  the rerun's result is never returned;
* if the rerun raises an exception of another type, the original error is raised
  (the rerun did not reproduce it) and the rerun's exception is kept in the record.

Rendering: in IPython, exceptions from a run get a ``_render_traceback_`` that says
once, first, which task failed where and what the local rerun found; then the
worker's traceback when the local frames are not the same, and the local frames
without notebook_sched's own (``tracebacks.py`` trims them); our notes are not
repeated under the error.  Errors that are not task failures (GraphError,
KeyboardInterrupt, a dead worker) get the same trimming.  The real
``__traceback__`` is untouched, so the debugger still sees every frame.
:func:`register_formatters` makes ``last_failure()`` render as text and HTML (the
task as a call with its literal arguments, :func:`describe_call`).  :func:`post_mortem`
plays a ``%debug`` session with its commands given up front (tutorials, tests).

Nothing here imports IPython; the shell is looked up only when already imported.
"""

from __future__ import annotations

import html
import sys
import threading
import types
from collections.abc import Hashable, Iterator, Mapping
from typing import Any

from .failure import RemoteTraceback, TaskFailure, last_failure
from .tracebacks import PACKAGE_DIR, name_cells, trim_remote_traceback, trim_traceback  # noqa: F401

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
]

RERUN_NOTE = "[notebook_sched] rerun"  # prefix of the notes this module adds
MAX_REPR = 120


class RerunUnavailable(RuntimeError):
    """The failed task cannot be rerun here (no graph, or inputs that did not come back)."""


# -- environment -------------------------------------------------------------------


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


# -- local rerun -------------------------------------------------------------------


class _RerunGraph(Mapping):
    """The failed task over the full graph's key set, every other key a placeholder.

    Compiling it parses the task exactly as the original run did (a value is a
    dependency iff it is a key of the full graph), but culls at the task's direct
    inputs, so the cost does not depend on the graph's size.
    """

    def __init__(self, full: Mapping, key: Hashable):
        self.full = full
        self.key = key

    def __contains__(self, key: object) -> bool:
        try:
            return key in self.full
        except TypeError:
            return False

    def __getitem__(self, key: Hashable) -> Any:
        if key == self.key:
            return self.full[key]
        if key in self.full:
            return None
        raise KeyError(key)

    def __iter__(self) -> Iterator:
        return iter(self.full)

    def __len__(self) -> int:
        return len(self.full)


def _compile_for_rerun(failure: TaskFailure) -> tuple[tuple, list]:
    """``(spec, values)`` that run the failed task in this process."""
    from .graph import compile_graph

    graph = failure.graph
    if graph is None or not _has_key(graph, failure.key):
        raise RerunUnavailable(
            f"the graph of task {failure.key!r} was not recorded, so it cannot be rerun here"
        )
    compiled = compile_graph(_RerunGraph(graph, failure.key), [failure.key])
    inputs = failure.inputs or {}
    values: list = [None] * len(compiled)
    for dep_key, i in compiled.index.items():
        if dep_key == failure.key:
            continue
        if dep_key not in inputs:
            raise RerunUnavailable(
                f"input {dep_key!r} of task {failure.key!r} could not be brought back "
                f"from the {failure.backend!r} scheduler"
            )
        values[i] = inputs[dep_key]
    return compiled.specs[compiled.index[failure.key]], values


def _has_key(graph: Any, key: Hashable) -> bool:
    try:
        return key in graph
    except TypeError:
        return False


def rerun_task(failure: TaskFailure) -> BaseException | None:
    """Run the failed task here with its recorded inputs.

    Returns the exception the rerun raised (its traceback holds the task's frames),
    or None if it did not fail.  Raises :class:`RerunUnavailable` when it cannot run.
    """
    __tracebackhide__ = True
    from .engine import run_spec

    spec, values = _compile_for_rerun(failure)
    try:
        run_spec(spec, values)
    except Exception as exc:
        return exc
    return None


def _should_rerun(failure: TaskFailure, policy: str | None) -> bool:
    if failure.remote_traceback is None:
        return False  # local frames exist already, or the worker died (never rerun that)
    if policy == "always":
        return True
    if policy == "auto":
        return ipython_shell() is not None
    return False


def _rerun_for_debugging(failure: TaskFailure, original: BaseException) -> BaseException | None:
    """The exception to raise instead of ``original``, or None to raise ``original``."""
    __tracebackhide__ = True
    where = f"{failure.worker} of the {failure.backend!r} scheduler"
    try:
        again = rerun_task(failure)
    except RerunUnavailable as why:
        failure.extra["rerun"] = f"not possible: {why}"
        original.add_note(f"{RERUN_NOTE} here was not possible: {why}.")
        return None
    except BaseException:
        failure.extra["rerun"] = "interrupted"
        raise
    if again is None:
        failure.extra["rerun"] = "did not fail"
        original.add_note(
            f"{RERUN_NOTE}: task {failure.key!r} failed in {where}; rerun here with the same "
            f"inputs, it did NOT fail (the failure depends on where it ran). The error above "
            f"is the worker's: notebook_sched.last_failure().remote_traceback."
        )
        return None
    failure.extra["rerun_exception"] = again
    if type(again) is not type(original):
        failure.extra["rerun"] = f"raised a different error: {type(again).__name__}: {again}"
        original.add_note(
            f"{RERUN_NOTE} here with the same inputs raised a different error "
            f"({type(again).__name__}: {again}); the error above is the worker's. The "
            f"rerun's exception is in notebook_sched.last_failure().extra['rerun_exception']."
        )
        return None
    failure.extra["rerun"] = "raised the same error"
    for note in getattr(original, "__notes__", None) or ():
        if not note.startswith(RERUN_NOTE) and note not in (getattr(again, "__notes__", ()) or ()):
            again.add_note(note)
    again.add_note(
        f"{RERUN_NOTE} here with the same inputs (it failed in {where}): it failed the same "
        f"way, so these frames are the task's and %debug lands in it."
    )
    try:
        again.__notebook_sched_failure__ = failure  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        pass
    return again


def failure_hook(call, backend: str, options: dict) -> Any:
    """Run hook: rerun remote failures locally (per policy) and attach the renderer."""
    __tracebackhide__ = True
    try:
        return call()
    except BaseException as exc:
        failure = getattr(exc, "__notebook_sched_failure__", None)
        in_shell = ipython_shell() is not None
        if not isinstance(failure, TaskFailure) or failure.exception is not exc:
            # GraphError, KeyboardInterrupt, a dead worker...: the user's cell, then the
            # message, without the scheduler's (and multiprocessing's) frames.
            if in_shell:
                _attach_renderer(exc, None)
            raise
        if _should_rerun(failure, options.get("rerun")):
            again = _rerun_for_debugging(failure, exc)
            if again is not None:
                if in_shell:
                    _attach_renderer(again, failure)
                raise again from exc.__cause__
        if in_shell:
            _attach_renderer(exc, failure)
        raise


def prepare_display(failure: TaskFailure) -> None:
    """Failure-record hook: in IPython, the exception renders trimmed wherever it is raised
    (``Future.result()`` included, which does not pass :func:`failure_hook`)."""
    if ipython_shell() is not None:
        _attach_renderer(failure.exception, failure)


def rerun_graph(failure: TaskFailure | None = None, **options: Any) -> None:
    """Rerun the whole graph of ``failure`` (default: the last) on the ``sync`` scheduler.

    An error is raised from the task's own frame.  Returns None when the graph ran
    without error (the caller says so; results are not returned).
    """
    failure = failure if failure is not None else last_failure()
    if failure is None:
        raise RerunUnavailable("no task has failed in this process yet")
    if failure.graph is None or not failure.requested_keys:
        raise RerunUnavailable(
            f"the graph of the failed task {failure.key!r} was not recorded "
            f"(backend {failure.backend!r}), so it cannot be rerun"
        )
    from .api import get

    options.setdefault("rerun", "never")
    get(failure.graph, list(failure.requested_keys), scheduler="sync", **options)


# -- a debugger session with its commands given up front --------------------------


class _TypedCommands:
    """A debugger's stdin that plays ``commands`` and echoes each after the prompt."""

    def __init__(self, commands: list[str], echo: Any):
        self._commands = list(commands)
        self._echo = echo

    def readline(self) -> str:
        if not self._commands:
            return ""  # end of input: the debugger quits
        command = self._commands.pop(0)
        self._echo.write(command + "\n")
        return command + "\n"


def post_mortem(commands: list[str], tb: types.TracebackType | None = None) -> None:
    """What ``%debug`` does after an error, with the commands typed in advance.

    ``post_mortem(["p text", "ll", "q"])`` opens IPython's debugger in the frame where
    the last error was raised (``sys.last_traceback``, or ``tb``), runs the commands
    and prints the session as it would look typed by hand.  Tutorials and tests use it
    so that a notebook runs top to bottom without anyone typing into a debugger.
    """
    tb = tb if tb is not None else getattr(sys, "last_traceback", None)
    if tb is None:
        raise RuntimeError("post_mortem: no error to debug yet (sys.last_traceback is not set)")
    shell = ipython_shell()
    if shell is not None and getattr(shell, "debugger_cls", None) is not None:
        pdb_class = shell.debugger_cls
    else:
        from IPython.core.debugger import Pdb as pdb_class
    out = sys.stdout
    debugger = pdb_class(stdin=_TypedCommands(commands, out), stdout=out)
    debugger.use_rawinput = False
    debugger.reset()
    debugger.interaction(None, tb)


# -- tracebacks --------------------------------------------------------------------


def _headline(exc: BaseException, failure: TaskFailure) -> str:
    """What failed where, and what the local rerun found: said once, first."""
    where = f"task {failure.key!r} failed on the {failure.backend!r} scheduler ({failure.worker})"
    rerun = failure.extra.get("rerun")
    if not failure.remote_traceback or rerun is None:
        return f"notebook_sched: {where}."
    if rerun == "raised the same error" and exc is failure.extra.get("rerun_exception"):
        return (
            f"notebook_sched: {where}. Rerun here with the same inputs, it failed the same "
            f"way: the frames below are the rerun's, and %debug lands in the task."
        )
    if rerun == "did not fail":
        return (
            f"notebook_sched: {where}. Rerun here with the same inputs, it did NOT fail: "
            f"the failure depends on where it ran (environment, files, memory, the "
            f"worker's state), so there are no local frames to debug. The worker's traceback:"
        )
    return f"notebook_sched: {where}. Local rerun: {rerun}. The worker's traceback:"


def _shows_rerun_frames(exc: BaseException, failure: TaskFailure) -> bool:
    return failure.extra.get("rerun") == "raised the same error" and exc is failure.extra.get(
        "rerun_exception"
    )


def render_traceback(exc: BaseException, failure: TaskFailure | None = None) -> list[str]:
    """The lines IPython shows for ``exc``: key, worker traceback, trimmed local frames."""
    failure = failure or getattr(exc, "__notebook_sched_failure__", None)
    shell = ipython_shell()
    lines = []
    if failure is not None:
        if failure.remote_traceback or repr(failure.key) not in str(exc):
            lines.append(_headline(exc, failure))  # (a KilledWorker's message names it)
        if failure.remote_traceback and not _shows_rerun_frames(exc, failure):
            text = name_cells(trim_remote_traceback(failure.remote_traceback), shell)
            lines.append(text.rstrip("\n"))
    if shell is None:
        import traceback

        lines.extend(traceback.format_exception(type(exc), exc, trim_traceback(exc.__traceback__)))
        return lines
    cause, suppress = exc.__cause__, exc.__suppress_context__
    notes = getattr(exc, "__notes__", None)
    if isinstance(cause, RemoteTraceback):
        exc.__cause__, exc.__suppress_context__ = None, True  # shown above already
    if failure is not None and isinstance(notes, list):
        # The headline says what our notes say; the user's own notes stay.
        exc.__notes__ = [n for n in notes if not str(n).startswith("[notebook_sched]")]
    try:
        lines.extend(
            shell.InteractiveTB.structured_traceback(
                type(exc), exc, trim_traceback(exc.__traceback__), tb_offset=0
            )
        )
    finally:
        exc.__cause__, exc.__suppress_context__ = cause, suppress
        if isinstance(notes, list):
            exc.__notes__ = notes
    return lines


def _attach_renderer(exc: BaseException, failure: TaskFailure | None) -> None:
    if failure is None and hasattr(exc, "_render_traceback_"):
        return  # renders itself (or was given ours by an inner run)

    def _render_traceback_() -> list[str]:
        return render_traceback(exc, failure)

    try:
        exc._render_traceback_ = _render_traceback_  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        pass
    if failure is not None:
        _ensure_formatters()


# -- the failure record, readable ---------------------------------------------------


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
    from .delayed import _apply, _name_of
    from .graph import is_task

    graph = failure.graph
    try:
        task = graph[failure.key] if graph is not None else None
    except Exception:
        return None
    if not is_task(task):
        return None
    func, args, kwargs = task[0], list(task[1:]), {}
    if func is _apply and len(args) == 3 and isinstance(args[1], list):
        func, args, kwargs = args[0], args[1], args[2] if isinstance(args[2], dict) else {}
    parts = [_short(a, 60) for a in args]
    parts += [f"{k}={_short(v, 60)}" for k, v in kwargs.items()]
    text = f"{_name_of(func)}({', '.join(parts)})"
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
        lines.append(f"  local rerun: {failure.extra['rerun']}")
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
        rows.append(("local rerun", esc(str(failure.extra["rerun"]))))
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


def _ensure_formatters() -> None:
    shell = ipython_shell()
    if shell is not None and getattr(shell, "display_formatter", None) is not None:
        register_formatters(shell)
