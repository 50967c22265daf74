"""The backend registry: names and aliases -> modules with a ``get`` function.

Backends are imported on first use, so ``import notebook_sched`` stays cheap (the
process backend pulls in cloudpickle and multiprocessing only when chosen).  Layers
above register more backends with :func:`register_backend` (the local cluster and
dask.distributed do).

A ``scheduler`` value is one of:

* a registered name or alias, e.g. ``"threads"`` or ``"single-threaded"``;
* a ``concurrent.futures.Executor`` (thread pool, process pool, loky): run by
  ``executor.py``, with cloudpickled tasks for anything but a thread pool;
* a callable with Dask's get signature ``get(dsk, keys, **options)``.

**Capabilities, not names.**  A backend says what it can do when it registers
(:class:`Capabilities`: runs tasks on threads of this process, uses worker processes,
takes ``worker_timeout=``), and the layers above ask :func:`capabilities` instead of
comparing names: ``api.get`` passes ``worker_timeout`` to the backends that take it,
the run hooks route thread output to the cell only where tasks run on threads.  An
executor passed as ``scheduler=`` gets its capabilities from what it is (a thread pool
or not) when :func:`resolve` first sees it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from .. import config

__all__ = [
    "register_backend",
    "resolve",
    "validate_scheduler",
    "names",
    "canonical_name",
    "Capabilities",
    "capabilities",
]


@dataclass(frozen=True)
class Capabilities:
    """What a backend does, for the layers above (see the module docstring)."""

    runs_tasks_on_threads: bool = False  # tasks (and their output) on threads of ours
    uses_worker_processes: bool = False  # tasks run in other processes
    worker_timeout: bool = False  # its get takes worker_timeout= (hung-worker check)


_modules: dict[str, str] = {}
_aliases: dict[str, str] = {}
_hints: dict[str, str] = {}
_capabilities: dict[str, Capabilities] = {}
_NOTHING = Capabilities()


def register_backend(
    name: str,
    module: str,
    aliases: tuple[str, ...] = (),
    hint: str = "",
    capabilities: Capabilities = _NOTHING,
) -> None:
    """Make ``name`` (and ``aliases``) select the ``get`` function of ``module``."""
    _modules[name] = module
    _aliases[name] = name
    for alias in aliases:
        _aliases[alias] = name
    _hints[name] = hint
    _capabilities[name] = capabilities


def capabilities(backend: str) -> Capabilities:
    """The capabilities of a backend name as :func:`resolve` returns it (none if unknown,
    e.g. a foreign get function)."""
    return _capabilities.get(backend, _NOTHING)


register_backend(
    "sync",
    "notebook_sched.schedulers.sync",
    ("synchronous", "single-threaded"),
    "one task at a time in this thread: debugging, profiling, %debug",
)
register_backend(
    "threads",
    "notebook_sched.schedulers.threads",
    ("threading",),
    "a thread pool: NumPy, pandas and other code that releases the GIL",
    Capabilities(runs_tasks_on_threads=True),
)
register_backend(
    "processes",
    "notebook_sched.schedulers.processes",
    ("multiprocessing",),
    "worker processes: pure-Python code with small inputs and outputs",
    Capabilities(uses_worker_processes=True, worker_timeout=True),
)
register_backend(
    "auto",
    "notebook_sched.schedulers.auto",
    (),
    "threads and processes mixed, chosen per task from measurements of the GIL",
    Capabilities(runs_tasks_on_threads=True, uses_worker_processes=True, worker_timeout=True),
)


def names() -> dict[str, list[str]]:
    """``{name: [aliases]}`` of every registered backend."""
    out: dict[str, list[str]] = {name: [] for name in _modules}
    for alias, name in _aliases.items():
        if alias != name:
            out[name].append(alias)
    return out


def hint(name: str) -> str:
    return _hints.get(canonical_name(name), "")


def _choices() -> str:
    parts = []
    for name, aliases in names().items():
        parts.append(f"{name} ({', '.join(aliases)})" if aliases else name)
    return ", ".join(parts)


def canonical_name(name: str) -> str:
    try:
        return _aliases[name]
    except KeyError:
        raise ValueError(
            f"Unknown scheduler {name!r}. Valid names: {_choices()}; or pass a "
            f"concurrent.futures.Executor, or a get function."
        ) from None


def validate_scheduler(scheduler: Any) -> Any:
    """Check a ``scheduler`` value; names are returned in canonical form."""
    if isinstance(scheduler, str):
        return canonical_name(scheduler)
    if isinstance(scheduler, Executor) or callable(scheduler):
        return scheduler
    raise TypeError(
        f"scheduler must be a name ({_choices()}), a concurrent.futures.Executor or a get "
        f"function; got {type(scheduler).__name__}: {scheduler!r}"
    )


def resolve(scheduler: Any) -> tuple[str, Callable[..., Any]]:
    """``(backend name, get function)`` for a scheduler value."""
    scheduler = validate_scheduler(scheduler)
    if isinstance(scheduler, str):
        module = importlib.import_module(_modules[scheduler])
        return scheduler, module.get
    if isinstance(scheduler, Executor):
        from .executor import get as executor_get
        from .executor import in_threads

        def get_on_executor(dsk, keys, *, observers=None, planners=None, **options):
            return executor_get(
                dsk, keys, executor=scheduler, observers=observers, planners=planners
            )

        name = f"executor:{type(scheduler).__name__}"
        threads = in_threads(scheduler)
        _capabilities.setdefault(
            name, Capabilities(runs_tasks_on_threads=threads, uses_worker_processes=not threads)
        )
        return name, get_on_executor
    return getattr(scheduler, "__name__", "custom"), scheduler


# The scheduler, pool and num_workers settings are this layer's: it checks their
# values for config (which imports nothing from the package).
def _check_pool(pool: Any) -> Any:
    from .executor import as_executor

    as_executor(pool)  # raises TypeError naming what is accepted
    return pool


def _check_workers(num_workers: Any) -> Any:
    from ..engine import check_workers

    check_workers(num_workers)
    return num_workers


config.register_validator("scheduler", validate_scheduler)
config.register_validator("pool", _check_pool)
config.register_validator("num_workers", _check_workers)
