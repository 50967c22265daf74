"""Local reruns of failed tasks, so a debugger lands in the task's frame.

Under ``sync`` and ``threads`` a failed task's exception already carries the task's
live frames, so ``%debug`` lands in the task.  A task that failed in another process
(``processes``, ``distributed``, a process-pool executor) comes back as a pickled
exception with the worker's traceback as text: no frames, no locals.  So, as the
failure propagates out of ``get``, the run hook :func:`failure_hook` wraps the run
(see ``api.add_run_hook``) and reruns the failed task *here*, on the calling thread,
with the inputs recorded in its :class:`~notebook_sched.failure.TaskFailure`, and
raises what the rerun raised.  ``sys.last_traceback`` then ends in the task
function's frame with its locals, which is where ``%debug`` and ``%pdb on`` go.

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
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Iterator, Mapping
from typing import Any

from ..api import Additions, RunRequest, get
from ..engine import run_spec
from ..environment import ipython_shell
from ..failure import RerunOutcome, TaskFailure, last_failure
from ..graph import compile_graph
from .display import attach_renderer

__all__ = ["RerunUnavailable", "rerun_task", "rerun_graph", "failure_hook", "RERUN_NOTE"]

RERUN_NOTE = "[notebook_sched] rerun"  # prefix of the notes this module adds


class RerunUnavailable(RuntimeError):
    """The failed task cannot be rerun here (no graph, or inputs that did not come back)."""


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
        failure.extra["rerun"] = RerunOutcome.NOT_POSSIBLE
        failure.extra["rerun_detail"] = str(why)
        original.add_note(f"{RERUN_NOTE} here was not possible: {why}.")
        return None
    except BaseException:
        failure.extra["rerun"] = RerunOutcome.INTERRUPTED
        raise
    if again is None:
        failure.extra["rerun"] = RerunOutcome.DID_NOT_FAIL
        original.add_note(
            f"{RERUN_NOTE}: task {failure.key!r} failed in {where}; rerun here with the same "
            f"inputs, it did NOT fail (the failure depends on where it ran). The error above "
            f"is the worker's: notebook_sched.last_failure().remote_traceback."
        )
        return None
    failure.extra["rerun_exception"] = again
    if type(again) is not type(original):
        failure.extra["rerun"] = RerunOutcome.DIFFERENT_ERROR
        failure.extra["rerun_detail"] = f"{type(again).__name__}: {again}"
        original.add_note(
            f"{RERUN_NOTE} here with the same inputs raised a different error "
            f"({type(again).__name__}: {again}); the error above is the worker's. The "
            f"rerun's exception is in notebook_sched.last_failure().extra['rerun_exception']."
        )
        return None
    failure.extra["rerun"] = RerunOutcome.SAME_ERROR
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


def failure_hook(request: RunRequest) -> Additions:
    """Run hook: wrap the run so that a remote failure is rerun here (per the
    request's ``rerun`` policy) and errors render trimmed in IPython."""
    return Additions(around=functools.partial(_debuggable, request.options.get("rerun")))


def _debuggable(policy: str | None, call: Callable[[], Any]) -> Any:
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
                attach_renderer(exc, None)
            raise
        if _should_rerun(failure, policy):
            again = _rerun_for_debugging(failure, exc)
            if again is not None:
                if in_shell:
                    attach_renderer(again, failure)
                raise again from exc.__cause__
        if in_shell:
            attach_renderer(exc, failure)
        raise


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
    options.setdefault("rerun", "never")
    get(failure.graph, list(failure.requested_keys), scheduler="sync", **options)
