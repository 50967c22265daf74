"""This session's jobs: ``submit``, ``submit_call``, ``jobs``, ``drop``, ``cancel_all``.

``submit`` captures the settings (``config.snapshot()`` and the call's keywords) and
a shallow copy of a graph dict, shows the job's view on the submitting thread, files
the job in the registry and hands it to a runner: nothing else, so it returns in
well under a millisecond.  Interpreter exit (and so kernel shutdown or restart)
cancels every job (``atexit``; registered after the process pool's hook, so it runs
first).
"""

from __future__ import annotations

import atexit
import contextvars
import threading
import weakref
from collections.abc import Mapping
from typing import Any

from .. import config
from .job import RUNNING_JOB, Job, JobList

__all__ = ["submit", "submit_call", "jobs", "drop", "cancel_all"]

# This session's jobs, oldest first, held weakly: a running job is held by its runner
# (a pending one by the runners' queue), a finished one only by the user, so dropping
# the last reference (``del job``) frees its result.  _registry_lock guards the list.
_registry_lock = threading.Lock()
_registry: list[weakref.ref] = []


def _register(job: Job) -> None:
    with _registry_lock:
        _registry[:] = [ref for ref in _registry if ref() is not None]
        _registry.append(weakref.ref(job))


def _live() -> list[Job]:
    with _registry_lock:
        return [job for job in (ref() for ref in _registry) if job is not None]


_OPTIONS = ("scheduler", "num_workers", "pool", "rerun", "worker_timeout", "cache")


def submit(*args: Any, name: str | None = None, progress: Any = None, **options: Any) -> Job:
    """Start computing in the background; returns a :class:`Job` at once.

    ``submit(x, y, ...)`` computes Delayed objects or Dask collections as
    ``compute`` does (one object gives its result, several a tuple);
    ``submit(dsk, keys)`` computes keys of a graph as ``get`` does.  Keywords are
    ``compute``'s (``scheduler=``, ``num_workers=``...); what they leave out comes
    from the config *now*.  ``progress``: None shows a bar in a notebook, True
    forces one (a text line outside), False none.  ``name`` labels the job.
    """
    if not args:
        raise TypeError(
            "submit() needs something to compute: submit(delayed_obj), submit(a, b) or "
            "submit(dsk, keys) for a graph."
        )
    if isinstance(args[0], Mapping) and not hasattr(args[0], "__dask_graph__"):
        if len(args) != 2:
            raise TypeError(
                f"submit(dsk, keys) computes keys of a graph: got {len(args)} positional "
                f"arguments. Use e.g. submit(dsk, 'z') or submit(dsk, ['y', 'z'])."
            )
        work = ("graph", dict(args[0]), args[1], {})
    else:
        work = ("compute", args, None, {})
    snapshot = config.snapshot()
    captured = {name_: snapshot[name_] for name_ in _OPTIONS if name_ in snapshot}
    captured.update({k: v for k, v in options.items() if v is not None or k not in captured})
    captured["progress"] = False  # the job has its own view
    captured.setdefault("rerun", "never")
    if captured.get("rerun") == "auto":
        captured["rerun"] = "never"  # job.debug() reruns on the caller's thread instead
    job = Job(work, captured, name)
    _show_view(job, progress)
    _register(job)
    job._start(_job_context())
    return job


def submit_call(
    function: Any, settings: dict, *, name: str | None = None, progress: Any = None
) -> Job:
    """Run ``function()`` as a job (a ``%%schedule --background`` cell): the computes
    it makes on the job's thread use ``settings`` (a ``config.set`` scope opened in
    the job's context: its own with a per-context config) and count in its progress."""
    from ..api import add_run_hook

    add_run_hook(_track_calls)  # once, however often added
    captured = {**config.snapshot(), **settings}
    options = {name_: captured[name_] for name_ in _OPTIONS if name_ in captured}
    job = Job(("call", function, settings, {}), options, name)
    _show_view(job, progress)
    _register(job)
    job._start(_job_context())
    return job


def _job_context() -> contextvars.Context:
    return contextvars.copy_context()


def _track_calls(request: Any) -> Any:
    """Run hook: a compute made by a call job on its own thread counts in its progress
    (and stops at its next task once the job is cancelled)."""
    job = RUNNING_JOB.get()
    if job is None or threading.current_thread() is not job._thread:
        return None
    work = job._work
    if work is None or work[0] != "call":
        return None
    from ..api import Additions

    return Additions(observers=(job.tracker,))


def _show_view(job: Job, progress: Any) -> None:
    from ..environment import in_kernel

    if progress is False or (progress is None and not in_kernel()):
        return
    from ..diagnostics.job_view import make_job_view

    job.view = make_job_view(job, "auto" if progress is None else progress)


def jobs() -> JobList:
    """This session's jobs: the running ones, and the finished ones you still hold
    (a job keeps its result until you drop it: ``del job``)."""
    return JobList(_live())


def drop(job: Job) -> None:
    """Forget ``job`` (cancelling it if it still runs), freeing its result."""
    job.cancel()
    with _registry_lock:
        _registry[:] = [ref for ref in _registry if ref() not in (None, job)]


def cancel_all() -> int:
    """Cancel every running or pending job; returns how many were stopped."""
    running = [job for job in _live() if not job.done()]
    stopped = 0
    for job in running:
        job._stopping = True
        job._interrupt_runner()
    for job in running:
        stopped += job.cancel()
    return stopped


def _at_exit() -> None:
    """Stop every job at interpreter exit or kernel shutdown (nothing left behind)."""
    try:
        cancel_all()
    except Exception:
        pass


atexit.register(_at_exit)
