"""Error types shared by the backends, exceptions that cross processes, and the hints
added to a failed task's exception.

**Shared errors.**  Every error type and message that more than one backend raises
lives here, below the backends, so the process pool, the executors and the cluster
say the same thing the same way and import no backend to say it:
:class:`TaskPicklingError` (with :func:`unpicklable_task` and
:func:`unpicklable_result`, the only places its messages are written),
:class:`WorkerDiedError` (:func:`worker_died`, :func:`describe_exit`),
:class:`WorkerHungError` (:func:`worker_hung`) and :class:`MainGuardError`
(:func:`main_guard_message`, ``MAIN_GUARD_EXIT``).  The backends re-export the
classes under their old names (``schedulers.processes.TaskPicklingError``...).

**Crossing processes.**  A task's exception travels from a worker process (the
``processes`` pool, a foreign executor, a cluster worker) to the caller, who must
receive the task's *own type* so ``except NeedsArgs`` still works.  Plain pickling
fails for many real exceptions: a constructor that needs arguments
(``def __init__(self, a, b)``: unpickling calls ``cls(*args)`` with the wrong
arguments), an unpicklable attribute (a lock, an open file), a ``__reduce__`` that
raises, an exception group holding any of those.  :func:`dump_exception` therefore
tries, in order:

1. ``cloudpickle.dumps(exc)``, checked by loading it back in the worker;
2. a rebuild record, as tblib and distributed do: the class (cloudpickled by value
   when it is not importable), ``args`` and the picklable part of ``__dict__`` (other
   attributes are replaced by their repr); nested exceptions in ``args`` (exception
   groups) are recorded the same way.  The caller rebuilds it with
   ``cls.__new__(cls, *args)`` (or ``cls.__new__(cls)``), never calling ``__init__``;
3. only when even that fails, a :class:`RemoteTaskError` whose message starts with
   the original type's qualified name, so it stays visible.

Chained causes do not travel as objects (pickle drops ``__cause__``/``__context__``);
the remote traceback text, which the backends attach as the ``__cause__``, shows them.

**Hints.**  :func:`misspelled_key_note` is called only when a task has failed: it
looks for string arguments that look like a key of the graph (``graph.closest_keys``,
difflib: "did you mean the key 'data'?").  Dask's rules make such strings data, so
this never changes what runs; it only explains the failure.
"""

from __future__ import annotations

import pickle
import sys
from collections.abc import Hashable, Iterable
from typing import Any

from .failure import key_repr
from .graph import closest_keys

__all__ = [
    "TaskPicklingError",
    "WorkerDiedError",
    "WorkerHungError",
    "MainGuardError",
    "MAIN_GUARD_EXIT",
    "unpicklable_task",
    "unpicklable_result",
    "worker_died",
    "worker_hung",
    "describe_exit",
    "main_guard_message",
    "exit_if_bootstrapping",
    "raise_if_main_guard",
    "note_out_of_fds",
    "RemoteTaskError",
    "dump_exception",
    "load_exception",
    "misspelled_key_note",
]

MAX_NESTED = 50  # nested exceptions recorded per level (exception groups)


MAIN_GUARD_EXIT = 87  # exit code of a worker whose parent script has no __main__ guard


class RemoteTaskError(RuntimeError):
    """A task's exception that could not be rebuilt as its own type in the caller."""


class TaskPicklingError(TypeError):
    """A task, its inputs or its result could not be pickled to cross processes."""


class WorkerDiedError(RuntimeError):
    """A worker process died while running a task (segfault, os._exit, OOM kill...)."""


class WorkerHungError(RuntimeError):
    """A worker process gave no sign of life for ``worker_timeout`` seconds."""


class MainGuardError(RuntimeError):
    """Worker processes could not start because the main script lacks a __main__ guard."""


def unpicklable_task(
    key: Hashable,
    exc: BaseException,
    where: str = "a worker process",
    instead: str = "run this graph with scheduler='threads'",
) -> TaskPicklingError:
    """Task ``key`` (its function or an input) could not be pickled to go to ``where``."""
    deep = isinstance(exc.__cause__, RecursionError) or isinstance(exc, RecursionError)
    why = (
        f" The task nests deeper than pickle can follow (the recursion limit is "
        f"{sys.getrecursionlimit()}); build deep structures inside the task, or run it "
        f"with scheduler='threads' or 'sync', which have no such limit."
        if deep
        else ""
    )
    return TaskPicklingError(
        f"Task {key_repr(key)} cannot be sent to {where}: its function or an "
        f"input cannot be pickled ({type(exc).__name__}: {exc}).{why} Worker processes "
        f"need picklable functions and data; {instead}, or "
        f"build the object inside the task instead of passing it in."
    )


def unpicklable_result(
    key: Hashable | None,
    reason: str,
    where: str = "its worker process",
    instead: str = "run this graph with scheduler='threads'",
    how: str | None = None,
) -> TaskPicklingError:
    """The result of task ``key`` (None: unknown) could not be pickled to leave ``where``
    (or ``how``: what else could not be done with it, e.g. "unpickled here");
    ``reason`` is the pickling error as text."""
    what = "A result" if key is None else f"The result of task {key_repr(key)}"
    return TaskPicklingError(
        f"{what} cannot be {how or 'sent back from ' + where} ({reason}). Results that travel "
        f"between processes must be picklable: return plain data, or {instead}."
    )


def worker_died(name: str, pid: int | None, what: str, code: int | None) -> WorkerDiedError:
    """Worker ``name`` died while running ``what`` (e.g. "task 'x'") with exit ``code``."""
    return WorkerDiedError(
        f"Worker {name} (pid {pid}) died while running {what}: "
        f"exit code {code} ({describe_exit(code)}). This can be caused by a "
        f"segmentation fault in native code, os._exit() in the task, or the "
        f"out-of-memory killer. The worker is replaced; the next compute runs on "
        f"fresh workers. To debug the task, run it with scheduler='sync'."
    )


def worker_hung(
    name: str, pid: int | None, what: str, silent: float, timeout: float
) -> WorkerHungError:
    """Worker ``name`` was silent ``silent`` seconds (over ``timeout``) running ``what``."""
    return WorkerHungError(
        f"Worker {name} (pid {pid}) gave no sign of life for "
        f"{silent:.1f} s (worker_timeout={timeout:g} s) while running {what}: it is "
        f"stopped (SIGSTOP), deadlocked, swapped out, or stuck in native code that "
        f"holds the GIL. It was killed and is replaced; the next compute runs on a "
        f"fresh worker. A task that legitimately holds the GIL that long needs a larger "
        f"limit: pass worker_timeout=300 to get/compute, or "
        f"notebook_sched.config.set(worker_timeout=...); None turns the check off."
    )


def describe_exit(code: int | None) -> str:
    """A worker process's exit code in words (``-9`` -> ``SIGKILL: killed, often by...``)."""
    if code is None:
        return "still running"
    if code < 0:
        import signal

        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = {
            "SIGKILL": "killed, often by the out-of-memory killer",
            "SIGSEGV": "segmentation fault",
            "SIGABRT": "aborted",
            "SIGTERM": "terminated",
            "SIGBUS": "bus error",
        }.get(name, "killed by a signal")
        return f"{name}: {hint}"
    return "the process exited by itself, e.g. os._exit() or sys.exit() in native code"


def exit_if_bootstrapping() -> None:
    """The one main-guard check, in a process that is about to start workers: if this
    process is itself a worker being bootstrapped (its parent's main script computes
    at import time, with no ``__main__`` guard), leave quietly with MAIN_GUARD_EXIT;
    the parent sees the code and explains (:func:`raise_if_main_guard`)."""
    multiprocessing = sys.modules.get("multiprocessing")  # not imported: not spawned
    if multiprocessing is not None:
        if getattr(multiprocessing.current_process(), "_inheriting", False):
            raise SystemExit(MAIN_GUARD_EXIT)


def raise_if_main_guard(exitcode: int | None) -> None:
    """A worker exited with ``exitcode``: MAIN_GUARD_EXIT raises the MainGuardError."""
    if exitcode == MAIN_GUARD_EXIT:
        raise MainGuardError(main_guard_message()) from None


def note_out_of_fds(exc: BaseException, starting: str, workers: int) -> bool:
    """If ``exc`` says this process ran out of file descriptors (EMFILE, ENFILE),
    add a note saying so, with the limit and the fix; True when it did."""
    import errno

    code = getattr(exc, "errno", None)
    if code not in (errno.EMFILE, errno.ENFILE):
        return False
    try:
        import resource

        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        limit = f"the limit of open files (RLIMIT_NOFILE) is {soft}"
    except (ImportError, OSError, ValueError):
        soft, limit = None, "the limit of open files was reached"
    which = "this process" if code == errno.EMFILE else "the system"
    exc.add_note(
        f"notebook_sched: {which} ran out of file descriptors while starting {starting} "
        f"({workers} worker processes; each needs a few pipes and sockets): {limit}. "
        f"Raise it (`ulimit -n 4096` before starting Python or Jupyter, or "
        f"resource.setrlimit(resource.RLIMIT_NOFILE, (4096, hard))), use fewer workers "
        f"(num_workers=...), or use scheduler='threads', which needs none."
    )
    return True


def main_guard_message() -> str:
    """Why worker processes could not start: the main script computes at import."""
    import __main__

    script = getattr(__main__, "__file__", "your script")
    return (
        f"The 'processes' scheduler could not start its worker processes: {script} "
        f"starts a computation while it is being imported. Worker processes import the "
        f"main script again, so that computation ran inside each worker too.\n"
        f"Put the code that computes under a main guard:\n\n"
        f'    if __name__ == "__main__":\n'
        f"        result = compute(...)   # now only the main process runs this\n\n"
        f"(Notebooks and the interactive prompt do not need this.)"
    )


def _cloudpickle():
    import cloudpickle

    return cloudpickle


def dump_exception(exc: BaseException) -> bytes:
    """Bytes that :func:`load_exception` turns back into ``exc``'s type (see module doc)."""
    cloudpickle = _cloudpickle()
    try:
        data = cloudpickle.dumps(exc)
        pickle.loads(data)  # exceptions with a custom __init__ often fail only here
        return data
    except Exception:
        pass
    try:
        data = cloudpickle.dumps(_Record.of(exc, 0))
        pickle.loads(data)
        return data
    except Exception as reason:
        return cloudpickle.dumps(_fallback(exc, reason))


def load_exception(data: bytes) -> BaseException:
    """The exception from :func:`dump_exception`'s bytes; never raises."""
    try:
        exc = pickle.loads(data)
    except Exception as reason:
        return RemoteTaskError(f"(the task's exception could not be unpickled: {reason})")
    if isinstance(exc, _Record):
        return exc.rebuild()
    if not isinstance(exc, BaseException):
        return RemoteTaskError(f"the task failed with a non-exception object: {exc!r}")
    return exc


def _fallback(exc: BaseException, reason: BaseException) -> RemoteTaskError:
    name = _qualname(type(exc))
    text = _safe_str(exc)
    return RemoteTaskError(
        f"{name}: {text} (the exception could not be rebuilt as {name} in the caller: "
        f"{type(reason).__name__}: {reason})"
    )


def _qualname(cls: type) -> str:
    module = getattr(cls, "__module__", "")
    qual = getattr(cls, "__qualname__", cls.__name__)
    return qual if module in ("builtins", "__main__", None, "") else f"{module}.{qual}"


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<{type(exc).__name__}: str() failed>"


def _portable(value: Any, depth: int) -> Any:
    """``value`` made picklable: exceptions become records, others their repr."""
    if isinstance(value, BaseException):
        return _Record.of(value, depth + 1)
    if isinstance(value, (list, tuple)) and any(isinstance(v, BaseException) for v in value):
        return type(value)(_portable(v, depth) for v in value[:MAX_NESTED])
    try:
        pickle.loads(_cloudpickle().dumps(value))
        return value
    except Exception:
        try:
            return repr(value)
        except Exception:
            return f"<unpicklable {type(value).__name__}>"


class _Record:
    """What is needed to rebuild an exception without calling its ``__init__``."""

    def __init__(self, cls: type, args: tuple, state: dict, text: str, name: str):
        self.cls = cls
        self.args = args
        self.state = state
        self.text = text
        self.name = name

    @classmethod
    def of(cls, exc: BaseException, depth: int) -> _Record:
        if depth > 10:
            return _fallback(exc, RecursionError("exceptions nested too deep"))
        args = tuple(_portable(a, depth) for a in getattr(exc, "args", ()))
        state = {}
        for name, value in getattr(exc, "__dict__", {}).items():
            state[name] = _portable(value, depth)
        return cls(type(exc), args, state, _safe_str(exc), _qualname(type(exc)))

    def rebuild(self) -> BaseException:
        args = tuple(a.rebuild() if isinstance(a, _Record) else a for a in self.args)
        args = tuple(
            type(a)(x.rebuild() if isinstance(x, _Record) else x for x in a)
            if isinstance(a, (list, tuple))
            else a
            for a in args
        )
        state = {k: v.rebuild() if isinstance(v, _Record) else v for k, v in self.state.items()}
        for make in (lambda: self.cls.__new__(self.cls, *args), lambda: self.cls.__new__(self.cls)):
            try:
                exc = make()
                break
            except Exception:
                continue
        else:
            return RemoteTaskError(f"{self.name}: {self.text}")
        try:
            exc.args = args
        except Exception:
            pass
        for name, value in state.items():
            try:
                setattr(exc, name, value)
            except Exception:
                pass
        return exc


def misspelled_key_note(strings: Iterable[str], keys: Iterable) -> str | None:
    """A note for string arguments that look like a key of the graph, or None."""
    wanted = [s for s in dict.fromkeys(strings) if 0 < len(s) <= 200]
    if not wanted:
        return None
    close = closest_keys(wanted, keys, 1)
    lines = [
        f"argument {text!r} is a plain string; did you mean the key {close[text][0]!r}?"
        for text in wanted
        if close[text]
    ]
    return "\n".join(lines) if lines else None
