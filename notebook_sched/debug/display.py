"""How a failure shows in IPython: one headline, the worker's traceback, our frames out.

In IPython, exceptions from a run get a ``_render_traceback_`` (:func:`attach_renderer`)
that says once, first, which task failed where and what the local rerun found; then
the worker's traceback when the local frames are not the same, and the local frames
without notebook_sched's own (``tracebacks.py`` trims them; library files are named
by their import path, ``json/decoder.py``, not by where this machine keeps them); our
notes are not repeated under the error.  Errors that are not task failures (GraphError,
KeyboardInterrupt, a dead worker) get the same trimming.  The real ``__traceback__``
is untouched, so the debugger still sees every frame.  :func:`prepare_display` is the
failure-record hook (``failure.set_display_hook``) that does the same for failures
raised outside ``get`` (``Future.result()``).  :func:`post_mortem` plays a ``%debug``
session with its commands given up front (tutorials, tests).

Nothing here imports IPython; the shell is looked up only when already imported.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from ..environment import ipython_shell
from ..failure import RemoteTraceback, RerunOutcome, TaskFailure, short_key_repr
from ..tracebacks import name_cells, short_library_paths, trim_remote_traceback, trim_traceback
from .report import ensure_formatters

__all__ = ["render_traceback", "attach_renderer", "prepare_display", "post_mortem"]


def prepare_display(failure: TaskFailure) -> None:
    """Failure-record hook: in IPython, the exception renders trimmed wherever it is raised
    (``Future.result()`` included, which does not pass ``get``'s failure hook), and the
    worker's traceback names the cell a notebook function came from (``Cell In[3]``),
    as every other traceback the user reads does, not cloudpickle's ``<dynamic-code>``."""
    shell = ipython_shell()
    if shell is not None:
        if failure.remote_traceback:
            failure.remote_traceback = name_cells(failure.remote_traceback, shell)
            cause = failure.exception.__cause__
            if isinstance(cause, RemoteTraceback):
                cause.text = name_cells(cause.text, shell)
        attach_renderer(failure.exception, failure)


def _headline(exc: BaseException, failure: TaskFailure) -> str:
    """What failed where, and what the local rerun found: said once, first."""
    key = short_key_repr(failure.key)
    if key != repr(failure.key):  # a long fused name: the full key is one step away
        key += " (full key: notebook_sched.last_failure().key)"
    where = f"task {key} failed on the {failure.backend!r} scheduler ({failure.worker})"
    rerun = failure.extra.get("rerun")
    if not failure.remote_traceback or rerun is None:
        return f"notebook_sched: {where}."
    if _shows_rerun_frames(exc, failure):
        return (
            f"notebook_sched: {where}. Rerun here with the same inputs, it failed the same "
            f"way: the frames below are the rerun's, and %debug lands in the task."
        )
    if rerun is RerunOutcome.DID_NOT_FAIL:
        return (
            f"notebook_sched: {where}. Rerun here with the same inputs, it did NOT fail: "
            f"the failure depends on where it ran (environment, files, memory, the "
            f"worker's state), so there are no local frames to debug. The worker's traceback:"
        )
    said = RerunOutcome(rerun).describe(failure.extra.get("rerun_detail"))
    return f"notebook_sched: {where}. Local rerun: {said}. The worker's traceback:"


def _shows_rerun_frames(exc: BaseException, failure: TaskFailure) -> bool:
    same = failure.extra.get("rerun") is RerunOutcome.SAME_ERROR
    return same and exc is failure.extra.get("rerun_exception")


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
    return [short_library_paths(line) for line in lines]


def attach_renderer(exc: BaseException, failure: TaskFailure | None) -> None:
    if failure is None and hasattr(exc, "_render_traceback_"):
        return  # renders itself (or was given ours by an inner run)

    def _render_traceback_() -> list[str]:
        return render_traceback(exc, failure)

    try:
        exc._render_traceback_ = _render_traceback_  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        pass
    if failure is not None:
        ensure_formatters()


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


class _CellNames:
    """A stream that names notebook cells as tracebacks do: the debugger prints a cell's
    code as the temporary file IPython compiled it from (``/tmp/ipykernel_42/123.py``),
    a path of this machine that says nothing to a reader; ``Cell In[2]`` says which."""

    def __init__(self, stream: Any, shell: Any):
        self._stream = stream
        cells = getattr(getattr(shell, "compile", None), "_filename_map", None) or {}
        self._names = sorted(
            ((path, f"Cell In[{number}]") for path, number in cells.items()),
            key=lambda item: len(item[0]),
            reverse=True,
        )

    def write(self, text: str) -> int:
        for path, name in self._names:
            if path in text:
                text = text.replace(path, name)
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def post_mortem(commands: list[str], tb: types.TracebackType | None = None) -> None:
    """What ``%debug`` does after an error, with the commands typed in advance.

    ``post_mortem(["p text", "ll", "q"])`` opens IPython's debugger in the frame where
    the last error was raised (``sys.last_traceback``, or ``tb``), runs the commands
    and prints the session as it would look typed by hand, with the cells named as in a
    traceback (``Cell In[2]``, not IPython's temporary file).  Tutorials and tests use it
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
    out = _CellNames(sys.stdout, shell)
    debugger = pdb_class(stdin=_TypedCommands(commands, out), stdout=out)
    debugger.use_rawinput = False
    debugger.reset()
    debugger.interaction(None, tb)
