"""Shared fixtures: leak checks for threads and processes, and warm shared workers.

Every test that runs threads or processes uses ``no_leaks``: after the test, no new
thread may still run and no child process may exist besides the live workers of the
shared process pool (which is reused across computes by design).  Stragglers get a
short grace period to finish, since a worker killed on purpose needs a moment to be
reaped.

A test that runs on the process pool or the default local cluster also requests
``warm``: it starts them (once per module) before ``no_leaks`` takes its baseline, so
their helper threads are not counted as leaks, and the module's end closes the default
cluster it used.  Only those tests request it: a pure model test starts no process.

``kn`` is the module's ``kernel`` fixture (a real IPython kernel, tests/kernel_helpers.py)
with our config reset before and after the test.

``fresh_cache`` gives a test an empty result cache: both tiers cleared, and a disk
folder of its own (``$NOTEBOOK_SCHED_CACHE_DIR``) for ``cache="disk"``.

``binder_env`` is a fresh Binder environment (tests/binder_env.py), built once per
session for the tests that run the tutorials in it.

``dask_cluster`` is the dask.distributed cluster of the ``scheduler="dask"`` tests: one
per module, worker processes on loopback, made before any leak baseline.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time

import psutil
import pytest

from . import helpers

GRACE_SECONDS = 3.0


def pytest_configure(config):
    """A shell that starts a command in the background (``make test &``, some CI
    runners) hands it SIGINT ignored, and Python then installs no KeyboardInterrupt
    handler: the interrupt tests would test the shell, not us. Restore Python's own.
    (Here, in pytest's process, not at import: worker processes that unpickle a test
    module's function import this module too, on threads that cannot set signals.)"""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _default_cluster() -> tuple[set[int], set[int]]:
    """Pids and thread idents of the default local clusters, if one was started: they
    live across computes by design (like the process pool's workers)."""
    defaults = sys.modules.get("notebook_sched.distributed.defaults")
    pids: set[int] = set()
    idents: set[int] = set()
    if defaults is not None:
        with defaults._lock:
            clusters = [d.cluster for d in defaults._defaults if d.cluster.status == "running"]
        for cluster in clusters:
            pids.update(cluster.pids)
            idents.update(thread.ident for thread in cluster.threads)
    return pids, idents


def pool_worker_pids() -> set[int]:
    """Long-lived helpers by design: the shared pool's workers, the default local
    cluster's workers, and multiprocessing's resource tracker (one per process,
    started with the first spawned worker)."""
    from multiprocessing import resource_tracker

    from notebook_sched.schedulers import _pool

    pids = set(_default_cluster()[0])
    tracker = getattr(resource_tracker._resource_tracker, "_pid", None)
    if tracker is not None:
        pids.add(tracker)
    pool = _pool._pool
    if pool is not None:
        pids.update(w.process.pid for w in pool.workers if w.process.is_alive())
    return pids


def extra_children(before: set[int]) -> set[int]:
    me = psutil.Process()
    children = set()
    for child in me.children(recursive=False):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                children.add(child.pid)
        except psutil.NoSuchProcess:
            pass
    return children - before - pool_worker_pids()


def extra_threads(before: set[int]) -> list[threading.Thread]:
    resident = _default_cluster()[1]
    return [
        t
        for t in threading.enumerate()
        if t.ident not in before and t.ident not in resident and t.is_alive()
    ]


@contextlib.contextmanager
def leak_check():
    """Fail if threads or child processes started inside the block outlive it."""
    threads_before = {t.ident for t in threading.enumerate()}
    children_before = {c.pid for c in psutil.Process().children()} - pool_worker_pids()
    yield
    deadline = time.monotonic() + GRACE_SECONDS
    while time.monotonic() < deadline:
        if not extra_threads(threads_before) and not extra_children(children_before):
            break
        time.sleep(0.05)
    leaked_threads = extra_threads(threads_before)
    assert not leaked_threads, f"threads still running after the test: {leaked_threads}"
    leaked = extra_children(children_before)
    assert not leaked, f"child processes left after the test: {sorted(leaked)}"


@pytest.fixture
def pool_running():
    """The shared process pool with 2 workers (the tests' ``num_workers=2``, and the
    default on the 2-core CI machine), started, as after any ``processes`` compute in
    a session: ``auto`` starts it itself only for about a second of GIL-holding work
    (``Router.worth_starting``), more than a small test graph has."""
    helpers.warm_up("processes", num_workers=2)


@pytest.fixture
def no_leaks(request):
    if "warm" in request.fixturenames:
        request.getfixturevalue("warm")  # before the baseline, whatever the argument order
    with leak_check():
        yield


@pytest.fixture(scope="module")
def _warmed():
    """The remote backends ``warm`` started in this module; the default cluster is
    closed when the module ends (the next module starts from none)."""
    warmed: set[str] = set()
    yield warmed
    if "distributed" in warmed:
        helpers.stop_default_cluster()


@pytest.fixture
def warm(request, _warmed):
    """Start the shared workers of the remote backend this test is parametrized with
    (its ``backend`` argument), or of every remote backend for a test without one."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and "backend" in callspec.params:
        names = [callspec.params["backend"]]
    else:
        names = helpers.remote_backends()
    for name in names:
        if name in helpers.remote_backends() and name not in _warmed:
            helpers.warm_up(name)
            _warmed.add(name)


@pytest.fixture(scope="module")
def dask_cluster():
    """A ``distributed.LocalCluster``: two single-threaded worker processes on loopback,
    no dashboard.  Before it closes, the clients our dask backend opened for its address
    are closed (``dask_backend.shutdown``)."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        host="127.0.0.1",
    ) as cluster:
        yield cluster
        dask_backend = sys.modules.get("notebook_sched.interop.dask_backend")
        if dask_backend is not None:
            dask_backend.shutdown()  # the clients made for dask_address, before the cluster


@pytest.fixture
def kn(kernel):
    """The requesting module's ``kernel``, with our config reset around the test."""
    from .kernel_helpers import config_reset

    with config_reset(kernel):
        yield kernel


@pytest.fixture(scope="session")
def binder_env(tmp_path_factory):
    """The Binder environment (``binder/requirements.txt`` plus JupyterLab), built once."""
    import secrets

    from . import binder_env as binder

    marker = secrets.token_hex(8)
    try:
        yield binder.build(tmp_path_factory.mktemp("binder"), binder.MARKER, marker)
    finally:
        left = helpers.wait_for_no_marked_processes(binder.MARKER, marker)
        for proc in left:
            proc.kill()


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty disk folder for this test, set as the "disk" folder; empty tiers."""
    import notebook_sched as ns

    monkeypatch.setenv("NOTEBOOK_SCHED_CACHE_DIR", str(tmp_path / "cache"))
    ns.cache_clear()
    yield str(tmp_path / "cache")
    ns.cache_clear()
