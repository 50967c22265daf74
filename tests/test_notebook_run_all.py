"""Every tutorial runs top to bottom the way JupyterLab's "Run All" runs it.

nbclient executes each notebook in a fresh kernel of this interpreter, every cell in
order, with no input available (a cell that waits for the keyboard, such as a bare
``%debug``, fails here instead of hanging), and stops at the first error of a cell that
is not tagged ``raises-exception`` (the tag that lets Run All go on past a cell).
Nothing is skipped: a ``# NBVAL_SKIP`` cell is an error here, since Run All would run it.

What nbval checks (the saved outputs) is separate; this test checks what a reader who
presses Run All gets: no unexpected error, every tagged cell really raising, and no
absolute path of this checkout or of the home folder in any output.
"""

from __future__ import annotations

import os
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
    try:
        with client.setup_kernel(env=env):
            for index, cell in enumerate(nb.cells):
                try:
                    client.execute_cell(cell, index)
                except CellExecutionError as error:
                    pytest.fail(f"{path.name}: cell {index} raised (not tagged):\n{error}")
    finally:
        if manager.has_kernel:
            manager.shutdown_kernel()  # we own the manager, so nbclient leaves it running
        left = wait_for_no_marked_processes(MARKER, marker)
        for proc in left:  # do not leak into the next test; still fail below
            proc.kill()
    assert not left, f"processes left after {path.name}: {left or marked_processes(MARKER, marker)}"

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
