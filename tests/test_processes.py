"""Process backend specifics: pool reuse, dead workers, pickling errors, the main guard."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import notebook_sched as ns
from notebook_sched.schedulers import _pool
from notebook_sched.schedulers.processes import TaskPicklingError, WorkerDiedError

pytestmark = pytest.mark.usefixtures("no_leaks")


def inc(x):
    return x + 1


def pid_of(_):
    return os.getpid()


def die_by_signal(x):
    os.kill(os.getpid(), signal.SIGKILL)
    return x


def exit_hard(x):
    os._exit(3)


def segfault(x):
    import ctypes

    return ctypes.string_at(0)  # reads address 0: SIGSEGV


def slow(x, seconds=0.5):
    time.sleep(seconds)
    return x


def fail_fast(x):
    raise ValueError(f"bad input {x}")


def workers_pids():
    pool = _pool._pool
    return {w.process.pid for w in pool.workers}


def test_pool_is_reused_across_computes():
    ns.get({"a": (inc, 1)}, "a", scheduler="processes", num_workers=2)
    before = workers_pids()
    start = time.perf_counter()
    for _ in range(20):
        ns.get({"a": (inc, 1)}, "a", scheduler="processes", num_workers=2)
    per_call = (time.perf_counter() - start) / 20
    assert workers_pids() == before
    assert per_call < 0.1  # no process start per compute (a start costs ~100 ms)


def test_tasks_really_run_in_other_processes():
    dsk = {f"p{i}": (pid_of, i) for i in range(8)}
    pids = set(ns.get(dsk, list(dsk), scheduler="processes", num_workers=2))
    assert os.getpid() not in pids
    assert pids <= workers_pids()


def test_lambdas_and_closures_travel():
    offset = 10
    dsk = {"a": 1, "b": (lambda x: x + offset, "a")}
    assert ns.get(dsk, "b", scheduler="processes") == 11


@pytest.mark.parametrize(
    ("task", "code_text"),
    [(die_by_signal, "-9 (SIGKILL"), (exit_hard, "3 ("), (segfault, "-11 (SIGSEGV")],
)
def test_dead_worker_names_task_and_exit_code_quickly(task, code_text):
    ns.get({"warm": (inc, 1)}, "warm", scheduler="processes", num_workers=2)
    dsk = {"x": 1, "victim": (task, "x"), "other": (slow, "x", 5), "out": (max, "victim", "other")}
    start = time.monotonic()
    with pytest.raises(WorkerDiedError) as info:
        ns.get(dsk, "out", scheduler="processes", num_workers=2)
    assert time.monotonic() - start < 1.0
    message = str(info.value)
    assert "'victim'" in message and f"exit code {code_text}" in message
    assert ns.last_failure().key == "victim"
    # The next compute works, on a fresh pool.
    assert ns.get({"a": (inc, 1)}, "a", scheduler="processes", num_workers=2) == 2


def test_unpicklable_argument_names_the_key():
    lock = threading.Lock()
    with pytest.raises(TaskPicklingError) as info:
        ns.get({"locked": (id, lock)}, "locked", scheduler="processes")
    assert "'locked'" in str(info.value) and "scheduler='threads'" in str(info.value)


def make_lock(_):
    return threading.Lock()


def test_unpicklable_result_names_the_key():
    with pytest.raises(TaskPicklingError) as info:
        ns.get({"x": 1, "lock": (make_lock, "x")}, "lock", scheduler="processes")
    assert "'lock'" in str(info.value)
    assert ns.get({"a": (inc, 1)}, "a", scheduler="processes") == 2


def test_error_is_reported_when_the_task_fails_not_after_its_batch():
    # One worker: 'bad' and the slow tasks after it travel in the same batches, so an
    # error held back until the end of its batch would arrive after 3 s or more.
    dsk = {"bad": (fail_fast, 1)}
    dsk.update({f"s{i}": (slow, i, 3) for i in range(3)})
    dsk["out"] = (sum, ["bad"] + [f"s{i}" for i in range(3)])
    start = time.monotonic()
    with pytest.raises(ValueError, match="bad input 1"):
        ns.get(dsk, "out", scheduler="processes", num_workers=1)
    assert time.monotonic() - start < 1.5
    # the worker busy with the abandoned run was replaced; nothing keeps computing
    assert ns.get({"a": (inc, 1)}, "a", scheduler="processes", num_workers=1) == 2


def test_custom_exception_that_cannot_be_unpickled():
    dsk = {"x": (raise_custom, 1)}
    with pytest.raises(Exception) as info:
        ns.get(dsk, "x", scheduler="processes")
    assert "CustomError" in str(info.value) or type(info.value).__name__ == "CustomError"


class CustomError(Exception):
    def __init__(self, a, b):  # unpickling calls CustomError(msg): fails
        super().__init__(f"{a}/{b}")


def raise_custom(x):
    raise CustomError(x, 2)


def test_script_without_main_guard_gets_one_clear_error(tmp_path):
    script = tmp_path / "myscript.py"
    script.write_text(
        textwrap.dedent("""
        import operator
        import notebook_sched as ns
        print(ns.get({"a": (operator.add, 1, 2)}, "a", scheduler="processes"))
    """)
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert result.returncode != 0
    assert 'if __name__ == "__main__":' in result.stderr
    assert result.stderr.count("Traceback") == 1, result.stderr
    assert "MainGuardError" in result.stderr


def test_script_with_main_guard_works(tmp_path):
    script = tmp_path / "goodscript.py"
    script.write_text(
        textwrap.dedent("""
        import operator
        import notebook_sched as ns
        if __name__ == "__main__":
            print(ns.get({"a": (operator.add, 1, 2)}, "a", scheduler="processes"))
    """)
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "3"


def test_resizing_the_pool_replaces_it():
    ns.get({"a": (inc, 1)}, "a", scheduler="processes", num_workers=1)
    assert len(workers_pids()) == 1
    ns.get({"a": (inc, 1)}, "a", scheduler="processes", num_workers=2)
    assert len(workers_pids()) == 2


def open_missing(path):
    with open(path) as f:
        return f.read()


@pytest.mark.parametrize("scheduler", ["processes", "process-pool"])
def test_a_task_raising_oserror_is_a_task_error_not_a_dead_worker(tmp_path, scheduler):
    from concurrent.futures import ProcessPoolExecutor

    missing = str(tmp_path / "missing.csv")
    dsk = {"path": missing, "data": (open_missing, "path")}
    if scheduler == "process-pool":
        with ProcessPoolExecutor(1) as pool:
            with pytest.raises(FileNotFoundError, match="missing.csv"):
                ns.get(dsk, "data", scheduler=pool)
        return
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        ns.get(dsk, "data", scheduler=scheduler)
    assert ns.last_failure().key == "data"


def test_unpicklable_result_on_a_process_executor_names_the_key():
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1) as pool:
        with pytest.raises(TaskPicklingError, match=r"'lock'.*cannot pickle '_thread.lock'"):
            ns.get({"x": 1, "lock": (make_lock, "x")}, "lock", scheduler=pool)
