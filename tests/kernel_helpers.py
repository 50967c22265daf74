"""Drive a real IPython kernel (ipykernel) from tests, and read what it publishes.

:class:`Kernel` starts ``python -m ipykernel_launcher`` with *this* interpreter (a
kernel spec written to a temporary directory, so the venv's packages are used), and
:meth:`Kernel.execute` runs one cell and returns an :class:`Execution`: the reply and
every IOPub message whose parent is that request, each stamped with the time the test
received it.  Widget traffic is decoded by :func:`widget_states`.

Every wait has a timeout; :meth:`Kernel.shutdown` stops the kernel process.

The setup the kernel test modules share: :func:`running_kernel` (a kernel that ran a
setup cell, shut down however the block ends), :func:`config_reset` (our config put
back to :data:`RESET` around a test) and :data:`LAST_TASK_FRAME` (a cell prefix that
walks ``sys.last_traceback`` to its bottom frame, the one ``%debug`` opens) with
:data:`FAILING_TASK_CELL` (a cell whose task fails, to debug into).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager

START_TIMEOUT = 60.0

# The settings a kernel test starts from and leaves behind (see config_reset).
RESET = "ns.config.set(scheduler='threads', num_workers=None, progress=None, rerun='auto')"

# Run before code that reads ``tb``: the bottom of the last traceback, the failed task's
# frame when the debugger lands in the task.
LAST_TASK_FRAME = """\
import sys
tb = sys.last_traceback
while tb.tb_next is not None:
    tb = tb.tb_next
"""

# A cell body whose task 'scale-7' fails (ZeroDivisionError in scale_rows, with the
# locals rows=[1, 0, 3], factor=0, kept=[1, 3]); put a %%schedule line before it.
FAILING_TASK_CELL = """\
def scale_rows(rows, factor):
    kept = [r for r in rows if r]
    return len(kept) / factor
dsk = {'rows': [1, 0, 3], 'factor': 0, 'scale-7': (scale_rows, 'rows', 'factor')}
ns.get(dsk, 'scale-7')"""


@dataclass
class Execution:
    msg_id: str
    reply: dict
    messages: list[dict] = field(default_factory=list)  # iopub messages of this request

    @property
    def status(self) -> str:
        return self.reply["content"]["status"]

    def of_type(self, *types: str) -> list[dict]:
        return [m for m in self.messages if m["msg_type"] in types]

    @property
    def stdout(self) -> str:
        return "".join(
            m["content"]["text"] for m in self.of_type("stream") if m["content"]["name"] == "stdout"
        )

    @property
    def stderr(self) -> str:
        return "".join(
            m["content"]["text"] for m in self.of_type("stream") if m["content"]["name"] == "stderr"
        )

    @property
    def error(self) -> dict | None:
        errors = self.of_type("error")
        if errors:
            return errors[0]["content"]
        if self.status == "error":  # e.g. UsageError: printed to stderr, named in the reply
            return {**self.reply["content"], "traceback": [self.stderr]}
        return None

    @property
    def result(self) -> dict | None:
        results = self.of_type("execute_result")
        return results[0]["content"]["data"] if results else None


class Kernel:
    """One running kernel and a blocking client talking to it."""

    def __init__(self, env: dict | None = None, cwd: str | None = None):
        self._spec_dir = tempfile.TemporaryDirectory(prefix="notebook_sched-kernelspec-")
        spec_path = os.path.join(self._spec_dir.name, "nbsched-test")
        os.makedirs(spec_path)
        with open(os.path.join(spec_path, "kernel.json"), "w") as f:
            json.dump(
                {
                    "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                    "display_name": "notebook_sched test",
                    "language": "python",
                },
                f,
            )
        specs = KernelSpecManager(kernel_dirs=[self._spec_dir.name])
        self.manager = KernelManager(kernel_name="nbsched-test", kernel_spec_manager=specs)
        kernel_env = dict(os.environ)
        kernel_env.pop("PYTEST_CURRENT_TEST", None)
        kernel_env.update(env or {})
        self.manager.start_kernel(env=kernel_env, cwd=cwd or os.getcwd())
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=START_TIMEOUT)
        self.pending: list[tuple[float, dict]] = []  # iopub messages read but not yet claimed

    # -- running cells ---------------------------------------------------------------
    def send(self, code: str) -> str:
        """Send an execute request; returns its msg_id (collect with :meth:`collect`)."""
        return self.client.execute(code, allow_stdin=False)

    def collect(self, msg_id: str, timeout: float = 60.0) -> Execution:
        """Wait for the reply and the final idle status of request ``msg_id``."""
        deadline = time.monotonic() + timeout
        reply = self.client.get_shell_msg(timeout=timeout)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = self.client.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
        messages = []
        while True:
            msg = self._next_iopub(msg_id, deadline)
            messages.append(msg)
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                return Execution(msg_id, reply, messages)

    def execute(self, code: str, timeout: float = 60.0) -> Execution:
        return self.collect(self.send(code), timeout)

    def ok(self, code: str, timeout: float = 60.0) -> Execution:
        """Execute ``code`` and fail the test with the kernel's traceback if it errors."""
        ex = self.execute(code, timeout)
        if ex.status != "ok":
            raise AssertionError(f"cell failed:\n{code}\n" + "\n".join(ex.error["traceback"]))
        return ex

    def _next_iopub(self, msg_id: str, deadline: float) -> dict:
        for i, (_, msg) in enumerate(self.pending):
            if msg["parent_header"].get("msg_id") == msg_id:
                del self.pending[i]
                return msg
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no idle status for request {msg_id} in time")
            try:
                msg = self.client.get_iopub_msg(timeout=min(remaining, 1.0))
            except queue.Empty:
                continue
            msg["received"] = time.time()
            if msg["parent_header"].get("msg_id") == msg_id:
                return msg
            self.pending.append((msg["received"], msg))

    def drain(self, seconds: float) -> list[dict]:
        """Read IOPub for ``seconds`` and return everything (including pending)."""
        out = [msg for _, msg in self.pending]
        self.pending = []
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                msg = self.client.get_iopub_msg(timeout=remaining)
            except queue.Empty:
                break
            msg["received"] = time.time()
            out.append(msg)
        return out

    def comm_msg(self, comm_id: str, state: dict) -> None:
        """Send a widget state update as a front end does (a user clicking)."""
        content = {
            "comm_id": comm_id,
            "data": {"method": "update", "state": state, "buffer_paths": []},
        }
        msg = self.client.session.msg("comm_msg", content)
        self.client.shell_channel.send(msg)

    def shutdown(self) -> None:
        try:
            self.client.stop_channels()
        finally:
            self.manager.shutdown_kernel(now=True)
            self._spec_dir.cleanup()


def widget_states(messages: list[dict]) -> dict[str, list[tuple[dict, dict]]]:
    """``{comm_id: [(state, message), ...]}`` from comm_open and comm_msg updates."""
    states: dict[str, list[tuple[dict, dict]]] = {}
    for msg in messages:
        if msg["msg_type"] == "comm_open":
            content = msg["content"]
            if content.get("target_name") == "jupyter.widget":
                states.setdefault(content["comm_id"], []).append((content["data"]["state"], msg))
        elif msg["msg_type"] == "comm_msg":
            data = msg["content"]["data"]
            if data.get("method") in ("update", "echo_update"):
                states.setdefault(msg["content"]["comm_id"], []).append((data["state"], msg))
    return states


def models(messages: list[dict], model_name: str) -> dict[str, list[tuple[dict, dict]]]:
    """The states of widgets whose model is ``model_name`` (e.g. ``IntProgressModel``)."""
    states = widget_states(messages)
    return {
        comm_id: history
        for comm_id, history in states.items()
        if history and history[0][0].get("_model_name") == model_name
    }


def sent_at(msg: dict) -> float:
    """When the kernel sent ``msg`` (its header date), as time.time() seconds."""
    date = msg["header"]["date"]
    if isinstance(date, str):
        from datetime import datetime

        date = datetime.fromisoformat(date.replace("Z", "+00:00"))
    return date.timestamp()


@contextlib.contextmanager
def running_kernel(setup: str = "", **kwargs) -> Iterator[Kernel]:
    """A started :class:`Kernel` (``kwargs`` go to it) that ran ``setup`` without error;
    shut down when the block ends, however it ends."""
    kernel = Kernel(**kwargs)
    try:
        if setup:
            kernel.ok(setup)
        yield kernel
    finally:
        kernel.shutdown()


@contextlib.contextmanager
def config_reset(kernel: Kernel) -> Iterator[Kernel]:
    """Run :data:`RESET` in ``kernel`` before and after the block (a test's settings do
    not reach the next test; needs ``ns`` imported in the kernel)."""
    kernel.ok(RESET)
    yield kernel
    kernel.ok(RESET)
