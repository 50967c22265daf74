"""The fast subset of Dask's own tests on our backends (the whole: ``make test-dask``).

Dask's scheduler-facing modules (``FAST_MODULES`` in ``tests/dask_suite/run.py``)
run in place from the installed Dask, in a pytest subprocess with our plugin standing
in for Dask's schedulers; every test must pass or be in the documented skip list.
"""

from __future__ import annotations

import ast
import os
import subprocess

import pytest

from .dask_suite import run
from .dask_suite.skips import SKIPS, SKIPS_BY_BACKEND, reason_for

pytestmark = pytest.mark.timeout(300)


@pytest.mark.parametrize("backend", ["sync", "threads", "processes"])
def test_dasks_scheduler_tests_pass_on_our_backend(backend, tmp_path):
    xml = tmp_path / f"{backend}.xml"
    command = run.pytest_command(backend, list(run.FAST_MODULES), xml, ["-x"])
    env = {**os.environ, "PYTHONPATH": str(run.ROOT)}
    env.pop("PYTEST_CURRENT_TEST", None)
    done = subprocess.run(
        command, cwd=run.ROOT, capture_output=True, text=True, timeout=280, env=env
    )
    results = run.outcomes(xml)
    failed = sorted(t for t, outcome in results.items() if outcome == "failed")
    assert not failed, done.stdout[-4000:]
    assert sum(outcome == "passed" for outcome in results.values()) > 80, done.stdout[-2000:]
    assert done.returncode == 0, done.stdout[-4000:]


def test_every_skip_names_a_test_that_exists_and_gives_a_reason():
    base = run.dask_dir()
    every = dict(SKIPS)
    for skips in SKIPS_BY_BACKEND.values():
        every.update(skips)
    for test_id, reason in every.items():
        path, _, name = test_id.partition("::")
        tree = ast.parse((base / path).read_text())
        names = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
        assert name in names, f"{test_id} is not in the installed Dask; drop it from skips.py"
        assert len(reason) > 30, test_id


def test_skip_ids_match_parametrised_node_ids_only_of_that_test():
    some = next(iter(SKIPS))
    assert reason_for(f"/x/site-packages/dask/{some}[param-1]") == SKIPS[some]
    assert reason_for(f"/x/site-packages/dask/{some}") == SKIPS[some]
    assert reason_for(f"/x/site-packages/dask/{some}_other") is None
