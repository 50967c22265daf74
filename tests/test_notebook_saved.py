"""The saved tutorials, as GitHub, nbviewer and a reader who has not run them see them.

No kernel here: the notebooks as saved hold no path of the machine that saved them,
``%schedule``'s list of backends as the package has them, and widget state that a
renderer can draw from (every displayed widget and every widget it refers to saved);
and no cell is skipped by nbval, since a reader's Run All runs every cell.

Running them is done twice elsewhere: nbval (``make test``'s ``--nbval``) runs each in a
kernel of the test environment and compares every cell's output with the saved one,
and ``tests/test_browser_lab.py`` runs each with JupyterLab's Run All, in Chromium, from
a fresh Binder environment: every untagged cell without error, every cell tagged
``raises-exception`` raising, no machine path in an output, under a minute each.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

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


def test_no_cell_is_skipped_by_nbval_since_run_all_runs_every_cell():
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        skipped = [
            i for i, c in enumerate(nb.cells) if c.source.lstrip().startswith("# NBVAL_SKIP")
        ]
        assert not skipped, (
            f"{path.name}: cells {skipped} are skipped by nbval but Run All runs them"
        )


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
