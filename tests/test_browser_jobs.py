"""A background job's bar in a real front end: JupyterLab in headless Chromium.

* One notebook: the first cell submits a job of a few seconds, the second prints a
  line.  After Run All, the second cell has run while the first cell's bar is still
  short of 100%; then the first cell's bar (in the first cell's output, not the
  second's) reaches 100% and turns green, and the second cell's output holds only its
  own line (none of the tasks' prints).
* A front end closed and reopened: two cells submit a job each (one ends well, one
  fails), the notebook is saved while both run (its saved bars are short of 100%), and
  the browser page is closed; the kernel lives on.  Once both jobs have ended, the
  notebook is opened again in a new page, on the same kernel: each cell draws its bar
  (no "Error displaying widget") from the live model, in its final state: 100% and
  green with "finished" for the one, red with the ValueError for the other; not the
  saved state of when the page closed.

Both tests share one JupyterLab server and one browser (the module's fixture), whose
server, browser and clean-up are those of ``test_browser_lab.py`` (imported: Debian's
chromium, installed with apt if missing; no browser download); every process started
carries the marker and none may be left when the module's tests are done.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from types import SimpleNamespace

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
    write_notebook,
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


@pytest.fixture(scope="module")
def lab_browser(tmp_path_factory):
    """One JupyterLab (notebooks in ``root``) and one headless chromium for the module;
    at the end, no process carrying the marker may be left."""
    from playwright.sync_api import sync_playwright

    chromium = ensure_chromium()
    work = tmp_path_factory.mktemp("browser-jobs")
    marker = secrets.token_hex(8)
    root = work / "notebooks"
    root.mkdir()
    lab = Lab(root, work, marker)
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
                yield SimpleNamespace(lab=lab, browser=browser, root=root)
            finally:
                browser.close()
    finally:
        lab.stop()
        left = wait_for_no_marked_processes(MARKER, marker)
        assert not left, f"processes left after the tests: {[p.info for p in left] or left}"


def open_notebook(lab_browser, name: str, workspace: str):
    """A new page with ``name`` open in a fresh workspace, once its kernel is idle."""
    lab = lab_browser.lab
    page = lab_browser.browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(
        f"{lab.url}/lab/workspaces/{workspace}/tree/{name}?reset&token={lab.token}",
        wait_until="domcontentloaded",
    )
    page.wait_for_function(KERNEL_IDLE, timeout=SERVER_TIMEOUT * 1000)
    return page


def test_a_job_bar_reaches_100_percent_in_its_cell_after_a_later_cell_ran(lab_browser, tmp_path):
    write_notebook(lab_browser.root, "jobs.ipynb", CELLS)
    page = open_notebook(lab_browser, "jobs.ipynb", "auto-jobs")
    try:
        page.evaluate(RUN_ALL)
        try:
            page.wait_for_function(SECOND_RAN, timeout=60_000, polling=100)
            while_running = page.evaluate(CELLS_STATE)
            page.wait_for_function(FIRST_BAR_DONE, timeout=60_000, polling=250)
        finally:
            done = page.evaluate(CELLS_STATE)
            page.screenshot(path=str(tmp_path / "jupyterlab-jobs.png"))
    finally:
        page.close()
        shut_down_kernels(lab_browser.lab)

    assert while_running["width"] != "100%", while_running  # the later cell ran first
    assert done["counts"][1] is not None and done["bars_in_second"] == 0, done
    assert "progress-bar-success" in done["classes"] and "finished" in done["header"], done
    assert done["second_text"].strip() == "later cell ran", done


# Two jobs (8 s of naps on 2 threads in all, the jobs sharing them): each writes a file
# naming its state when it ends, which the test waits for while no page is open.
REOPEN_CELLS = [
    "import pathlib, time, notebook_sched as ns\n"
    "def nap(i):\n"
    "    time.sleep(0.25)\n"
    "    return i\n"
    "def mark_ended(job):\n"
    "    pathlib.Path(f'{job.name}.ended').write_text(job.state)\n"
    "dsk = {f'nap-{i}': (nap, i) for i in range(40)}\n"
    "dsk['total'] = (sum, [f'nap-{i}' for i in range(40)])\n"
    "good = ns.submit(dsk, 'total', scheduler='threads', num_workers=2, name='good')\n"
    "good.add_done_callback(mark_ended)",
    "def boom(parts):\n"
    "    raise ValueError('boom after the naps')\n"
    "bad_dsk = {f'nap-{i}': (nap, i) for i in range(24)}\n"
    "bad_dsk['boom'] = (boom, [f'nap-{i}' for i in range(24)])\n"
    "bad = ns.submit(bad_dsk, 'boom', scheduler='threads', num_workers=2, name='bad')\n"
    "bad.add_done_callback(mark_ended)",
    "print(good.state, bad.state, good.result())",  # run only in the reopened page
]

RUN_CELL_AT = """async (index) => {
    const app = window.jupyterapp;
    app.shell.currentWidget.content.activeCellIndex = index;
    await app.commands.execute('notebook:run-cell');
}"""

SAVE = """async () => {
    const panel = window.jupyterapp.shell.currentWidget;
    await panel.context.save();
    return panel.context.model.dirty;
}"""

# Per code cell: its count, its bars (how many, the first one's width and classes), its
# job header and its output text; the kernel's id; the page's widget error boxes.
REOPEN_STATE = """() => {
    const panel = window.jupyterapp.shell.currentWidget;
    const cells = panel.content.widgets.filter(c => c.model.type === 'code');
    const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
    return {
        kernel: kernel ? kernel.id : null,
        cells: cells.map(c => {
            const bar = c.node.querySelector('.widget-hprogress .progress-bar');
            const output = c.node.querySelector('.jp-OutputArea');
            return {
                count: c.model.executionCount,
                bars: c.node.querySelectorAll('.widget-hprogress').length,
                width: bar ? bar.style.width : null,
                classes: bar ? bar.className : '',
                header: (c.node.querySelector('.widget-html-content') || {}).textContent || '',
                text: output ? output.innerText : '',
            };
        }),
        widget_errors: document.body.innerText.split('Error displaying widget').length - 1,
    };
}"""

BOTH_BARS_SHOWN = """() => {
    const panel = window.jupyterapp.shell.currentWidget;
    const cells = panel.content.widgets.filter(c => c.model.type === 'code');
    return cells.slice(0, 2).every(c => c.model.executionCount !== null
        && c.node.querySelector('.widget-hprogress .progress-bar') !== null);
}"""

BOTH_BARS_FINAL = """() => {
    const panel = window.jupyterapp.shell.currentWidget;
    const cells = panel.content.widgets.filter(c => c.model.type === 'code');
    const bar = i => cells[i].node.querySelector('.widget-hprogress .progress-bar');
    return !!bar(0) && !!bar(1) && bar(0).style.width === '100%'
        && bar(0).classList.contains('progress-bar-success')
        && bar(1).classList.contains('progress-bar-danger');
}"""

THIRD_RAN = """() => {
    const panel = window.jupyterapp.shell.currentWidget;
    const cells = panel.content.widgets.filter(c => c.model.type === 'code');
    return cells[2].model.executionCount !== null && cells[2].model.outputs.length > 0;
}"""

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def wait_for_files(paths: list[Path], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        if time.monotonic() > deadline:
            raise AssertionError(f"not written in {timeout:.0f} s: {[p.name for p in paths]}")
        time.sleep(0.1)


def test_a_reopened_front_end_shows_the_jobs_final_bars_from_the_live_kernel(lab_browser, tmp_path):
    lab, root = lab_browser.lab, lab_browser.root
    write_notebook(root, "reopen.ipynb", REOPEN_CELLS)
    ended = [root / "good.ended", root / "bad.ended"]
    page = open_notebook(lab_browser, "reopen.ipynb", "auto-reopen-1")
    try:
        page.evaluate(RUN_CELL_AT, 0)
        page.evaluate(RUN_CELL_AT, 1)
        page.wait_for_function(BOTH_BARS_SHOWN, timeout=30_000, polling=100)
        dirty = page.evaluate(SAVE)
        at_save = page.evaluate(REOPEN_STATE)
    finally:
        page.close()  # the whole front end goes; the kernel lives on in the server
    running_at_close = [p.name for p in ended if not p.exists()]
    saved = nbformat.read(root / "reopen.ipynb", as_version=4)
    try:
        wait_for_files(ended, timeout=60)
        time.sleep(1.0)  # the views' last trait sets follow the done callbacks at once
        sessions = lab.api("/api/sessions")
        page = open_notebook(lab_browser, "reopen.ipynb", "auto-reopen-2")
        try:
            try:
                page.wait_for_function(BOTH_BARS_FINAL, timeout=30_000, polling=250)
                page.evaluate(RUN_CELL_AT, 2)
                page.wait_for_function(THIRD_RAN, timeout=30_000, polling=100)
            finally:
                reopened = page.evaluate(REOPEN_STATE)
                page.screenshot(path=str(tmp_path / "jupyterlab-reopened.png"))
        finally:
            page.close()
    finally:
        shut_down_kernels(lab)

    # The first front end saved the jobs while they ran, then went away.
    assert dirty is False, at_save
    assert running_at_close == ["good.ended", "bad.ended"], (
        f"jobs ended before the page closed (load {os.getloadavg()}): {running_at_close}"
    )
    assert [c["bars"] for c in at_save["cells"][:2]] == [1, 1], at_save
    assert all(c["width"] != "100%" for c in at_save["cells"][:2]), at_save
    for n in (0, 1):
        assert any(WIDGET_VIEW in o.get("data", {}) for o in saved.cells[n].outputs), saved
    assert [p.read_text() for p in ended] == ["finished", "failed"]
    # The reopened one is on the same kernel (the only session) and shows the end.
    assert [s["kernel"]["id"] for s in sessions] == [at_save["kernel"]], sessions
    assert reopened["kernel"] == at_save["kernel"], reopened
    assert reopened["widget_errors"] == 0, reopened
    good, bad, probe = reopened["cells"]
    assert good["bars"] == 1 and good["width"] == "100%", reopened
    assert "progress-bar-success" in good["classes"] and "finished" in good["header"], reopened
    assert bad["bars"] == 1 and "progress-bar-danger" in bad["classes"], reopened
    assert "failed" in bad["header"] and "ValueError: boom after the naps" in bad["header"], (
        reopened
    )
    assert probe["text"].strip() == "finished failed 780", reopened
