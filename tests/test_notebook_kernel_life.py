"""The kernel's life as a front end sees it, in a real kernel (issue 20, items 2 and 5).

* **The status during the first distributed compute.**  JupyterLab 4.4+ asks the
  kernel for a subshell (``create_subshell_request``, a control request) when the
  first comm of a target appears, and its status bar shows the ``status`` of that
  request's reply: "Idle" while the cell still runs.  :class:`FrontEnd` plays that
  part of JupyterLab: it reads IOPub and makes the same request for each comm target
  it sees for the first time.  After ``%load_ext notebook_sched``, the first
  ``distributed`` compute of a kernel (it starts the cluster, and its progress bar is
  the first bar of the kernel) must publish no status but its own cell's.
* **Live widgets at shutdown.**  A progress bar and a cluster view that are live when
  the kernel is asked to shut down or restart are left saying so ("stopped: kernel
  restarted"), not frozen at "running" with a time left.  The restart is played as
  jupyter_server plays it (an interrupt, then the shutdown request), and also as a
  bare shutdown request, which reaches the kernel while the cell still computes.
"""

from __future__ import annotations

import os
import queue
import time

import pytest

from .helpers import wait_for_no_marked_processes
from .kernel_helpers import Kernel, widget_states

pytestmark = pytest.mark.timeout(120)

MARKER = "NOTEBOOK_SCHED_BROWSER_TEST"  # the leak marker of the notebook tests
SETUP = "import notebook_sched as ns, time\n%load_ext notebook_sched"


class FrontEnd:
    """Reads a kernel's IOPub as JupyterLab does the part that matters here: the first
    comm of each target makes it send a ``create_subshell_request``."""

    def __init__(self, kernel: Kernel):
        self.kernel = kernel
        self.targets: set[str] = set()
        self.requests: dict[str, str] = {}  # msg_id of our create_subshell_request -> target
        self.answered: set[str] = set()  # the requests whose idle status came

    def read(self, seconds: float) -> list[dict]:
        out: list[dict] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = self.kernel.client.get_iopub_msg(timeout=min(left, 0.2))
            except queue.Empty:
                continue
            out.append(msg)
            if is_idle(msg):
                self.answered.add(msg["parent_header"].get("msg_id"))
            if msg["msg_type"] == "comm_open":
                target = msg["content"]["target_name"]
                if target not in self.targets:
                    self.targets.add(target)
                    request = self.kernel.client.session.msg("create_subshell_request", {})
                    self.kernel.client.control_channel.send(request)
                    self.requests[request["header"]["msg_id"]] = target
        return out

    def run(self, code: str, timeout: float = 60.0) -> list[dict]:
        """Execute ``code`` (a request whose header has a ``subshell_id``, as
        JupyterLab's do); the IOPub messages up to its idle status, and those of the
        subshell requests it caused, whose replies are awaited."""
        client = self.kernel.client
        request = client.session.msg(
            "execute_request",
            {"code": code, "silent": False, "store_history": True, "allow_stdin": False},
        )
        request["header"]["subshell_id"] = None
        client.shell_channel.send(request)
        msg_id = request["header"]["msg_id"]
        messages: list[dict] = []
        deadline = time.monotonic() + timeout
        while not any(is_idle(m, msg_id) for m in messages):
            assert time.monotonic() < deadline, f"no idle status for {code!r}"
            messages += self.read(0.2)
        while set(self.requests) - self.answered and time.monotonic() < deadline:
            messages += self.read(0.2)
        assert set(self.requests) <= self.answered, "the kernel did not answer a subshell request"
        reply = self.kernel.client.get_shell_msg(timeout=10)
        assert reply["content"]["status"] == "ok", reply["content"]
        return messages


def is_idle(msg: dict, msg_id: str | None = None) -> bool:
    return (
        msg["msg_type"] == "status"
        and msg["content"]["execution_state"] == "idle"
        and (msg_id is None or msg["parent_header"].get("msg_id") == msg_id)
    )


@pytest.fixture
def kernel():
    marker = os.urandom(8).hex()
    kernel = Kernel(env={MARKER: marker})
    try:
        yield kernel
    finally:
        kernel.shutdown()
        left = wait_for_no_marked_processes(MARKER, marker)
        for proc in left:
            proc.kill()
        assert not left, f"processes left after the kernel: {left}"


def test_the_first_distributed_compute_publishes_only_its_own_status(kernel):
    front = FrontEnd(kernel)
    setup = front.run(SETUP)
    assert "jupyter.widget" in front.targets  # the widget channel opened with the extension
    # ... and the setup cell waited for the subshell: its status came before the cell's
    # idle, not during the next cell (which Run All has queued already)
    ends = [m["parent_header"].get("msg_type") for m in setup if is_idle(m)]
    assert ends == ["create_subshell_request", "execute_request"], ends
    asked_before = len(front.requests)
    messages = front.run(
        "def slow(x):\n"
        "    time.sleep(0.3)\n"
        "    return x\n"
        "ns.get({f'k{i}': (slow, i) for i in range(8)}, [f'k{i}' for i in range(8)],"
        " scheduler='distributed', num_workers=2)"
    )
    cell = next(m for m in messages if m["msg_type"] == "execute_input")["parent_header"]
    bars = [
        m
        for m in messages
        if m["msg_type"] == "comm_open"
        and m["content"]["data"]["state"].get("_model_name") == "IntProgressModel"
    ]
    assert bars, "no progress bar: the scenario needs the kernel's first bar in this compute"
    start = next(i for i, m in enumerate(messages) if m["parent_header"] == cell)
    end = next(i for i, m in enumerate(messages) if is_idle(m, cell["msg_id"]))
    foreign = [
        (m["content"]["execution_state"], m["parent_header"].get("msg_type"))
        for m in messages[start:end]
        if m["msg_type"] == "status" and m["parent_header"].get("msg_id") != cell["msg_id"]
    ]
    assert foreign == [], f"status messages a front end takes for the kernel's: {foreign}"
    assert len(front.requests) == asked_before  # no new comm target mid-compute


LIVE_VIEWS = (
    "from notebook_sched import Client, LocalCluster\n"
    "cluster = LocalCluster(n_workers=1)\n"
    "client = Client(cluster)\n"
    "cluster"
)
LONG_RUN = (
    "def slow(x):\n"
    "    time.sleep(0.2)\n"
    "    return x\n"
    "with ns.progress(delay=0):\n"
    "    ns.get({f'slow-{i}': (slow, i) for i in range(200)}, [f'slow-{i}' for i in range(200)],"
    " scheduler='threads', num_workers=2)"
)


def last_values(messages: list[dict], model: str, trait: str) -> dict[str, str]:
    """``{comm_id: last value of trait}`` of the widgets whose model is ``model``."""
    states = widget_states(messages)
    out = {}
    for comm_id, history in states.items():
        if history[0][0].get("_model_name") == model:
            values = [state[trait] for state, _ in history if trait in state]
            if values:
                out[comm_id] = values[-1]
    return out


@pytest.mark.parametrize("interrupt_first", [True, False], ids=["restart", "shutdown-request"])
def test_live_widgets_say_stopped_when_the_kernel_goes(kernel, interrupt_first):
    kernel.ok(SETUP)
    seen = kernel.ok(LIVE_VIEWS, timeout=60).messages
    msg_id = kernel.send(LONG_RUN)
    deadline = time.monotonic() + 30
    while not any(
        v.startswith("slow ") and int(v.split()[1]) >= 4
        for v in last_values(seen, "IntProgressModel", "description").values()
    ):
        assert time.monotonic() < deadline, "the progress bar did not show"
        seen += kernel.drain(0.2)
    if interrupt_first:  # what jupyter_server does to restart a kernel
        kernel.manager.interrupt_kernel()
    kernel.client.shutdown(restart=True)
    seen += kernel.drain(3.0)
    handled = [m for m in seen if m["parent_header"].get("msg_type") == "shutdown_request"]
    assert handled, "the kernel did not take the shutdown request"
    headers = [
        v
        for v in last_values(seen, "HTMLModel", "value").values()
        if "tasks" in v and "notebook_sched" in v
    ]
    assert len(headers) == 1, headers
    header = headers[0]
    assert "left" not in header, header  # no estimate for a run that will not finish
    assert "stopped: kernel restarted" in header or "interrupted" in header, header
    if not interrupt_first:
        assert "stopped: kernel restarted" in header, header
    styles = last_values(seen, "IntProgressModel", "bar_style")
    assert styles and "" not in styles.values(), styles  # no row left blue ("running")
    views = [v for v in last_values(seen, "HTMLModel", "value").values() if "LocalCluster" in v]
    assert len(views) == 1 and "stopped: kernel restarted" in views[0], views
    assert "live" not in views[0]
    assert msg_id  # the cell never finished; the fixture kills the kernel
