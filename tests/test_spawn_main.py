"""A program fed to ``python -`` (a heredoc, a pipe) computes on worker processes.

Its ``__main__.__file__`` is ``"<stdin>"``, which multiprocessing's spawn takes for a
script to re-run in each child: before ``notebook_sched/_spawn.py`` every worker died
at birth (``FileNotFoundError: .../<stdin>``) and the run failed with "worker died"
about a task that never ran.  Each case runs in its own interpreter, with a marker in
its environment so that no process it started may be left.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import textwrap

import pytest

from .helpers import wait_for_no_marked_processes

MARKER = "NOTEBOOK_SCHED_SPAWN_MAIN_TEST"
PROGRAM = textwrap.dedent(
    """
    import operator
    import notebook_sched as ns

    def double(x):  # defined in <stdin>: pickled by value, found by no import
        return 2 * x

    graph = {("a", i): (double, i) for i in range(8)}
    graph["total"] = (sum, list(graph))
    graph["plus"] = (operator.add, "total", 1)
    print(ns.get(graph, "plus", scheduler=SCHEDULER, num_workers=2))
    import __main__
    print(__main__.__file__)
    """
)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("scheduler", ["processes", "auto", "distributed"])
def test_a_program_read_from_stdin_computes_on_worker_processes(scheduler, tmp_path):
    marker = secrets.token_hex(8)
    env = {**os.environ, MARKER: marker}
    env.pop("PYTEST_CURRENT_TEST", None)
    program = PROGRAM.replace("SCHEDULER", repr(scheduler))
    try:
        done = subprocess.run(
            [sys.executable, "-"],
            input=program,
            cwd=tmp_path,  # where multiprocessing would look for "<stdin>"
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
        )
    finally:
        left = wait_for_no_marked_processes(MARKER, marker)
        for proc in left:
            proc.kill()
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == [str(2 * sum(range(8)) + 1), "<stdin>"], done.stdout
    assert "FileNotFoundError" not in done.stderr, done.stderr[-3000:]
    assert not left, f"processes left: {left}"


def test_a_real_script_is_still_what_the_children_re_run(tmp_path):
    """The main guard keeps working: a script without it gets MainGuardError's fix."""
    script = tmp_path / "no_guard.py"
    script.write_text(PROGRAM.replace("SCHEDULER", "'processes'"))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=90, cwd=tmp_path
    )
    assert done.returncode != 0
    assert "MainGuardError" in done.stderr and "__main__" in done.stderr, done.stderr[-2000:]
