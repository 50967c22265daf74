"""A task that cannot be loaded in a worker process ends the run with a clear error.

Its function comes from a module that imports in the caller but raises when a worker
imports it (a module that checks its environment, a file only the caller can read).
On the local cluster the worker's only receiving thread died unpickling the message,
and every run then hung; now the worker says why and exits, and a task sent to three
workers that each die before starting it fails with a ``KilledWorker`` that says the
task could not be loaded.  On ``processes`` the worker reports the import error as
the task's own.  Each case then computes again on the same backend.
"""

from __future__ import annotations

import sys
import textwrap

import pytest

import notebook_sched as ns

from .helpers import outcome_within

MODULE = textwrap.dedent(
    """
    import os
    if os.environ.setdefault("UNLOADABLE_HOME", str(os.getpid())) != str(os.getpid()):
        raise ImportError("unloadable_mod cannot be imported in a worker")

    def inc(x):
        return x + 1
    """
)


@pytest.fixture
def unloadable(tmp_path, monkeypatch):
    (tmp_path / "unloadable_mod.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("UNLOADABLE_HOME", raising=False)
    import unloadable_mod

    yield unloadable_mod
    sys.modules.pop("unloadable_mod", None)


def _graph(module):
    return {("a", i): (module.inc, i) for i in range(4)}


@pytest.mark.timeout(90)
def test_the_cluster_fails_a_task_it_cannot_load_instead_of_hanging(unloadable, no_leaks):
    from notebook_sched.distributed import Client, KilledWorker, LocalCluster

    with LocalCluster(n_workers=2) as cluster, Client(cluster) as client:
        graph = _graph(unloadable)
        outcome = outcome_within(lambda: client.get(graph, list(graph)), 60)
        assert isinstance(outcome, KilledWorker), outcome
        assert "cannot be loaded in a worker process" in str(outcome)
        assert "('a', " in str(outcome)
        assert client.get({"x": (sum, [1, 2])}, "x") == 3  # the cluster works on


@pytest.mark.timeout(90)
def test_processes_report_the_import_error_as_the_tasks(unloadable, no_leaks, warm):
    # A pool started before the test's sys.path change says "No module named": both
    # are the task's own ImportError, naming the module.
    with pytest.raises(ImportError, match="unloadable_mod"):
        ns.get(_graph(unloadable), list(_graph(unloadable)), scheduler="processes")
    assert ns.get({"x": (sum, [1, 2])}, "x", scheduler="processes") == 3
