"""A background job's bar in a real front end: JupyterLab in headless Chromium.

One notebook: the first cell submits a job of a few seconds, the second prints a
line.  After Run All, the second cell has run while the first cell's bar is still
short of 100%; then the first cell's bar (in the first cell's output, not the
second's) reaches 100% and turns green, and the second cell's output holds only its
own line (none of the tasks' prints).

The server, the browser and the clean-up are those of ``test_browser_lab.py``
(imported: Debian's chromium, installed with apt by the fixture if missing; no
browser download); every process started carries the marker and none may be left.
"""

from __future__ import annotations

import os
import secrets

import nbformat
import pytest

from .helpers import wait_for_no_marked_processes
from .test_browser_lab import (
    CHROMIUM_FLAGS,
    KERNEL_IDLE,
    MARKER,
    RUN_ALL,
    SERVER_TIMEOUT,
    Lab,
    ensure_chromium,
    shut_down_kernels,
)

pytestmark = pytest.mark.timeout(900)  # as test_browser_lab: apt may install chromium

CELLS = [
    "import time, notebook_sched as ns\n"
    "def step(i):\n"
    "    time.sleep(0.1)\n"
    "    print('task', i)\n"
    "    return i\n"
    "dsk = {f'step-{i}': (step, i) for i in range(60)}\n"
    "dsk['total'] = (sum, [f'step-{i}' for i in range(60)])\n"
    "job = ns.submit(dsk, 'total', scheduler='threads', num_workers=2)",
    "print('later cell ran')",
]

# The two cells' state: execution counts, the first cell's bar, the second's text.
CELLS_STATE = """() => {
    const panel = window.jupyterapp.shell.currentWidget;
    const cells = panel.content.widgets.filter(c => c.model.type === 'code');
    const bar = cells[0].node.querySelector('.widget-hprogress .progress-bar');
    return {
        counts: cells.map(c => c.model.executionCount),
        width: bar ? bar.style.width : null,
        classes: bar ? bar.className : '',
        bars_in_second: cells[1].node.querySelectorAll('.widget-hprogress').length,
        second_text: cells[1].node.querySelector('.jp-OutputArea')
            ? cells[1].node.querySelector('.jp-OutputArea').innerText : '',
        header: (cells[0].node.querySelector('.widget-html-content') || {}).textContent || '',
    };
}"""

SECOND_RAN = """() => {
    const panel = window.jupyterapp.shell.currentWidget;
    const cells = panel.content.widgets.filter(c => c.model.type === 'code');
    return cells.length === 2 && cells[1].model.executionCount !== null;
}"""

FIRST_BAR_DONE = """() => {
    const panel = window.jupyterapp.shell.currentWidget;
    const cells = panel.content.widgets.filter(c => c.model.type === 'code');
    const bar = cells[0].node.querySelector('.widget-hprogress .progress-bar');
    return !!bar && bar.style.width === '100%' && bar.classList.contains('progress-bar-success');
}"""


@pytest.fixture
def chromium() -> str:
    return ensure_chromium()


def test_a_job_bar_reaches_100_percent_in_its_cell_after_a_later_cell_ran(chromium, tmp_path):
    from playwright.sync_api import sync_playwright

    marker = secrets.token_hex(8)
    root = tmp_path / "notebooks"
    root.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in CELLS]
    nb.metadata["kernelspec"] = {
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
        "name": "python3",
    }
    nbformat.write(nb, root / "jobs.ipynb")
    lab = Lab(root, tmp_path, marker)
    try:
        lab.wait_ready()
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium,
                headless=True,
                args=CHROMIUM_FLAGS,
                env={**os.environ, MARKER: marker},
                timeout=60_000,
            )
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(
                    f"{lab.url}/lab/workspaces/auto-jobs/tree/jobs.ipynb?reset&token={lab.token}",
                    wait_until="domcontentloaded",
                )
                page.wait_for_function(KERNEL_IDLE, timeout=SERVER_TIMEOUT * 1000)
                page.evaluate(RUN_ALL)
                try:
                    page.wait_for_function(SECOND_RAN, timeout=60_000, polling=100)
                    while_running = page.evaluate(CELLS_STATE)
                    page.wait_for_function(FIRST_BAR_DONE, timeout=60_000, polling=250)
                finally:
                    done = page.evaluate(CELLS_STATE)
                    page.screenshot(path=str(tmp_path / "jupyterlab-jobs.png"))
                page.close()
                shut_down_kernels(lab)
            finally:
                browser.close()
    finally:
        lab.stop()
        left = wait_for_no_marked_processes(MARKER, marker)
        assert not left, f"processes left after the test: {[p.info for p in left] or left}"

    assert while_running["width"] != "100%", while_running  # the later cell ran first
    assert done["counts"][1] is not None and done["bars_in_second"] == 0, done
    assert "progress-bar-success" in done["classes"] and "finished" in done["header"], done
    assert done["second_text"].strip() == "later cell ran", done
