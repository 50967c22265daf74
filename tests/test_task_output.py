"""The capture of what tasks print in worker processes (``notebook_sched/task_output.py``),
tested as plain objects: no process, no kernel (those are in test_jobs_kernel.py)."""

from __future__ import annotations

import io
import sys
import threading

import pytest

from notebook_sched import task_output
from notebook_sched.task_output import Capture, Output, ThreadCapture

pytestmark = pytest.mark.timeout(30)


def test_capture_keeps_the_text_and_hands_it_over_once():
    original = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    stream = Capture(original)
    print("one", file=stream)
    stream.write("two")
    assert stream.take() == "one\ntwo" and stream.take() == ""
    assert stream.encoding == "utf-8" and stream.buffer is original.buffer
    with pytest.raises(TypeError, match="must be str"):
        stream.write(b"bytes")


def test_thread_capture_keeps_each_registered_thread_apart():
    original = io.StringIO()
    stream = ThreadCapture(original)
    taken = {}

    def task(name):
        stream.register()
        stream.write(f"from {name}\n")
        taken[name] = stream.take()

    threads = [threading.Thread(target=task, args=(n,)) for n in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    stream.write("not a task\n")  # an unregistered thread writes through
    assert taken == {"a": "from a\n", "b": "from b\n"}
    assert original.getvalue() == "not a task\n" and stream.take() == ""


def test_pending_and_write_carry_stdout_and_stderr_separately(monkeypatch):
    monkeypatch.setattr(sys, "stdout", Capture(io.StringIO()))
    monkeypatch.setattr(sys, "stderr", Capture(io.StringIO()))
    assert task_output.pending(3) is None
    print("out")
    print("err", file=sys.stderr)
    message = task_output.pending(3)
    assert message == Output(3, "out\n", "err\n")
    target_out, target_err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", target_out)
    monkeypatch.setattr(sys, "stderr", target_err)
    task_output.write(message)
    assert (target_out.getvalue(), target_err.getvalue()) == ("out\n", "err\n")
