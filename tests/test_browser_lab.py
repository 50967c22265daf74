"""The tutorials in a real front end: JupyterLab in headless Chromium, each with Run All.

The kernel tests prove the kernel sends the right messages; this test proves what a
reader sees, where a Binder reader sees it. It starts JupyterLab from a fresh Binder
environment (``binder/requirements.txt`` as repo2docker installs it, plus JupyterLab:
tests/binder_env.py), on loopback with a random token, and, for every tutorial (a copy
without saved outputs or widget state, so nothing on the page can come from a previous
run), opens it with a fresh workspace, runs JupyterLab's own "Run All" command, waits
until every cell has run and the kernel is idle, and checks the page:

* every code cell ran; no error output in a cell that is not tagged
  ``raises-exception``, and an error in every cell that is; none of the front end's
  "Error displaying widget" boxes;
* no absolute path of this machine (the repository, the environment, the home folder)
  in any output, and each Run All under a minute on a quiet 2-core machine (the budget
  grows with the load average);
* ``01-getting-started``: progress bars that reach 100% and turn green, and the picker
  with ``threads`` selected after the notebook's ``%schedule`` cells, and a selection
  in its workers dropdown and progress toggle in their default ("auto") state;
* ``05-dask-collections``: the ``%%schedule processes`` failure's first frame is the
  user's cell (no ``run_cell_magic`` frame, none of our files);
* a scratch notebook (``%load_ext notebook_sched``, then the kernel's first
  ``distributed`` compute, which starts the cluster and shows the kernel's first
  progress bar): the status bar reads "Busy" for as long as that cell runs (JupyterLab
  asks for a widget subshell at a kernel's first widget, and shows the status of that
  request as the kernel's: see ``diagnostics/kernel_life.py``).

A screenshot per tutorial is saved in the test's temporary folder (look at them after a
change to a view). The notebook's kernel is shut down before the next one opens.

Chromium is Debian's (``/usr/bin/chromium``), driven by Playwright's Python package
with ``executable_path``; Playwright's own browser download is never used. When
chromium is missing the test installs it with apt (as root); where that cannot work
it is skipped, and ``-ra`` prints the reason.

Every process the test starts carries a marker in its environment; at the end no
process with that marker may be left (the server, kernels, worker processes of the
notebook's schedulers and clusters, and the browser).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest

from .helpers import wait_for_no_marked_processes

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MARKER = "NOTEBOOK_SCHED_BROWSER_TEST"
SERVER_TIMEOUT = 60.0
RUN_ALL_SECONDS = 60.0  # per tutorial, on a quiet 2-core machine (README)
RUN_TIMEOUT = 90.0  # per notebook; the slowest (02, timings) takes about 25 s on 2 cores

# The test takes about two minutes; installing chromium on a new machine may take a few
# more, within the apt time limits below.
pytestmark = pytest.mark.timeout(900)  # apt's limits (450 s) plus the run (~150 s), with room
APT_TIMEOUTS = {"update": 150, "install": 300}


def ensure_chromium() -> str:
    """The path of Debian's chromium, installed with apt if missing; else skip."""
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    if sys.platform != "linux" or shutil.which("apt-get") is None:
        pytest.skip(f"{CHROMIUM} is missing and there is no apt-get to install it")
    if os.geteuid() != 0:
        pytest.skip(f"{CHROMIUM} is missing and installing it needs root (apt-get install)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        limit = APT_TIMEOUTS[command[1]]
        try:
            done = subprocess.run(
                command, env=env, capture_output=True, text=True, timeout=limit, check=False
            )
        except subprocess.TimeoutExpired:
            pytest.skip(f"'{' '.join(command)}' did not finish in {limit} s")
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
            pytest.skip(
                f"chromium could not be installed: '{' '.join(command)}' exited with "
                f"{done.returncode}: {' / '.join(tail)}"
            )
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"apt-get installed chromium but {CHROMIUM} is not there")
    return CHROMIUM


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_copy(source: Path, folder: Path) -> Path:
    """The notebook without outputs, execution counts or stored widget state."""
    nb = nbformat.read(source, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    nb.metadata.pop("widgets", None)
    target = folder / source.name
    nbformat.write(nb, target)
    return target


class Lab:
    """A JupyterLab server on 127.0.0.1 with a token, in its own session."""

    def __init__(
        self, root_dir: Path, work: Path, marker: str, python=None, base_env: dict | None = None
    ):
        self.port = free_port()
        self.token = secrets.token_hex(24)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = work / "jupyterlab.log"
        env = {
            **(os.environ if base_env is None else base_env),
            MARKER: marker,
            "JUPYTER_PREFER_ENV_PATH": "1",  # the venv's kernelspec and lab extensions
            "JUPYTER_RUNTIME_DIR": str(work / "runtime"),
            "JUPYTER_CONFIG_DIR": str(work / "config"),
            "JUPYTERLAB_SETTINGS_DIR": str(work / "settings"),
            "JUPYTERLAB_WORKSPACES_DIR": str(work / "workspaces"),
        }
        # No "get notified about Jupyter news?" box over the screenshots.
        settings = work / "settings" / "@jupyterlab" / "apputils-extension"
        settings.mkdir(parents=True, exist_ok=True)
        (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
        command = [
            str(python or sys.executable),
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={root_dir}",
            "--LabApp.expose_app_in_browser=True",
            "--LabApp.news_url=",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",
        ]
        if os.geteuid() == 0:
            command.append("--ServerApp.allow_root=True")
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command,
            cwd=root_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def api(self, path: str, method: str = "GET") -> dict:
        request = urllib.request.Request(
            self.url + path,
            method=method,
            headers={"Authorization": f"token {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            body = response.read()
        return json.loads(body) if body else {}

    def wait_ready(self) -> None:
        deadline = time.monotonic() + SERVER_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"JupyterLab exited with {self.process.returncode}:\n{self.log()}"
                )
            try:
                self.api("/api/status")
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
        raise AssertionError(f"JupyterLab did not answer in {SERVER_TIMEOUT:.0f} s:\n{self.log()}")

    def stop(self) -> None:
        """Shut down (kernels included) through the API; signals if that fails."""
        try:
            if self.process.poll() is None:
                self.api("/api/shutdown", method="POST")
            self.process.wait(20)
        except Exception:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                if self.process.poll() is not None:
                    break
                try:
                    os.killpg(self.process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.process.wait(10)
                except subprocess.TimeoutExpired:
                    pass
        finally:
            self._log.close()


# JavaScript run in the page. ``window.jupyterapp`` exists with expose_app_in_browser.
KERNEL_IDLE = """() => {
    const app = window.jupyterapp;
    const panel = app && app.shell.currentWidget;
    const kernel = panel && panel.sessionContext && panel.sessionContext.session
        && panel.sessionContext.session.kernel;
    return !!kernel && kernel.status === 'idle'
        && panel.content && panel.content.widgets.length > 0;
}"""

RUN_ALL = "() => window.jupyterapp.commands.execute('notebook:run-all-cells')"

# Every code cell has run (an execution count, no '*') and the kernel is idle again; or
# Run All stopped at an error in a cell not tagged raises-exception.
ALL_CELLS_RAN = """() => {
    const panel = window.jupyterapp.shell.currentWidget;
    const kernel = panel.sessionContext.session.kernel;
    const cells = panel.content.widgets.filter(c => c.model.type === 'code');
    const untagged = cells.some(c => !(c.model.getMetadata('tags') || [])
        .includes('raises-exception')
        && c.model.outputs.toJSON().some(o => o.output_type === 'error'));
    return kernel.status === 'idle'
        && (untagged || cells.every(c => c.model.executionCount !== null));
}"""

NOTEBOOK_STATE = """() => {
    const panel = window.jupyterapp.shell.currentWidget;
    const cells = panel.content.widgets.filter(c => c.model.type === 'code');
    return {
        path: panel.context.path,
        cells: cells.map(c => ({
            source: c.model.sharedModel.getSource().slice(0, 120),
            tags: c.model.getMetadata('tags') || [],
            count: c.model.executionCount,
            errors: c.model.outputs.toJSON().filter(o => o.output_type === 'error')
                .map(o => ({ename: o.ename, traceback: (o.traceback || []).join('\\n')})),
            text: c.model.outputs.toJSON().map(o => [].concat(o.text || [])
                .concat(o.traceback || [])
                .concat(Object.values(o.data || {})
                    .map(v => typeof v === 'string' ? v : JSON.stringify(v)))
                .join('\\n')).join('\\n'),
        })),
        widget_errors: document.body.innerText.split('Error displaying widget').length - 1,
    };
}"""

PROGRESS_DONE = """() => {
    const bars = [...document.querySelectorAll('.widget-hprogress .progress-bar')];
    return bars.length > 0 && bars.every(b => b.style.width === '100%'
        && b.classList.contains('progress-bar-success'));
}"""

PAGE_STATE = """() => ({
    bars: [...document.querySelectorAll('.widget-hprogress')].map(w => ({
        label: (w.querySelector('.widget-label') || {}).textContent || '',
        width: (w.querySelector('.progress-bar') || {style: {}}).style.width,
        classes: (w.querySelector('.progress-bar') || {className: ''}).className,
    })),
    headers: [...document.querySelectorAll('.widget-html-content')]
        .map(h => h.textContent).filter(t => t.includes('notebook_sched')),
    radios: [...document.querySelectorAll('.widget-radio-box label')].map(l => ({
        text: l.textContent, checked: !!(l.querySelector('input') || {}).checked,
    })),
    dropdowns: [...document.querySelectorAll('.widget-dropdown')].map(d => {
        const select = d.querySelector('select');
        return {
            label: (d.querySelector('.widget-label') || {}).textContent || '',
            selected: select && select.selectedIndex >= 0
                ? select.options[select.selectedIndex].text : '',
        };
    }),
    toggles: [...document.querySelectorAll('.widget-toggle-buttons')].map(t => ({
        label: (t.querySelector('.widget-label') || {}).textContent || '',
        active: [...t.querySelectorAll('button.mod-active')].map(b => b.textContent.trim()),
    })),
})"""

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture
def chromium() -> str:
    return ensure_chromium()


def run_notebook(page, lab: Lab, path: Path, screenshot: Path) -> dict:
    """Open ``path`` in a fresh workspace, Run All, wait; the notebook's state and, for
    01, the page's widgets.  A screenshot is taken whatever happens."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.goto(
        f"{lab.url}/lab/workspaces/auto-{path.stem[:2]}/tree/{path.name}?reset&token={lab.token}",
        wait_until="domcontentloaded",
    )
    page.wait_for_function(KERNEL_IDLE, timeout=SERVER_TIMEOUT * 1000)
    page.evaluate(RUN_ALL)
    started = time.monotonic()
    finished = None
    state: dict = {}
    try:
        page.wait_for_function(ALL_CELLS_RAN, timeout=RUN_TIMEOUT * 1000, polling=250)
        finished = time.monotonic()
        if path.stem.startswith("01"):
            try:  # the final redraw may trail the end of the cell a little
                page.wait_for_function(PROGRESS_DONE, timeout=10_000)
            except PlaywrightTimeout:
                pass  # the asserts below show what the page has
    finally:
        state = page.evaluate(NOTEBOOK_STATE)
        state["seconds"] = (finished or time.monotonic()) - started
        state["page"] = page.evaluate(PAGE_STATE)
        # Scroll to what the tutorial is about: the picker, the red bar, the live
        # cluster view, the %%schedule processes failure.
        focus = {
            "01": page.locator(".widget-radio-box"),
            "03": page.locator(".widget-hprogress .progress-bar-danger"),
            "04": page.locator(".widget-html-content", has_text="LocalCluster"),
            "05": page.locator(".jp-CodeCell", has_text='records.pluck("amount").sum()'),
        }.get(path.stem[:2])
        if focus is not None and focus.count():
            focus.last.evaluate("e => e.scrollIntoView({block: 'start'})")
        page.screenshot(path=str(screenshot))
    return state


# The status bar's kernel item ("Python 3 (ipykernel) | Busy") and each code cell's prompt.
STATUS_SAMPLE = """() => {
    const panel = window.jupyterapp.shell.currentWidget;
    const items = [...document.querySelectorAll('.jp-StatusBar-TextItem')]
        .map(e => e.textContent).filter(t => / \\| (Idle|Busy)/.test(t));
    const cells = panel.content.widgets.filter(c => c.model.type === 'code');
    return {status: items.join(' '), prompts: cells.map(c => c.model.executionCount === null
        ? (c.promptNode ? c.promptNode.textContent : '') : String(c.model.executionCount))};
}"""

# Every status message and every control request, in the page: [seconds, parent type or
# request type, state or 'sent'], in window._statusLog (for a failure's message).
STATUS_LOG = """() => {
    const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
    const start = performance.now();
    window._statusLog = [];
    kernel.anyMessage.connect((_, args) => {
        const msg = args.msg;
        const when = Math.round(performance.now() - start) / 1000;
        if (msg.header.msg_type === 'status') {
            window._statusLog.push([when, (msg.parent_header || {}).msg_type || '',
                msg.content.execution_state]);
        } else if (args.direction === 'send' && msg.channel === 'control') {
            window._statusLog.push([when, msg.header.msg_type, 'sent']);
        }
    });
}"""

FIRST_DISTRIBUTED = [
    "import time\nimport notebook_sched as ns\n%load_ext notebook_sched",
    "def slow(x):\n    time.sleep(0.4)\n    return x\n\n"
    "ns.get({f'slow-{i}': (slow, i) for i in range(10)}, [f'slow-{i}' for i in range(10)],"
    " scheduler='distributed', num_workers=2)",
]


def write_notebook(folder: Path, name: str, sources: list[str]) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    path = folder / name
    nbformat.write(nb, path)
    return path


def status_during_run_all(page, lab: Lab, path: Path, timeout: float = RUN_TIMEOUT) -> list:
    """Open ``path``, start Run All (not waiting for it) and sample the status bar and
    the cells' prompts every 0.1 s until every cell ran: ``[(seconds, status, prompts)]``."""
    page.goto(
        f"{lab.url}/lab/workspaces/auto-status/tree/{path.name}?reset&token={lab.token}",
        wait_until="domcontentloaded",
    )
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.wait_for_function(KERNEL_IDLE, timeout=SERVER_TIMEOUT * 1000)
    page.evaluate(STATUS_LOG)
    try:  # JupyterLab's widget manager asks the new kernel for its widgets through a
        # comm of its own, on a subshell it then deletes: let that pass first
        page.wait_for_function(
            "() => window._statusLog.some(r => r[1] === 'delete_subshell_request')",
            timeout=5000,
        )
    except PlaywrightTimeout:
        pass  # this JupyterLab did not do that (or did before the log started)
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    samples: list = []
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        sample = page.evaluate(STATUS_SAMPLE)
        samples.append((time.monotonic() - start, sample["status"], sample["prompts"]))
        if all(p.isdigit() for p in sample["prompts"]) and sample["status"].endswith("Idle"):
            break
        time.sleep(0.1)
    log = page.evaluate("() => window._statusLog.filter(r => !r[1].startsWith('debug'))")
    samples.append((None, "log", log))
    return samples


def check_status_while_computing(samples: list) -> None:
    """While the second cell runs (the first has its number, the second does not), the
    status bar reads Busy; a moment after the first cell ends is left out (the next
    cell's busy status may trail the previous cell's idle)."""
    *samples, (_, _, log) = samples
    first_done = next((t for t, _, p in samples if p[0].isdigit()), None)
    assert first_done is not None, samples
    during = [(t, s) for t, s, p in samples if t > first_done + 0.3 and not p[1].isdigit()]
    assert len(during) >= 5, f"the compute was not seen running: {samples}"
    idle = [(round(t, 1), s) for t, s in during if not s.endswith("Busy")]
    assert not idle, f"status bar not Busy while the cell computes: {idle}; messages: {log}"


def shut_down_kernels(lab: Lab) -> None:
    for session in lab.api("/api/sessions"):
        lab.api(f"/api/sessions/{session['id']}", method="DELETE")


def test_every_tutorial_runs_in_jupyterlab_in_the_binder_environment(
    chromium, binder_env, tmp_path
):
    from playwright.sync_api import sync_playwright

    marker = secrets.token_hex(8)
    root = tmp_path / "notebooks"
    root.mkdir()
    for path in NOTEBOOKS:
        clean_copy(binder_env.repo / "notebooks" / path.name, root)
    load = os.getloadavg()[0] / (os.cpu_count() or 1)
    lab = Lab(root, tmp_path, marker, python=binder_env.python, base_env=binder_env.env)
    states: dict[str, dict] = {}
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
                for path in NOTEBOOKS:
                    page = browser.new_page(viewport={"width": 1280, "height": 1000})
                    try:
                        shot = tmp_path / f"jupyterlab-{path.stem}.png"
                        states[path.stem] = run_notebook(page, lab, path, shot)
                    finally:
                        page.close()
                        shut_down_kernels(lab)
                scratch = write_notebook(root, "first-distributed.ipynb", FIRST_DISTRIBUTED)
                page = browser.new_page(viewport={"width": 1280, "height": 1000})
                try:
                    status = status_during_run_all(page, lab, scratch)
                    page.screenshot(path=str(tmp_path / "jupyterlab-first-distributed.png"))
                finally:
                    page.close()
                    shut_down_kernels(lab)
            finally:
                browser.close()
    finally:
        lab.stop()
        left = wait_for_no_marked_processes(MARKER, marker)
        assert not left, f"processes left after the test: {[p.info for p in left] or left}"

    load = max(1.0, load, os.getloadavg()[0] / (os.cpu_count() or 1))
    for path in NOTEBOOKS:
        state = states[path.stem]
        check_run_all(path, state, binder_env, load)
        shot = tmp_path / f"jupyterlab-{path.stem}.png"
        assert shot.stat().st_size > 10_000, f"the screenshot of {path.name} is (nearly) empty"
        assert state["widget_errors"] == 0, f"{path.name}: 'Error displaying widget' shown"
    check_getting_started(states["01-getting-started"]["page"])
    check_schedule_cell_failure(states["05-dask-collections"])
    check_status_while_computing(status)


def check_run_all(path: Path, state: dict, binder_env, load: float) -> None:
    """What a reader who presses Run All gets: every cell ran, no error but in the cells
    tagged ``raises-exception`` (and each of those really raised), no path of this
    machine (the repository, its environment, the home folder) in any output, and the
    whole run under :data:`RUN_ALL_SECONDS` on a quiet machine (more under load, where
    every cell waits for a CPU)."""
    home = os.path.expanduser("~")
    folders = (str(ROOT), str(binder_env.repo), str(binder_env.venv), home)
    for n, cell in enumerate(state["cells"]):
        tagged = "raises-exception" in cell["tags"]
        where = f"{path.name} code cell {n} ({cell['source'][:60]!r})"
        assert cell["count"] is not None, f"{where} did not run"
        if tagged:
            assert cell["errors"], f"{where} is tagged raises-exception but did not raise"
        else:
            assert not cell["errors"], f"{where} raised: {cell['errors']}"
        for folder in folders:
            assert folder + os.sep not in cell["text"], f"{where} shows {folder}"
    assert state["seconds"] < RUN_ALL_SECONDS * load, (
        f"{path.name}: Run All took {state['seconds']:.0f} s, over {RUN_ALL_SECONDS:.0f} s"
        + (f" x {load:.1f} (the load average per CPU)" if load > 1 else "")
    )


def check_getting_started(page: dict) -> None:
    # The progress cell's run: 40 downloads, 40 parses and a sum, all done and green.
    labels = sorted(bar["label"] for bar in page["bars"])
    assert labels == ["download 40 / 40", "parse 40 / 40", "sum 1 / 1"], page
    assert all(bar["width"] == "100%" for bar in page["bars"]), page
    assert all("progress-bar-success" in bar["classes"] for bar in page["bars"]), page
    assert any("81 / 81 tasks" in h and "done" in h for h in page["headers"]), page
    # The picker: one radio button per backend, threads selected after %schedule threads.
    radios = {r["text"].strip(): r["checked"] for r in page["radios"] if r["text"].strip()}
    assert {"sync", "threads", "processes", "distributed", "(other)"} <= set(radios), page
    assert [name for name, checked in radios.items() if checked] == ["threads"], page
    # Its default ("auto") values show as selected, not as a blank dropdown or toggle.
    workers = [d["selected"] for d in page["dropdowns"] if d["label"] == "workers"]
    assert len(workers) == 1 and workers[0].replace("\xa0", " ").startswith("auto ("), page
    toggles = {t["label"]: t["active"] for t in page["toggles"]}
    assert toggles.get("progress") == ["auto"] and toggles.get("rerun") == ["auto"], page


def check_schedule_cell_failure(state: dict) -> None:
    """The ``%%schedule processes`` failure starts at the user's line, not at our frames."""
    cells = [c for c in state["cells"] if c["source"].startswith("%%schedule processes")]
    failed = [c for c in cells if c["errors"]]
    assert failed, state
    text = ANSI.sub("", failed[0]["errors"][0]["traceback"])
    frames = [line for line in text.splitlines() if line.startswith(("Cell In[", "File "))]
    assert frames and frames[0].startswith("Cell In["), text
    assert "run_cell_magic" not in text and "notebook_sched/" not in text, text
