"""The widgets render in a real front end: JupyterLab in headless Chromium.

The kernel tests prove the kernel sends the right widget messages; this test proves a
browser turns them into a progress bar and a picker. It starts JupyterLab on loopback
with a random token, opens ``01-getting-started`` (a copy without saved outputs or
widget state, so nothing on the page can come from a previous run), runs every cell,
and checks the rendered DOM: a progress bar that reaches 100% and turns green, and the
picker with its radio buttons, the ``threads`` one selected after the notebook's
``%schedule`` cells. A screenshot is saved in the test's temporary folder.

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
import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "01-getting-started.ipynb"
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
RUN_TIMEOUT = 60.0

# The test itself takes well under a minute; installing chromium on a new machine may
# take a few more, within the apt time limits below.
pytestmark = pytest.mark.timeout(600)
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


def marked_processes(marker: str) -> list[psutil.Process]:
    """Processes whose environment carries ``MARKER=marker`` (survives reparenting)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and proc.environ().get(MARKER) == marker:
                if proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return found


def wait_for_no_marked_processes(marker: str, grace: float = 10.0) -> list[psutil.Process]:
    deadline = time.monotonic() + grace
    while True:
        left = marked_processes(marker)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


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

    def __init__(self, root_dir: Path, work: Path, marker: str):
        self.port = free_port()
        self.token = secrets.token_hex(24)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = work / "jupyterlab.log"
        env = {
            **os.environ,
            MARKER: marker,
            "JUPYTER_PREFER_ENV_PATH": "1",  # the venv's kernelspec and lab extensions
            "JUPYTER_RUNTIME_DIR": str(work / "runtime"),
            "JUPYTER_CONFIG_DIR": str(work / "config"),
            "JUPYTERLAB_SETTINGS_DIR": str(work / "settings"),
            "JUPYTERLAB_WORKSPACES_DIR": str(work / "workspaces"),
        }
        command = [
            sys.executable,
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

# Every code cell has run (an execution count, no '*') and the kernel is idle again.
ALL_CELLS_RAN = """() => {
    const panel = window.jupyterapp.shell.currentWidget;
    const kernel = panel.sessionContext.session.kernel;
    const cells = panel.content.widgets.filter(c => c.model.type === 'code');
    return kernel.status === 'idle'
        && cells.every(c => c.model.executionCount !== null);
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
    errors: [...document.querySelectorAll('.jp-OutputArea-output[data-mime-type='
        + '"application/vnd.jupyter.stderr"]')].map(e => e.textContent.slice(0, 300)),
})"""


@pytest.fixture
def chromium() -> str:
    return ensure_chromium()


def test_progress_bar_and_picker_render_in_jupyterlab(chromium, tmp_path):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    marker = secrets.token_hex(8)
    root = tmp_path / "notebooks"
    root.mkdir()
    clean_copy(NOTEBOOK, root)
    lab = Lab(root, tmp_path, marker)
    screenshot = tmp_path / "jupyterlab-01-getting-started.png"
    state: dict = {}
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
                page = browser.new_page(viewport={"width": 1280, "height": 1000})
                page.goto(
                    f"{lab.url}/lab/tree/{NOTEBOOK.name}?token={lab.token}",
                    wait_until="domcontentloaded",
                )
                page.wait_for_function(KERNEL_IDLE, timeout=SERVER_TIMEOUT * 1000)
                page.evaluate(RUN_ALL)
                try:
                    page.wait_for_function(ALL_CELLS_RAN, timeout=RUN_TIMEOUT * 1000)
                    try:  # the final redraw may trail the end of the cell a little
                        page.wait_for_function(PROGRESS_DONE, timeout=10_000)
                    except PlaywrightTimeout:
                        pass  # the asserts below show what the page has
                finally:
                    state = page.evaluate(PAGE_STATE)
                    bar = page.locator(".widget-hprogress").first
                    if bar.count():
                        bar.scroll_into_view_if_needed()
                    page.screenshot(path=str(screenshot))
            finally:
                browser.close()
    finally:
        lab.stop()
        left = wait_for_no_marked_processes(marker)
        assert not left, f"processes left after the test: {[p.info for p in left] or left}"

    assert screenshot.stat().st_size > 10_000, "the screenshot is (nearly) empty"
    # The progress cell's run: 40 downloads, 40 parses and a sum, all done and green.
    labels = sorted(bar["label"] for bar in state["bars"])
    assert labels == ["download 40 / 40", "parse 40 / 40", "sum 1 / 1"], state
    assert all(bar["width"] == "100%" for bar in state["bars"]), state
    assert all("progress-bar-success" in bar["classes"] for bar in state["bars"]), state
    assert any("81 / 81 tasks" in h and "done" in h for h in state["headers"]), state
    # The picker: one radio button per backend, threads selected after %schedule threads.
    radios = {r["text"].split()[0]: r["checked"] for r in state["radios"] if r["text"].strip()}
    assert {"sync", "threads", "processes", "distributed"} <= set(radios), state
    assert [name for name, checked in radios.items() if checked] == ["threads"], state
