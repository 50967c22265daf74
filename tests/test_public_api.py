"""The public surface is what we mean to export, and importing it stays cheap."""

from __future__ import annotations

import subprocess
import sys

import pytest

import notebook_sched as ns

EXPECTED = {
    "get",
    "compute",
    "delayed",
    "Delayed",
    "config",
    "events",
    "schedulers",
    "last_failure",
    "TaskFailure",
    "GraphError",
    "CycleError",
    "WorkerDiedError",
    "picker",
    "progress",
    "Profiler",
    "Advisor",
    "advise",
    "load_ipython_extension",
    "unload_ipython_extension",
    "LocalCluster",
    "Client",
    "Future",
    "as_completed",
    "cache_info",
    "cache_clear",
    "submit",
    "jobs",
    "cancel_all",
    "__version__",
}


def test_all_is_exactly_the_public_surface():
    assert set(ns.__all__) == EXPECTED
    for name in ns.__all__:
        assert getattr(ns, name) is not None, name


def test_jobs_stays_the_function_after_its_module_is_imported():
    import importlib

    # The package is ``background``: a submodule named ``jobs`` would replace the
    # function ns.jobs with itself on import (no module of the root is named like a
    # public function; see notebook_sched/__init__.py).
    jobs_module = importlib.import_module("notebook_sched.background")
    assert callable(ns.jobs) and ns.jobs is jobs_module.jobs
    assert ns.submit is jobs_module.submit and ns.cancel_all is jobs_module.cancel_all


def test_backend_modules_have_the_get_contract():
    from notebook_sched.schedulers import processes, sync, threads

    for module in (sync, threads, processes):
        assert module.get({"a": 1, "b": (abs, "a")}, [["b"], "a"]) == ((1,), 1)


def test_import_is_cheap_and_needs_no_jupyter_or_heavy_modules():
    code = (
        "import sys, notebook_sched\n"
        "heavy = ['IPython', 'ipywidgets', 'matplotlib', 'numpy', 'cloudpickle', 'dask',"
        " 'multiprocessing.connection', 'ipykernel']\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


def test_py_typed_ships():
    from importlib.resources import files

    assert files("notebook_sched").joinpath("py.typed").is_file()


def test_reprs_show_state():
    from notebook_sched.graph import compile_graph

    assert repr(compile_graph({"a": 1, "b": (abs, "a")}, ["b"])) == (
        "<CompiledGraph tasks=2 outputs=1>"
    )
    assert repr(ns.delayed(abs, name="absolute")(1)).startswith("Delayed('absolute-")


def test_dir_lists_the_public_names_lazy_ones_included():
    """``dir(ns)`` is ``__all__`` (no ``Any``/``annotations``), so Tab completes ``ns.pi``."""
    assert dir(ns) == sorted(ns.__all__)


# A notebook cell's function (pickled by value) that uses the package inside the task.
_CELL = """
import pytest

import notebook_sched as ns

def nested(x):
    return ns.get({"a": (abs, x)}, "a", scheduler="sync") + (ns.config.get("cache") is False)
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", ["processes", "auto", "distributed"])
def test_a_task_that_mentions_the_package_runs_in_worker_processes(backend, warm):
    cell = {"__name__": "__main__"}  # as in a notebook: cloudpickle sends it by value
    exec(compile(_CELL, "<cell>", "exec"), cell)
    assert ns.get({"t": (cell["nested"], -4)}, "t", scheduler=backend) == 5
