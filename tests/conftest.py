"""Shared fixtures: leak checks for threads and processes.

Every test that runs threads or processes uses ``no_leaks``: after the test, no new
thread may still run and no child process may exist besides the live workers of the
shared process pool (which is reused across computes by design).  Stragglers get a
short grace period to finish, since a worker killed on purpose needs a moment to be
reaped.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time

import psutil
import pytest

GRACE_SECONDS = 3.0


def _default_cluster() -> tuple[set[int], set[int]]:
    """Pids and thread idents of the default local cluster, if one was started."""
    defaults = sys.modules.get("notebook_sched.distributed.defaults")
    return defaults.resident() if defaults is not None else (set(), set())


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
    pool = _pool.current_pool()
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
def no_leaks():
    with leak_check():
        yield
