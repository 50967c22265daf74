"""The engine's one reporter, the shared errors module and the job format (issue 12).

* :class:`notebook_sched.reporter.Reporter` is the only emitter of task events and the
  only builder of ``TaskFailure``: its protocol is tested here without any backend,
  and a source scan keeps the backends from emitting by hand again.
* Executors (``scheduler=<executor>``) report like the other backends: ``task_started``
  on the thread that runs the task, worker names ``thread-k`` / ``process-k`` /
  ``caller``, never the backend's name.
* The error types live in ``errors.py`` and keep their old import paths.
* A process worker imports only the job format, errors, the engine's base modules and
  cloudpickle on top of the package itself.
"""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest

import notebook_sched as ns
from notebook_sched import errors
from notebook_sched.events import Dispatcher, Observer
from notebook_sched.graph import compile_graph
from notebook_sched.measure import LONG_TASK, THREAD, Measurement
from notebook_sched.reporter import UNKNOWN, Reporter
from notebook_sched.task_runner import SAMPLE_EVERY, skip_after

from .conftest import leak_check

PACKAGE = pathlib.Path(ns.__file__).parent


def inc(x):
    return x + 1


def boom(x):
    raise ValueError(f"boom {x}")


class Recorder(Observer):
    """Every task event with the thread it was emitted on."""

    def __init__(self):
        self.lock = threading.Lock()
        self.events = []

    def _add(self, *event):
        with self.lock:
            self.events.append((*event, threading.current_thread().name))

    def worker_started(self, worker):
        self._add("worker", worker)

    def task_started(self, key, worker):
        self._add("started", key, worker)

    def task_finished(self, key, worker, start, stop):
        self._add("finished", key, worker)

    def task_done(self, key):
        self._add("done", key)

    def task_measured(self, record):
        self._add("measured", record.key, record.worker)

    def task_failed(self, key, worker, error):
        self._add("failed", key, worker, type(error).__name__)

    def of(self, kind):
        return [e for e in self.events if e[0] == kind]


def _reporter(dsk, keys, recorder=None):
    graph = compile_graph(dsk, keys)
    events = Dispatcher([recorder] if recorder else [])
    return graph, Reporter(graph, events, "test-backend")


# -- the reporter on its own ---------------------------------------------------------


def test_reporter_emits_the_protocol_by_task_number():
    recorder = Recorder()
    graph, report = _reporter({"a": 1, "b": (inc, "a")}, ["b"], recorder)
    b = graph.index["b"]
    report.worker_started("w-0")
    report.started(b, "w-0")
    report.measured(Measurement(b, "", THREAD, 1.0, 2.0, 0.5, None, None, None), "w-0")
    report.finished(b, "w-0", 1.0, 2.0)
    report.finished(b, "w-0", 1.0, 2.0, done=False)
    report.finished_batch([(b, 1.0, 2.0)], "w-1")
    report.done(b)
    kinds = [e[:3] for e in recorder.events]
    assert kinds == [
        ("worker", "w-0", "MainThread"),
        ("started", "b", "w-0"),
        ("measured", "b", "w-0"),
        ("finished", "b", "w-0"),
        ("done", "b", "MainThread"),
        ("finished", "b", "w-0"),
        ("finished", "b", "w-1"),
        ("done", "b", "MainThread"),
        ("done", "b", "MainThread"),
    ]


def test_reporter_without_listeners_has_no_hooks():
    _graph, report = _reporter({"a": (inc, 1)}, ["a"])
    assert report.task_started is report.task_finished is report.key_done is None
    assert report.task_measured is None and not report.timed and report.sampling() is None
    report.started(0, "w")  # nobody listens: nothing to call, nothing raised
    report.finished(0, "w", 0.0, 1.0)


def test_failed_records_inputs_from_the_table_and_the_backend():
    recorder = Recorder()
    dsk = {"x": 1, "y": 2, "bad": (boom, "x", "y")}
    graph, report = _reporter(dsk, ["bad"], recorder)
    x, y, bad = graph.index["x"], graph.index["y"], graph.index["bad"]
    report.values[x] = 10
    report.values[y] = 20
    exc = ValueError("boom")
    failure = report.failed(bad, exc, "w-3", "remote text", {y: 21})
    assert failure.inputs == {"x": 10, "y": 21}  # the backend's value wins
    assert failure.key == "bad" and failure.worker == "w-3"
    assert failure.backend == "test-backend" and failure.remote_traceback == "remote text"
    assert ns.last_failure() is failure and exc.__notebook_sched_failure__ is failure
    assert any("task 'bad' failed on the 'test-backend'" in n for n in exc.__notes__)
    assert recorder.of("failed") == [("failed", "bad", "w-3", "ValueError", "MainThread")]


def test_failed_with_unknown_inputs_and_deferred_event():
    recorder = Recorder()
    graph, report = _reporter({"x": 1, "bad": (boom, "x")}, ["bad"], recorder)
    bad = graph.index["bad"]
    failure = report.failed(bad, ValueError("gone"), "w", inputs=UNKNOWN, emit=False)
    assert failure.inputs is None
    assert recorder.of("failed") == []
    report.emit_failed(bad, "w", failure.exception)
    assert [e[1] for e in recorder.of("failed")] == ["bad"]


def test_interrupted_only_annotates():
    recorder = Recorder()
    graph, report = _reporter({"a": (inc, 1)}, ["a"], recorder)
    before = ns.last_failure()
    exc = KeyboardInterrupt()
    report.interrupted(graph.index["a"], exc, "sync")
    assert ns.last_failure() is before and recorder.events == []
    assert any("task 'a'" in note for note in exc.__notes__)


def test_sampling_rule():
    assert skip_after(LONG_TASK) == 0  # a long task: measure the next one too
    assert skip_after(LONG_TASK / 2) == SAMPLE_EVERY
    assert skip_after(0.5, every=7, long_task=1.0) == 7


# -- executors report like the other backends -----------------------------------------


def test_thread_pool_executor_reports_on_the_thread_that_runs_the_task():
    recorder = Recorder()
    dsk = {"lit": 3, **{f"t{i}": (inc, "lit") for i in range(8)}}
    dsk["out"] = (sum, [f"t{i}" for i in range(8)])
    with leak_check(), ThreadPoolExecutor(2, thread_name_prefix="user-pool") as pool:
        assert ns.get(dsk, "out", scheduler=pool, observers=[recorder]) == 32
    started = recorder.of("started")
    assert sorted(e[1] for e in started) == sorted(k for k in dsk if k != "lit")
    for _kind, _key, worker, thread in started:
        assert re.fullmatch(r"thread-[01]", worker), worker
        assert thread.startswith("user-pool"), thread  # emitted on the pool thread
    workers = [e[1] for e in recorder.of("worker")]
    assert sorted(workers) == sorted({e[2] for e in started})  # once per thread
    for key in (e[1] for e in started):
        names = [e[0] for e in recorder.events if e[1:2] == (key,)]
        assert names.index("started") < names.index("finished") < names.index("done")


def test_process_pool_executor_names_worker_processes():
    recorder = Recorder()
    dsk = {f"t{i}": (inc, i) for i in range(6)}
    dsk["alias"] = "t0"
    dsk["out"] = (sum, [f"t{i}" for i in range(6)])
    with leak_check(), ProcessPoolExecutor(2) as pool:
        assert ns.get(dsk, ["out", "alias"], scheduler=pool, observers=[recorder]) == (21, 1)
        started = {e[1]: e[2] for e in recorder.of("started")}
        with pytest.raises(ValueError, match="boom 1") as info:
            ns.get({"x": 1, "bad": (boom, "x")}, "bad", scheduler=pool, observers=[recorder])
    assert set(started) == {*(f"t{i}" for i in range(6)), "out"}  # the alias is no task
    assert all(re.fullmatch(r"process-[01]", w) for w in started.values()), started
    finished = {e[1]: e[2] for e in recorder.of("finished")}
    assert finished == started  # the same worker, and 'bad' never finished
    failed = recorder.of("failed")
    assert [(e[1], e[3]) for e in failed] == [("bad", "ValueError")]
    assert re.fullmatch(r"process-[01]", failed[0][2])
    assert ("started", "bad", failed[0][2]) in [e[:3] for e in recorder.events]
    failure = ns.last_failure()
    assert failure.key == "bad" and failure.worker == failed[0][2]
    assert failure.inputs == {"x": 1} and info.value is failure.exception
    assert "executor:ProcessPoolExecutor" not in {w for w in started.values()}


def test_executor_literal_tasks_run_in_the_caller():
    recorder = Recorder()

    def make():  # a lambda-free local function: the thread pool takes it as is
        return {"k": 5, "f": (inc, "k")}

    with ThreadPoolExecutor(1) as pool:
        got = ns.get({**make(), "g": (sum, [1, 2])}, ["f", "g"], scheduler=pool)
        assert got == (6, 3)
        ns.get({"a": (inc, 1)}, "a", scheduler=pool, observers=[recorder])
    assert {e[2] for e in recorder.of("started")} == {"thread-0"}


# -- errors --------------------------------------------------------------------------


def test_error_types_keep_their_old_import_paths():
    from notebook_sched.schedulers import _pool, processes

    assert processes.TaskPicklingError is errors.TaskPicklingError
    assert processes.WorkerDiedError is errors.WorkerDiedError is ns.WorkerDiedError
    assert processes.WorkerHungError is errors.WorkerHungError
    assert processes.MainGuardError is _pool.MainGuardError is errors.MainGuardError
    assert processes.describe_exit is errors.describe_exit
    assert issubclass(errors.TaskPicklingError, TypeError)


def test_error_messages_name_the_key_cause_and_fix():
    deep = RecursionError("maximum recursion depth exceeded")
    text = str(errors.unpicklable_task(("x", 1), deep))
    assert "Task ('x', 1) cannot be sent to a worker process" in text
    assert "recursion limit" in text and "scheduler='threads'" in text
    text = str(errors.unpicklable_result("r", "TypeError: no", "the executor's worker process"))
    assert "The result of task 'r' cannot be sent back from the executor's" in text
    assert str(errors.unpicklable_result(None, "E: x")).startswith("A result cannot be")
    text = str(errors.worker_died("process-1", 42, "task 'v'", -9))
    assert "exit code -9 (SIGKILL: killed, often by the out-of-memory killer)" in text
    text = str(errors.worker_hung("process-0", 7, "task 's'", 3.25, 2))
    assert "3.2 s (worker_timeout=2 s)" in text and "worker_timeout=300" in text
    assert "main guard" in errors.main_guard_message()


def test_process_executor_unpicklable_task_names_the_key():
    lock = threading.Lock()
    with ProcessPoolExecutor(1) as pool:
        with pytest.raises(errors.TaskPicklingError, match="Task 'locked' cannot be sent"):
            ns.get({"locked": (id, lock)}, "locked", scheduler=pool)


# -- what a process worker imports ---------------------------------------------------

ALLOWED_IN_WORKER = {
    "notebook_sched.schedulers._worker",
    "notebook_sched.schedulers._blas",  # native pools limited per worker (threadpoolctl lazily)
    "notebook_sched.schedulers._job",
    "notebook_sched._forkguard",
    "notebook_sched.errors",
    "notebook_sched.task_runner",  # runs, fails, times and measures each task
    "notebook_sched.measure",  # the Measurement record and the worker's TaskMeter
    "notebook_sched.gil",  # the TaskMeter's clocks and probe (ctypes lazily)
    "notebook_sched.task_output",  # what tasks print, captured and sent back
    "notebook_sched.failure",
    "notebook_sched.graph",
    "notebook_sched.graph_walk",
    "notebook_sched.schedulers",
}


@pytest.mark.timeout(60)
def test_process_worker_imports_only_the_job_format_and_below():
    """What the worker module adds on top of ``import notebook_sched`` (whose own
    imports are the import-graph test's business)."""
    code = (
        "import sys, notebook_sched\n"
        "before = set(sys.modules)\n"
        "import notebook_sched.schedulers._worker\n"
        "print('\\n'.join(sorted(m for m in set(sys.modules) - before"
        " if m.startswith('notebook_sched'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=50, check=True
    ).stdout.split()
    assert "notebook_sched.schedulers._worker" in out or "notebook_sched.schedulers" in out
    assert set(out) <= ALLOWED_IN_WORKER, sorted(set(out) - ALLOWED_IN_WORKER)


def test_executor_and_processes_do_not_import_each_other():
    for module, other in (("executor", "processes"), ("processes", "executor")):
        source = (PACKAGE / "schedulers" / f"{module}.py").read_text()
        assert not re.search(rf"from \.{other} import|from \. import {other}", source), module


# -- nobody but the reporter emits ---------------------------------------------------

EMITTERS = [
    "schedulers/sync.py",
    "schedulers/threads.py",
    "schedulers/processes.py",
    "schedulers/auto.py",
    "schedulers/executor.py",
    "distributed/run.py",
    "interop/dask_backend.py",
    "distributed/client.py",
]


def test_only_the_reporter_makes_task_failures():
    makers = []
    for path in PACKAGE.rglob("*.py"):
        if path.name in ("reporter.py", "failure.py"):
            continue
        if re.search(r"\bTaskFailure\(|\brecord_failure\(", path.read_text()):
            makers.append(str(path.relative_to(PACKAGE)))
    assert makers == []


@pytest.mark.parametrize("path", EMITTERS)
def test_backends_emit_only_through_the_reporter(path):
    source = (PACKAGE / path).read_text()
    by_hand = re.findall(
        r"events\.task_\w+\(|TaskFailure\(|task_failure\(|record_failure\(|annotate\(", source
    )
    assert by_hand == [], f"{path} emits or records by hand: {by_hand}"


# -- capabilities, not names ---------------------------------------------------------


def test_backends_declare_capabilities():
    from notebook_sched.schedulers import capabilities, resolve

    assert capabilities("threads").runs_tasks_on_threads
    assert not capabilities("threads").uses_worker_processes
    assert capabilities("processes").worker_timeout and capabilities("auto").worker_timeout
    assert not capabilities("sync").runs_tasks_on_threads
    assert not capabilities("distributed").worker_timeout
    assert capabilities("no-such-backend") == capabilities("sync")  # nothing claimed
    with ThreadPoolExecutor(1) as threads, ProcessPoolExecutor(1) as processes:
        name, _get = resolve(threads)
        assert capabilities(name).runs_tasks_on_threads
        name, _get = resolve(processes)
        assert capabilities(name).uses_worker_processes
        assert not capabilities(name).runs_tasks_on_threads


def test_worker_timeout_reaches_only_the_backends_that_take_it():
    from notebook_sched.schedulers import register_backend

    seen = {}

    def fake_get(dsk, keys, **options):
        seen.update(options)
        return ns.get(dsk, keys, scheduler="sync")

    module = type(sys)("fake_timeout_backend")
    module.get = fake_get
    sys.modules["fake_timeout_backend"] = module
    from notebook_sched.schedulers import Capabilities

    try:
        register_backend("fake-timeout", "fake_timeout_backend")
        assert ns.get({"a": (inc, 1)}, "a", scheduler="fake-timeout", worker_timeout=5) == 2
        assert "worker_timeout" not in seen
        register_backend(
            "fake-timeout", "fake_timeout_backend", capabilities=Capabilities(worker_timeout=True)
        )
        assert ns.get({"a": (inc, 1)}, "a", scheduler="fake-timeout", worker_timeout=5) == 2
        assert seen["worker_timeout"] == 5
    finally:
        from notebook_sched import schedulers

        for table in (schedulers._modules, schedulers._aliases, schedulers._hints):
            table.pop("fake-timeout", None)
        schedulers._capabilities.pop("fake-timeout", None)
        del sys.modules["fake_timeout_backend"]
