"""Local reruns of tasks that failed in other processes, and failure rendering.

No IPython here (the kernel and pty tests cover it): the policy is forced with
``rerun="always"`` / ``"never"``, and ``"auto"`` is checked to stay off in a script.
"""

from __future__ import annotations

import os
import traceback

import pytest

import notebook_sched as ns
from notebook_sched import debug
from notebook_sched.debug.report import format_failure
from notebook_sched.failure import RemoteTraceback, RerunOutcome, TaskFailure
from notebook_sched.tracebacks import short_library_paths

from .helpers import remote_backends

REMOTE = list(remote_backends())


def ratio(total, count):
    scale = 10
    return scale * total / count


def only_fails_in_a_worker(x):
    if os.environ.get("NOTEBOOK_SCHED_WORKER"):
        raise RuntimeError("worker-only failure")
    return x


def fails_differently_here(x):
    if os.environ.get("NOTEBOOK_SCHED_WORKER"):
        raise RuntimeError("in the worker")
    raise ValueError("in the caller")


def add(a, b):
    return a + b


RATIO = {"total": 5, "count": 0, "ratio-1": (ratio, "total", "count")}


def bottom_frame(exc: BaseException):
    tb = exc.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame


@pytest.mark.parametrize("backend", REMOTE)
def test_always_rerun_gives_the_task_frame_with_locals(backend, warm, no_leaks):
    with pytest.raises(ZeroDivisionError) as info:
        ns.get(RATIO, "ratio-1", scheduler=backend, rerun="always")
    frame = bottom_frame(info.value)
    assert frame.f_code is ratio.__code__
    assert frame.f_locals == {"total": 5, "count": 0, "scale": 10}
    assert isinstance(info.value.__cause__, RemoteTraceback)
    notes = "\n".join(info.value.__notes__)
    assert "'ratio-1'" in notes and "rerun here with the same inputs" in notes
    failure = ns.last_failure()
    assert failure.key == "ratio-1" and failure.backend == backend
    assert failure.extra["rerun"] is RerunOutcome.SAME_ERROR
    assert failure.extra["rerun_exception"] is info.value
    assert info.value.__notebook_sched_failure__ is failure


@pytest.mark.parametrize("backend", REMOTE)
def test_never_rerun_raises_the_worker_error(backend, warm, no_leaks):
    with pytest.raises(ZeroDivisionError) as info:
        ns.get(RATIO, "ratio-1", scheduler=backend, rerun="never")
    assert bottom_frame(info.value).f_code is not ratio.__code__
    assert "in ratio" in info.value.__cause__.text
    assert "rerun" not in ns.last_failure().extra


def test_auto_does_not_rerun_outside_ipython(warm, no_leaks):
    assert debug.ipython_shell() is None
    with pytest.raises(ZeroDivisionError) as info:
        ns.get(RATIO, "ratio-1", scheduler="processes", rerun="auto")
    assert bottom_frame(info.value).f_code is not ratio.__code__


def test_rerun_that_does_not_fail_says_so_and_raises_the_original(warm, no_leaks):
    dsk = {"x": 1, "flaky-1": (only_fails_in_a_worker, "x")}
    with pytest.raises(RuntimeError, match="worker-only failure") as info:
        ns.get(dsk, "flaky-1", scheduler="processes", rerun="always")
    notes = "\n".join(info.value.__notes__)
    assert "did NOT fail" in notes and "'flaky-1'" in notes
    assert ns.last_failure().extra["rerun"] is RerunOutcome.DID_NOT_FAIL
    assert repr(ns.last_failure().extra["rerun"]) == "'did not fail'"  # as notebooks show it


def test_rerun_with_another_error_keeps_the_original(warm, no_leaks):
    dsk = {"x": 1, "odd-1": (fails_differently_here, "x")}
    with pytest.raises(RuntimeError, match="in the worker") as info:
        ns.get(dsk, "odd-1", scheduler="processes", rerun="always")
    assert "different error (ValueError: in the caller)" in "\n".join(info.value.__notes__)
    failure = ns.last_failure()
    assert isinstance(failure.extra["rerun_exception"], ValueError)
    assert failure.extra["rerun"] is RerunOutcome.DIFFERENT_ERROR
    assert failure.extra["rerun_detail"] == "ValueError: in the caller"
    assert "local rerun: raised a different error: ValueError: in the caller" in str(
        format_failure(failure)
    )


def test_local_backends_are_never_rerun(no_leaks):
    for backend in ("sync", "threads"):
        with pytest.raises(ZeroDivisionError) as info:
            ns.get(RATIO, "ratio-1", scheduler=backend, rerun="always")
        assert bottom_frame(info.value).f_code is ratio.__code__  # live frames already
        assert "rerun" not in ns.last_failure().extra


def test_rerun_task_uses_recorded_inputs_and_nested_expressions():
    graph = {"a": 1, "b": 2, "c": (sum, [(add, "a", "b"), "b", 10])}
    failure = TaskFailure("c", ValueError(), "processes", "process-0", inputs={"a": 5, "b": 0})
    failure.graph = graph
    assert debug.rerun_task(failure) is None  # sum([5, 0, 10]) does not raise

    def boom(values):
        raise OSError(values)

    failure.graph = {"a": 1, "b": 2, "c": (boom, ["a", "b", "not-a-key"])}
    raised = debug.rerun_task(failure)
    assert isinstance(raised, OSError) and raised.args[0] == [5, 0, "not-a-key"]


def test_rerun_task_refuses_missing_graph_or_inputs():
    failure = TaskFailure("c", ValueError(), "processes", "process-0", inputs={"a": 1})
    with pytest.raises(debug.RerunUnavailable, match="was not recorded"):
        debug.rerun_task(failure)
    failure.graph = {"a": 1, "b": 2, "c": (add, "a", "b")}
    with pytest.raises(debug.RerunUnavailable, match="input 'b' of task 'c'"):
        debug.rerun_task(failure)


def test_rerun_graph_on_sync_raises_in_the_task_frame(warm, no_leaks):
    with pytest.raises(ZeroDivisionError):
        ns.get(RATIO, "ratio-1", scheduler="processes", rerun="never")
    with pytest.raises(ZeroDivisionError) as info:
        debug.rerun_graph()
    assert bottom_frame(info.value).f_code is ratio.__code__
    assert ns.last_failure().backend == "sync"
    fine = TaskFailure("a", ValueError(), "processes", "process-0", graph={"a": 1})
    fine.requested_keys = ["a"]
    assert debug.rerun_graph(fine) is None


def test_trim_remote_traceback_drops_our_frames_only():
    ours = os.path.join(debug.PACKAGE_DIR, "schedulers", "_worker.py")
    text = (
        "Traceback (most recent call last):\n"
        f'  File "{ours}", line 118, in run_batch\n'
        "    value = run_job(job, produced)\n"
        "            ^^^^^^^^^^^^^^^^^^^^^^\n"
        '  File "/home/me/analysis.py", line 3, in ratio\n'
        "    return scale * total / count\n"
        "ZeroDivisionError: division by zero\n"
    )
    trimmed = debug.trim_remote_traceback(text)
    assert "run_batch" not in trimmed and "run_job" not in trimmed
    assert '"/home/me/analysis.py", line 3, in ratio' in trimmed
    assert "    return scale * total / count" in trimmed
    assert trimmed.endswith("ZeroDivisionError: division by zero\n")


@pytest.mark.parametrize("backend", ["sync", "threads"])
def test_trimmed_traceback_keeps_the_library_frames_a_task_ran(backend, no_leaks):
    """A task that fails inside library code (json.loads) keeps those frames: they are
    the task's own, under our task runner; our frames go."""
    import json

    with pytest.raises(json.JSONDecodeError) as info:
        ns.get({"record": (json.loads, "{not json}")}, "record", scheduler=backend)
    frames = traceback.extract_tb(debug.trim_traceback(info.value.__traceback__))
    files = [f.filename.replace(os.sep, "/") for f in frames]
    assert files[-1].endswith("json/decoder.py"), files
    assert any(f.endswith("json/__init__.py") for f in files), files
    assert not any("notebook_sched/" in f for f in files), files


def test_short_library_paths_names_library_files_by_import_path():
    import json
    import sysconfig

    stdlib = os.path.dirname(json.__file__)
    text = f'File {stdlib}{os.sep}decoder.py:353, in raw_decode\n  File "/home/me/my.py"'
    short = short_library_paths(text)
    assert short.startswith(f"File json{os.sep}decoder.py:353") and "/home/me/my.py" in short
    site = sysconfig.get_paths()["purelib"]
    assert short_library_paths(f"{site}{os.sep}dask{os.sep}bag{os.sep}core.py") == (
        f"dask{os.sep}bag{os.sep}core.py"
    )


def test_render_traceback_without_ipython_names_key_and_skips_our_frames(warm, no_leaks):
    with pytest.raises(ZeroDivisionError) as info:
        ns.get(RATIO, "ratio-1", scheduler="processes", rerun="always")
    lines = "".join(debug.render_traceback(info.value))
    assert "task 'ratio-1' failed on the 'processes' scheduler" in lines
    assert "in ratio" in lines and "notebook_sched/engine.py" not in lines
    assert "notebook_sched/debug" not in lines
    full = "".join(traceback.format_exception(info.value))
    assert "notebook_sched/debug/rerun.py" in full  # the real traceback is untouched


def test_format_failure_and_html_show_inputs_and_worker_traceback(warm, no_leaks):
    with pytest.raises(ZeroDivisionError):
        ns.get(RATIO, "ratio-1", scheduler="processes", rerun="always")
    failure = ns.last_failure()
    text = debug.format_failure(failure)
    assert "task 'ratio-1' failed on the 'processes' scheduler" in text
    assert "'count': 0" in text and "local rerun: raised the same error" in text
    assert "in ratio" in text and "_worker.py" not in text
    page = debug.failure_html(failure)
    assert "ratio-1" in page and "ZeroDivisionError" in page and "<table>" in page
    blank = TaskFailure("k", ValueError("<x>"), "sync", "sync")
    assert "not brought back" in debug.format_failure(blank)
    assert "&lt;x&gt;" in debug.failure_html(blank)
