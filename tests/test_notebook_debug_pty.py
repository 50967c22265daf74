"""``%debug`` itself, in a terminal IPython session on a pty (driven with pexpect).

A task fails in a worker process; the failure hook reruns it in the session, so the
post-mortem debugger opens in the task function's frame and can print its locals.
``%sched_rerun`` then reruns the graph on ``sync`` and ``%debug`` lands there too;
with ``%pdb on`` the debugger opens in the task by itself.
"""

from __future__ import annotations

import os
import sys

import pytest

pexpect = pytest.importorskip("pexpect")

PROMPT = r"In \[(\d+)\]: "


@pytest.fixture
def ipython():
    env = dict(os.environ, TERM="dumb", PYTHONUNBUFFERED="1")
    env.pop("PYTEST_CURRENT_TEST", None)
    child = pexpect.spawn(
        sys.executable,
        [
            "-m",
            "IPython",
            "--simple-prompt",
            "--no-banner",
            "--colors=nocolor",
            "--HistoryManager.enabled=False",
            "--no-confirm-exit",
        ],
        env=env,
        encoding="utf-8",
        timeout=60,
        dimensions=(50, 200),
    )
    try:
        child.expect(PROMPT)
        yield child
    finally:
        if child.isalive():
            child.sendline("exit")
            child.expect(pexpect.EOF, timeout=20)
        child.close(force=True)


def run(child, line: str) -> str:
    """Send ``line`` and return what IPython printed before its next prompt."""
    child.sendline(line)
    child.expect(PROMPT)
    return child.before


def debugger(child, command: str) -> str:
    child.sendline(command)
    child.expect(r"ipdb> ")
    return child.before


@pytest.mark.timeout(90)
def test_debug_lands_in_the_task_frame_after_a_process_failure(ipython):
    run(
        ipython,
        "import notebook_sched as ns; get_ipython().run_line_magic('load_ext', 'notebook_sched')",
    )
    # One line per function keeps the terminal's continuation prompts out of the way.
    run(ipython, "def ratio(total, count): scale = 10; return scale * total / count")
    shown = run(
        ipython,
        'ns.get({"total": 5, "count": 0, "ratio-1": (ratio, "total", "count")}, "ratio-1",'
        ' scheduler="processes")',
    )
    assert "task 'ratio-1' failed on the 'processes' scheduler" in shown
    assert "ZeroDivisionError" in shown

    ipython.sendline("%debug")
    ipython.expect(r"ipdb> ")
    where = ipython.before
    assert "ratio()" in where, where  # the current frame is the task function
    assert "scale * total / count" in where
    values = debugger(ipython, "p (total, count, scale)")
    assert "(5, 0, 10)" in values
    ipython.sendline("q")
    ipython.expect(PROMPT)

    # The same through %sched_rerun: the graph reruns on sync, in this process.
    shown = run(ipython, "%sched_rerun")
    assert "ZeroDivisionError" in shown
    ipython.sendline("%debug")
    ipython.expect(r"ipdb> ")
    assert "ratio()" in ipython.before
    assert "'sync'" in debugger(ipython, "p ns.last_failure().backend")
    ipython.sendline("q")
    ipython.expect(PROMPT)

    # %pdb on: the debugger opens by itself, in the task, after a processes failure.
    run(ipython, "%pdb on")
    ipython.sendline(
        'ns.get({"total": 7, "count": 0, "ratio-2": (ratio, "total", "count")}, "ratio-2",'
        ' scheduler="processes")'
    )
    ipython.expect(r"ipdb> ")
    assert "task 'ratio-2' failed" in ipython.before and "ratio()" in ipython.before
    assert "(7, 0)" in debugger(ipython, "p (total, count)")
    ipython.sendline("q")
    ipython.expect(PROMPT)
