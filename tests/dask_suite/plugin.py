"""A pytest plugin that runs Dask's shipped tests with one of our backends standing in.

Loaded with ``-p tests.dask_suite.plugin``; ``--ns-backend NAME`` picks the backend:

``sync``, ``threads``, ``processes``
    Dask's default scheduler (``dask.config`` "scheduler") becomes
    ``partial(dask_get, scheduler=NAME)``.  Dask's *named* schedulers become ours of
    the same kind: ``"sync"``/``"synchronous"``/``"single-threaded"`` our ``sync``,
    ``"threads"``/``"threading"`` our ``threads``, ``"processes"``/
    ``"multiprocessing"`` our ``processes``; so do Dask's module-level get functions
    (``dask.get`` and ``dask.local.get_sync``, ``dask.threaded.get``,
    ``dask.multiprocessing.get``), which Dask's tests import and call directly.  A
    name keeps its kind because tests rely on it (twenty tasks meeting at a
    ``threading.Barrier`` need threads; a ``"sync"`` compute must stay in the calling
    thread).  ``--ns-names=backend`` maps every name to the chosen backend instead.
    The patch is made in ``pytest_configure``, before any test module imports them.
``dask`` (the default)
    Nothing is patched: Dask's own schedulers, the baseline of the comparison.
``dask-sync``, ``dask-threads``, ``dask-processes``
    Dask's own named scheduler as Dask's default (``dask.config.set(scheduler=...)``):
    shows which tests need a kind of scheduler (a skip for ``processes`` is justified
    when Dask's own ``processes`` fails the test too).

Tests listed in ``skips.py`` (each with its reason: they check a Dask internal, not
the scheduler contract) are skipped under our backends only, so the baseline still
runs them.  The plugin also provides what Dask's test tree expects from its
repository but the wheel lacks: the markers of Dask's ``pyproject.toml`` (the wheel
ships ``dask/conftest.py`` with its fixtures, which pytest finds beside the tests).
"""

from __future__ import annotations

import functools
import signal

import pytest

BACKENDS = ("dask", "sync", "threads", "processes", "dask-sync", "dask-threads", "dask-processes")
NAMES = {
    "sync": ("sync", "synchronous", "single-threaded"),
    "threads": ("threads", "threading"),
    "processes": ("processes", "multiprocessing"),
}
# Dask's pyproject.toml markers; the wheel does not ship them.
MARKERS = (
    "network: test requires network connection",
    "slow: slow test",
    "gpu: test requires a GPU",
    "array_expr: test for the array-expression implementation",
    "normal_and_array_expr: test runs under both array implementations",
    "skip_with_pyarrow_strings: skip when pyarrow strings are on",
    "xfail_with_pyarrow_strings: xfail when pyarrow strings are on",
    "flaky: rerun a flaky test (pytest-rerunfailures; here it runs once)",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--ns-backend",
        default="dask",
        choices=BACKENDS,
        help="our backend standing in for Dask's schedulers ('dask': Dask's own, the baseline)",
    )
    parser.addoption(
        "--ns-names",
        default="kind",
        choices=("kind", "backend"),
        help="Dask's named schedulers: ours of the same kind (default) or the chosen backend",
    )


def stand_in(backend: str):
    """The get function that replaces Dask's schedulers: ours, with Dask's contract."""
    from notebook_sched.interop import dask_get

    get = functools.partial(dask_get, scheduler=backend)
    get.__name__ = f"notebook_sched_{backend}"  # type: ignore[attr-defined]
    return get


def install(backend: str, names_follow_backend: bool = False) -> None:
    """Point Dask's default scheduler at ``backend`` and its named ones at ours."""
    import dask
    import dask.base
    import dask.local
    import dask.multiprocessing
    import dask.threaded

    default = stand_in(backend)
    gets = {kind: default if names_follow_backend else stand_in(kind) for kind in NAMES}
    for kind, names in NAMES.items():
        for name in names:
            dask.base.named_schedulers[name] = gets[kind]
    dask.get = dask.local.get_sync = gets["sync"]
    dask.threaded.get = gets["threads"]
    dask.multiprocessing.get = gets["processes"]
    dask.config.set(scheduler=default)


def pytest_configure(config: pytest.Config) -> None:
    # Started in the background, a process may inherit SIGINT ignored; Dask's interrupt
    # tests send SIGINT to the main thread and expect KeyboardInterrupt.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    for marker in MARKERS:
        config.addinivalue_line("markers", marker)
    backend = config.getoption("--ns-backend")
    config.stash[_BACKEND] = backend
    if backend.startswith("dask-"):
        import dask

        dask.config.set(scheduler=backend.removeprefix("dask-"))
    elif backend != "dask":
        install(backend, config.getoption("--ns-names") == "backend")


_BACKEND = pytest.StashKey[str]()


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    backend = config.stash[_BACKEND]
    if backend == "dask":
        return
    from .skips import SKIPS_BY_BACKEND, reason_for

    kind = backend.removeprefix("dask-")
    for item in items:
        if backend.startswith("dask-"):  # Dask's own: only what crashes every such run
            reason = reason_for(item.nodeid, kind, SKIPS_BY_BACKEND.get(kind, {}))
        else:
            reason = reason_for(item.nodeid, backend)
        if reason:
            item.add_marker(pytest.mark.skip(reason=f"notebook_sched skip list: {reason}"))


def pytest_report_header(config: pytest.Config) -> str:
    backend = config.stash[_BACKEND]
    if backend.startswith("dask"):
        return "dask suite: Dask's own schedulers (baseline)"
    return f"dask suite: notebook_sched {backend!r} stands in for Dask's schedulers"
