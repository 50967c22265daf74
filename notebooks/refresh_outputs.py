"""Execute the tutorial notebooks in place, so the outputs saved in them are current.

    .venv/bin/python notebooks/refresh_outputs.py                 # every notebook
    .venv/bin/python notebooks/refresh_outputs.py 03-debugging-failed-tasks.ipynb

The saved outputs are what nbval compares against (``make test``), and what GitHub
shows. Run this after editing a notebook, look at the diff, and commit both.

Rules, the same nbval applies:

* a cell whose first line is ``# NBVAL_SKIP`` is not run and keeps no output; the
  tutorials have none, since JupyterLab's Run All runs every cell
  (``tests/test_browser_lab.py`` runs each one top to bottom with Run All; a
  debugger session is played with its commands given up front, ``debug.post_mortem``);
* a cell tagged ``raises-exception`` (or marked ``# NBVAL_RAISES_EXCEPTION``) must
  raise; any other cell must not. The tag also lets JupyterLab's "Run All" go on
  past the cell.

The kernel is this interpreter (the venv's), started in ``notebooks/`` as nbval does.
Widget state is stored in the notebook metadata, so nbviewer can draw the widgets.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
from jupyter_client import KernelManager
from nbclient import NotebookClient
from nbval.kernel import CURRENT_ENV_KERNEL_NAME, NbvalKernelspecManager

HERE = Path(__file__).resolve().parent


def marker(cell, name: str) -> bool:
    lines = cell.source.splitlines()
    return bool(lines) and lines[0].strip() == f"# {name}"


class Client(NotebookClient):
    async def async_execute_cell(self, cell, cell_index, execution_count=None, **kwargs):
        if cell.cell_type == "code" and marker(cell, "NBVAL_SKIP"):
            cell.outputs = []
            cell.execution_count = None
            return cell
        return await super().async_execute_cell(cell, cell_index, execution_count, **kwargs)


def refresh(path: Path, timeout: int = 120) -> float:
    nb = nbformat.read(path, as_version=4)
    # The kernel runs this interpreter, whatever kernelspecs are installed (nbval's
    # --nbval-current-env does the same).
    km = KernelManager(
        kernel_name=CURRENT_ENV_KERNEL_NAME, kernel_spec_manager=NbvalKernelspecManager()
    )
    client = Client(
        nb,
        km=km,
        timeout=timeout,
        allow_errors=True,
        store_widget_state=True,
        resources={"metadata": {"path": str(path.parent)}},
    )
    start = time.monotonic()
    client.execute()
    elapsed = time.monotonic() - start
    problems = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        raised = any(out.output_type == "error" for out in cell.get("outputs", []))
        expected = marker(cell, "NBVAL_RAISES_EXCEPTION") or "raises-exception" in (
            cell.metadata.get("tags") or ()
        )
        if raised != expected:
            problems.append(f"cell {index} {'raised' if raised else 'did not raise'}")
    if problems:
        raise SystemExit(f"{path.name}: " + "; ".join(problems) + " (notebook not saved)")
    nbformat.write(nb, path)
    return elapsed


def main(argv: list[str]) -> None:
    names = argv or sorted(p.name for p in HERE.glob("[0-9][0-9]-*.ipynb"))
    for name in names:
        path = HERE / Path(name).name
        print(f"{path.name}: {refresh(path):.1f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
