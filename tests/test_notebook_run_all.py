"""Every tutorial runs top to bottom the way JupyterLab's "Run All" runs it.

nbclient executes each notebook in a fresh kernel of this interpreter, every cell in
order, with no input available (a cell that waits for the keyboard, such as a bare
``%debug``, fails here instead of hanging), and stops at the first error of a cell that
is not tagged ``raises-exception`` (the tag that lets Run All go on past a cell).
Nothing is skipped: a ``# NBVAL_SKIP`` cell is an error here, since Run All would run it.

What nbval checks (the saved outputs) is separate; this test checks what a reader who
presses Run All gets: no unexpected error, every tagged cell really raising, no
absolute path of this checkout or of the home folder in any output, and a Run All
that takes under a minute on a quiet 2-core machine (:data:`RUN_ALL_SECONDS`; on a
busy machine the budget grows with the load average, since every cell then waits for
a CPU).

The saved notebooks themselves (what GitHub, nbviewer and a reader who has not run
them see) are checked too, without a kernel: no path of the machine that saved them,
``%schedule``'s list of backends as the package has them, and widget state that a
renderer can draw from (every displayed widget and every widget it refers to saved).
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import nbformat
import pytest
from jupyter_client import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbval.kernel import CURRENT_ENV_KERNEL_NAME, NbvalKernelspecManager

from .helpers import marked_processes, wait_for_no_marked_processes

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))
MARKER = "NOTEBOOK_SCHED_BROWSER_TEST"  # the leak marker test_browser_lab.py uses
CELL_TIMEOUT = 120
RUN_ALL_SECONDS = 60.0  # per tutorial, on a quiet 2-core machine (README)


def tagged(cell) -> bool:
    return "raises-exception" in (cell.metadata.get("tags") or ())


def _text(output) -> str:
    if output.output_type == "stream":
        return output.text
    if output.output_type == "error":
        return "\n".join(output.traceback)
    return "\n".join(str(v) for v in output.get("data", {}).values())


@pytest.mark.timeout(300)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_like_run_all(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    skipped = [i for i, c in enumerate(nb.cells) if c.source.lstrip().startswith("# NBVAL_SKIP")]
    assert not skipped, f"cells {skipped} are skipped by nbval but Run All runs them"
    marker = os.urandom(8).hex()
    manager = KernelManager(
        kernel_name=CURRENT_ENV_KERNEL_NAME, kernel_spec_manager=NbvalKernelspecManager()
    )
    client = NotebookClient(
        nb,
        km=manager,
        timeout=CELL_TIMEOUT,
        allow_errors=False,  # stop at the first error of an untagged cell, as Run All
        resources={"metadata": {"path": str(path.parent)}},
    )
    env = {**os.environ, MARKER: marker}
    env.pop("PYTEST_CURRENT_TEST", None)
    load = os.getloadavg()[0] / (os.cpu_count() or 1)
    try:
        with client.setup_kernel(env=env):
            start = time.monotonic()
            for index, cell in enumerate(nb.cells):
                try:
                    client.execute_cell(cell, index)
                except CellExecutionError as error:
                    pytest.fail(f"{path.name}: cell {index} raised (not tagged):\n{error}")
            elapsed = time.monotonic() - start
    finally:
        if manager.has_kernel:
            manager.shutdown_kernel()  # we own the manager, so nbclient leaves it running
        left = wait_for_no_marked_processes(MARKER, marker)
        for proc in left:  # do not leak into the next test; still fail below
            proc.kill()
    assert not left, f"processes left after {path.name}: {left or marked_processes(MARKER, marker)}"

    load = max(1.0, load, os.getloadavg()[0] / (os.cpu_count() or 1))
    assert elapsed < RUN_ALL_SECONDS * load, (
        f"{path.name}: Run All took {elapsed:.0f} s, over {RUN_ALL_SECONDS:.0f} s"
        + (f" x {load:.1f} (the load average per CPU)" if load > 1 else "")
    )
    home = os.path.expanduser("~")
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        raised = any(out.output_type == "error" for out in cell.outputs)
        assert raised == tagged(cell), (
            f"{path.name}: cell {index} is tagged raises-exception but did not raise"
            if tagged(cell)
            else f"{path.name}: cell {index} raised"
        )
        text = "".join(_text(out) for out in cell.outputs)
        for folder in (str(ROOT), home):
            assert folder + os.sep not in text, f"{path.name}: cell {index} shows {folder}"


# -- the saved notebooks, as GitHub, nbviewer and a reader who has not run them see them

MACHINE_PATH = re.compile(r"/tmp/|ipykernel_\d+|/home/|/root/|/Users/|site-packages")
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_saved_outputs_hold_no_machine_path(path):
    nb = nbformat.read(path, as_version=4)
    for index, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            text = _text(out)
            found = MACHINE_PATH.search(text) or (str(ROOT) in text and str(ROOT))
            assert not found, f"{path.name}: cell {index} shows a machine path: {found}"


def test_saved_schedule_output_lists_every_backend():
    from notebook_sched.ipython.describe import backend_choices

    nb = nbformat.read(ROOT / "notebooks" / "01-getting-started.ipynb", as_version=4)
    shown = [
        line
        for cell in nb.cells
        if cell.cell_type == "code" and cell.source.strip() == "%schedule"
        for out in cell.outputs
        for line in _text(out).splitlines()
        if line.startswith("backends:")
    ]
    assert shown == [f"backends:  {backend_choices()}"], shown
    assert "auto" in shown[0]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_saved_widget_state_holds_every_widget_shown(path):
    """What nbviewer (and a trusting JupyterLab) needs to draw a saved widget: its model
    and every model it refers to (``IPY_MODEL_<id>``) in the notebook's widget state."""
    nb = nbformat.read(path, as_version=4)
    views = [
        out["data"][WIDGET_VIEW]["model_id"]
        for cell in nb.cells
        for out in cell.get("outputs", [])
        if WIDGET_VIEW in out.get("data", {})
    ]
    if not views:
        return
    saved = nb.metadata.get("widgets", {}).get(WIDGET_STATE)
    assert saved and saved["version_major"] == 2, f"{path.name}: no widget state saved"
    state = saved["state"]
    missing = [v for v in views if v not in state]
    assert not missing, f"{path.name}: widgets shown but not saved: {missing}"
    refs = set(re.findall(r"IPY_MODEL_([0-9a-f]+)", json.dumps(state)))
    assert refs <= set(state), f"{path.name}: models referred to but not saved"
