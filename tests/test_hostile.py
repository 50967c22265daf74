"""A hostile user's graphs (issue 9): every compute ends, with the answer or a clear error.

Each test runs on every backend it applies to, with a timeout and the leak check.
Backends: ``sync``, ``threads``, ``processes``, a thread-pool and a process-pool
executor, and the local cluster (``distributed``).
"""

from __future__ import annotations

import os
import resource
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from operator import add

import pytest

import notebook_sched as ns
from notebook_sched.errors import RemoteTaskError, dump_exception, load_exception
from notebook_sched.graph import CycleError, GraphError
from notebook_sched.schedulers.processes import TaskPicklingError

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("no_leaks")]


LOCAL = ["sync", "threads", "processes"]
EXECUTORS = ["thread-executor", "process-executor"]
ALL = LOCAL + ["auto"] + EXECUTORS + ["distributed"]
REMOTE = ["processes", "auto", "process-executor", "distributed"]


@pytest.fixture
def sched(no_leaks):
    """``sched(name)``: a backend name, or an executor made for this test and shut down
    before the leak check runs (this fixture depends on ``no_leaks``)."""
    made: list = []

    def make(name: str):
        if name == "thread-executor":
            made.append(ThreadPoolExecutor(2))
            return made[-1]
        if name == "process-executor":
            made.append(ProcessPoolExecutor(1, mp_context=get_context("spawn")))
            return made[-1]
        return name

    yield make
    for executor in made:
        executor.shutdown(wait=True, cancel_futures=True)


def inc(x):
    return x + 1


def ident(*args):
    return args


# -- 1. BaseException in a task ---------------------------------------------------


class CustomBase(BaseException):
    pass


def raise_systemexit():
    raise SystemExit(3)


def call_sys_exit():
    sys.exit("bye")


def raise_keyboardinterrupt():
    raise KeyboardInterrupt("from the task")


def raise_generatorexit():
    raise GeneratorExit()


def raise_custom_base():
    raise CustomBase("custom")


BASE_CASES = [
    (raise_systemexit, SystemExit),
    (call_sys_exit, SystemExit),
    (raise_keyboardinterrupt, KeyboardInterrupt),
    (raise_generatorexit, GeneratorExit),
    (raise_custom_base, CustomBase),
]


@pytest.mark.parametrize("scheduler", ALL)
@pytest.mark.parametrize("func,expected", BASE_CASES, ids=[c[1].__name__ for c in BASE_CASES])
def test_base_exception_in_a_task_is_that_tasks_failure(sched, scheduler, func, expected):
    s = sched(scheduler)
    dsk = {"a": 1, "bad": (func,), "out": (add, "a", "bad")}
    with pytest.raises(expected) as info:
        ns.get(dsk, "out", scheduler=s)
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "task 'bad' failed" in notes
    # The backend survives: the next compute works.
    assert ns.get({"x": (inc, 1)}, "x", scheduler=s) == 2


# -- 2. nothing requested ------------------------------------------------------------


@pytest.mark.parametrize("scheduler", ALL)
def test_empty_key_lists_answer_at_once(sched, scheduler):
    s = sched(scheduler)
    dsk = {"a": (inc, 1)}
    start = time.monotonic()
    assert ns.get(dsk, [], scheduler=s) == ()
    assert ns.get(dsk, [[], []], scheduler=s) == ((), ())
    assert ns.get({}, [], scheduler=s) == ()
    assert time.monotonic() - start < 5


# -- 3/4. what names a key (Dask's rule) -----------------------------------------------


KEY_CASES = {
    "float key": ({2.5: 10, "b": (inc, 2.5)}, "b", 11),
    "bool key": ({True: 10, "b": (inc, True)}, "b", 11),
    "bool names int key": ({1: 10, "b": (inc, True)}, "b", 11),
    "bytes is data": ({b"x": 10, "b": (ident, b"x")}, "b", (b"x",)),
    "None is data": ({None: 10, "b": (ident, None)}, "b", (None,)),
    "top data tuple": ({"x": 1, "y": ("x", "float64")}, "y", (1, "float64")),
    "tuple argument": ({"x": 1, "y": (ident, ("x", "float64"))}, "y", ((1, "float64"),)),
    "set argument": ({"x": 1, "y": (ident, {"x", "z"})}, "y", ({1, "z"},)),
    "dict is not walked": ({"x": 1, "y": (ident, {"a": "x"})}, "y", ({"a": "x"},)),
    "top set": ({"x": 1, "y": {"x"}}, "y", {1}),
    "task in data tuple": ({"x": 1, "y": ((inc, "x"), 3)}, "y", (2, 3)),
    "task tuple that is a key": ({"x": 1, (inc, "x"): 5, "y": (ident, (inc, "x"))}, "y", (2,)),
    "float alias": ({2.5: 10, "b": 2.5}, "b", 10),
}


@pytest.mark.parametrize("scheduler", LOCAL + ["auto", "distributed"])
@pytest.mark.parametrize("case", list(KEY_CASES))
def test_what_names_a_key_follows_dask(sched, scheduler, case):
    from dask.local import get_sync

    dsk, key, expected = KEY_CASES[case]
    assert get_sync(dsk, key) == expected  # the case states Dask's answer
    assert ns.get(dsk, key, scheduler=sched(scheduler)) == expected


class TaskRef:
    """Dask's TaskRef, duck-typed (the package never imports dask._task_spec)."""

    __slots__ = ("key",)

    def __init__(self, key):
        self.key = key

    def __hash__(self):
        return hash(self.key)

    def __eq__(self, other):
        return isinstance(other, TaskRef) and other.key == self.key


@pytest.mark.parametrize("scheduler", LOCAL)
def test_taskrefs_are_references(scheduler):
    from dask._task_spec import TaskRef as DaskTaskRef

    for ref in (TaskRef, DaskTaskRef):
        dsk = {"x": 1, "alias": ref("x"), "call": (ident, ref("x"), [ref("alias")])}
        assert ns.get(dsk, ["alias", "call"], scheduler=scheduler) == (1, (1, [1]))
    with pytest.raises(GraphError, match="'nope'"):
        ns.get({"a": DaskTaskRef("nope")}, "a", scheduler=scheduler)


@pytest.mark.parametrize("scheduler", LOCAL + ["distributed"])
def test_delayed_of_a_dask_array(scheduler):
    da = pytest.importorskip("dask.array")
    import dask
    import numpy as np

    arr = da.arange(6, chunks=3)

    def our_get(dsk, keys, **kwargs):
        return ns.get(dsk, keys, scheduler=scheduler)

    result = dask.delayed(arr).compute(scheduler=our_get)
    assert isinstance(result, np.ndarray)
    assert result.tolist() == list(range(6))


# -- 7. exceptions that do not pickle plainly ----------------------------------------


class NeedsArgs(Exception):
    def __init__(self, a, b):
        super().__init__(f"{a}-{b}")
        self.a = a
        self.b = b


class HoldsLock(Exception):
    def __init__(self, message):
        super().__init__(message)
        self.lock = threading.Lock()


class BadReduce(Exception):
    def __reduce__(self):
        raise TypeError("no pickling for you")


def raise_needs_args():
    raise NeedsArgs(1, 2)


def raise_holds_lock():
    raise HoldsLock("locked")


def raise_bad_reduce():
    raise BadReduce("bad reduce")


def raise_group():
    raise ExceptionGroup("several", [NeedsArgs(3, 4), ValueError("v")])


def raise_chained():
    try:
        raise KeyError("inner")
    except KeyError as exc:
        raise NeedsArgs(5, 6) from exc


@pytest.mark.parametrize("scheduler", REMOTE + ["sync", "threads"])
def test_exceptions_arrive_as_their_own_type(sched, scheduler):
    s = sched(scheduler)
    with pytest.raises(NeedsArgs) as info:
        ns.get({"t": (raise_needs_args,)}, "t", scheduler=s)
    assert (info.value.a, info.value.b, str(info.value)) == (1, 2, "1-2")
    with pytest.raises(HoldsLock, match="locked"):
        ns.get({"t": (raise_holds_lock,)}, "t", scheduler=s)
    with pytest.raises(BadReduce, match="bad reduce"):
        ns.get({"t": (raise_bad_reduce,)}, "t", scheduler=s)
    with pytest.raises(ExceptionGroup) as group:
        ns.get({"t": (raise_group,)}, "t", scheduler=s)
    inner = group.value.exceptions
    assert isinstance(inner[0], NeedsArgs) and inner[0].a == 3
    assert isinstance(inner[1], ValueError)
    with pytest.raises(NeedsArgs) as chained:
        ns.get({"t": (raise_chained,)}, "t", scheduler=s)
    cause = chained.value.__cause__
    assert isinstance(cause, KeyError) or "KeyError: 'inner'" in str(cause)


def test_exception_that_cannot_be_rebuilt_keeps_its_type_name():
    class Unbuildable(Exception):
        def __new__(cls, *args):
            raise TypeError("no")

    exc = Exception.__new__(Unbuildable)
    exc.args = ("text",)
    rebuilt = load_exception(dump_exception(exc))
    assert isinstance(rebuilt, RemoteTaskError)
    assert "Unbuildable" in str(rebuilt) and "text" in str(rebuilt)


# -- 8. a misspelled dependency ---------------------------------------------------------


@pytest.mark.parametrize("scheduler", ALL)
def test_misspelled_dependency_gets_a_note(sched, scheduler):
    dsk = {"data": 1, "out": (inc, "dat"), "fine": (add, "data", 1)}
    with pytest.raises(TypeError) as info:
        ns.get(dsk, ["out", "fine"], scheduler=sched(scheduler))
    notes = "\n".join(info.value.__notes__)
    assert "argument 'dat' is a plain string; did you mean the key 'data'?" in notes


def test_no_note_when_no_key_is_close():
    with pytest.raises(TypeError) as info:
        ns.get({"data": 1, "out": (inc, "completely different")}, "out", scheduler="sync")
    assert "did you mean" not in "\n".join(info.value.__notes__)


# -- 9. smaller ones -----------------------------------------------------------------


def test_long_cycle_message_shows_its_ends_and_length():
    n = 20_000
    dsk = {f"k{i}": (inc, f"k{(i + 1) % n}") for i in range(n)}
    with pytest.raises(CycleError) as info:
        ns.get(dsk, "k0", scheduler="sync")
    message = str(info.value)
    assert len(message) < 2_000
    assert "'k0' -> 'k1'" in message and "'k19999' -> 'k0'" in message
    assert "20000 keys" in message


@pytest.mark.parametrize("scheduler", LOCAL)
@pytest.mark.parametrize("keys", [{"a"}, frozenset({"a"}), (k for k in ["a"]), iter(["a"])])
def test_keys_as_a_set_or_generator_are_refused_clearly(scheduler, keys):
    with pytest.raises(TypeError, match="pass a key or a list of keys"):
        ns.get({"a": 1}, keys, scheduler=scheduler)


@pytest.mark.parametrize("scheduler", ["threads", "processes"])
@pytest.mark.parametrize("pool", ["threads", 4, object()])
def test_pool_that_is_not_a_pool_is_refused_clearly(scheduler, pool):
    with pytest.raises(TypeError, match="pool"):
        ns.get({"a": (inc, 1)}, "a", scheduler=scheduler, pool=pool)


@pytest.mark.parametrize("scheduler", LOCAL)
def test_task_nested_3000_deep(scheduler):
    task = 0
    for _ in range(3000):
        task = (inc, task)
    listed = "x"
    for _ in range(3000):
        listed = [listed]
    dsk = {"x": 1, "t": task, "l": (len, listed)}
    if scheduler == "processes":  # pickle recurses: a clear error naming the limit
        with pytest.raises(TaskPicklingError, match="recursion limit"):
            ns.get(dsk, ["t", "l"], scheduler=scheduler)
        dsk = {"x": 1, "t": (inc, 1), "l": (len, [["x"]])}  # the pool still works
        assert ns.get(dsk, ["t", "l"], scheduler=scheduler) == (2, 1)
    else:
        assert ns.get(dsk, ["t", "l"], scheduler=scheduler) == (3000, 1)


def burn():
    end = time.monotonic() + 20
    n = 0
    while time.monotonic() < end:
        n += 1
    return n


def fail_soon():
    time.sleep(0.2)
    raise ValueError("first failure")


def test_threads_failure_cancels_other_running_tasks():
    dsk = {"b1": (burn,), "b2": (burn,), "bad": (fail_soon,), "out": (ident, "b1", "b2", "bad")}
    with pytest.raises(ValueError, match="first failure"):
        ns.get(dsk, "out", scheduler="threads", num_workers=3)
    before = resource.getrusage(resource.RUSAGE_SELF)
    time.sleep(1.0)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert cpu < 0.3, f"{cpu:.2f} s of CPU in the second after the failure"
    assert not [t for t in threading.enumerate() if t.name.startswith("notebook_sched-thread")]


# -- 10. relatives -------------------------------------------------------------------------


class DelRaises:
    def __del__(self):
        raise RuntimeError("from __del__")


def make_del_raises():
    return DelRaises()


def gen_task():
    yield 1
    yield 2


class BadRepr:
    def __repr__(self):
        raise RuntimeError("repr fails")

    def __hash__(self):
        return 1

    def __eq__(self, other):
        return isinstance(other, BadRepr)


def recursive_repr_key():
    items: list = []
    items.append(items)
    return items


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # __del__
@pytest.mark.parametrize("scheduler", LOCAL)
def test_relatives(scheduler):
    # a result whose __del__ raises is only a warning, never a failure or a hang
    result = ns.get({"d": (make_del_raises,), "n": (type, "d")}, "n", scheduler=scheduler)
    assert result is DelRaises
    # a generator task returns its generator (sync/threads) or fails to pickle clearly
    if scheduler == "processes":
        with pytest.raises(TypeError, match="cannot be sent back"):
            ns.get({"g": (gen_task,)}, "g", scheduler=scheduler)
    else:
        assert list(ns.get({"g": (gen_task,)}, "g", scheduler=scheduler)) == [1, 2]
    # unhashable lists as keys in odd places: data, or a clear KeyError
    assert ns.get({"a": (len, [[1], [2]])}, "a", scheduler=scheduler) == 2
    with pytest.raises((KeyError, TypeError)):
        ns.get({"a": 1}, [["a"], [["b"]]], scheduler=scheduler)
    # empty graph, None key
    assert ns.get({}, [], scheduler=scheduler) == ()
    assert ns.get({None: (inc, 1)}, None, scheduler=scheduler) == 2
    # a key whose repr raises, in a failure message
    bad = BadRepr()
    with pytest.raises(ZeroDivisionError):
        ns.get({bad: (divmod, 1, 0)}, bad, scheduler=scheduler)
    # a NumPy array as a graph value and as an argument (no truth-value questions)
    import numpy as np

    arr = np.arange(3)
    got = ns.get(
        {"arr": arr, "s": (np.sum, "arr"), "t": (np.sum, arr)},
        ["arr", "s", "t"],
        scheduler=scheduler,
    )
    assert got[0].tolist() == [0, 1, 2] and got[1:] == (3, 3)
    # a self-referencing list as data
    assert len(ns.get({"r": (recursive_repr_key,)}, "r", scheduler="sync")) == 1


# -- 5. a task that forks ----------------------------------------------------------------


def fork_and_return():
    pid = os.fork()
    if pid == 0:
        return "child"  # back into the worker's loop: must never be sent
    os.waitpid(pid, 0)
    return "parent"


def fork_and_fail():
    pid = os.fork()
    if pid == 0:
        raise ValueError("from the child")
    os.waitpid(pid, 0)
    return "parent"


@pytest.mark.parametrize("scheduler", ["processes", "process-executor"])
def test_fork_in_a_task_the_parent_answers(sched, scheduler):
    s = sched(scheduler)
    for _ in range(3):
        dsk = {"f": (fork_and_return,), "g": (fork_and_fail,), "h": (inc, 1)}
        assert ns.get(dsk, ["f", "g", "h"], scheduler=s) == ("parent", "parent", 2)
    assert ns.get({"x": (inc, 1)}, "x", scheduler=s) == 2


# -- 6. liveness: a stopped worker versus a slow task ----------------------------------------


def stop_myself():
    os.kill(os.getpid(), signal.SIGSTOP)
    return "never"


def busy_python(seconds):
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
    return "busy done"


def busy_numpy(seconds):
    import numpy as np

    a = np.random.default_rng(0).random((600, 600))
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        a = a @ a  # BLAS releases the GIL
        a /= np.abs(a).max()
    return "numpy done"


def test_stopped_worker_fails_within_the_timeout():
    from notebook_sched.schedulers.processes import WorkerHungError

    start = time.monotonic()
    with pytest.raises(WorkerHungError) as info:
        ns.get({"s": (stop_myself,)}, "s", scheduler="processes", worker_timeout=1.0)
    elapsed = time.monotonic() - start
    assert elapsed < 1.0 + 2.0, f"took {elapsed:.1f} s"
    message = str(info.value)
    assert "task 's'" in message and "worker_timeout=1 s" in message
    assert "worker_timeout=300" in message and "process-" in message
    # the stopped worker is gone and replaced: the next compute works
    assert ns.get({"x": (inc, 1)}, "x", scheduler="processes") == 2


def test_stopped_worker_with_config_timeout():
    from notebook_sched.schedulers.processes import WorkerHungError

    with ns.config.set(worker_timeout=0.8), pytest.raises(WorkerHungError, match="task 's'"):
        ns.get({"s": (stop_myself,)}, "s", scheduler="processes")


@pytest.mark.parametrize(
    "task",
    [(busy_python, 3.0), (time.sleep, 3.0), (busy_numpy, 3.0)],
    ids=["python-loop", "sleep", "numpy"],
)
def test_slow_task_longer_than_the_timeout_is_not_killed(task):
    # Twice the timeout, with 7 heartbeats per timeout: slack for a loaded machine.
    result = ns.get({"t": task}, "t", scheduler="processes", worker_timeout=1.5)
    assert result in ("busy done", None, "numpy done")


def test_worker_timeout_is_validated():
    with pytest.raises(ValueError, match="worker_timeout"):
        ns.get({"x": 1}, "x", scheduler="processes", worker_timeout=-1)


# -- relatives of the classes above ---------------------------------------------------------


class BadStr(Exception):
    def __str__(self):
        raise RuntimeError("str fails")


def raise_bad_str():
    raise BadStr()


def raise_local_class():
    class Local(Exception):
        def __init__(self, code):
            super().__init__(f"code {code}")
            self.code = code

    raise Local(7)


@pytest.mark.parametrize("scheduler", REMOTE + ["sync", "threads"])
def test_exception_relatives(sched, scheduler):
    s = sched(scheduler)
    with pytest.raises(BadStr):  # an exception whose __str__ raises still arrives
        ns.get({"t": (raise_bad_str,)}, "t", scheduler=s)
    with pytest.raises(Exception, match="code 7") as info:  # a class made inside the task
        ns.get({"t": (raise_local_class,)}, "t", scheduler=s)
    assert type(info.value).__name__ == "Local" and info.value.code == 7


@pytest.mark.parametrize("scheduler", LOCAL)
def test_nested_key_lists_with_sets_are_refused(scheduler):
    with pytest.raises(TypeError, match="pass a key or a list of keys"):
        ns.get({"a": 1, "b": 2}, [["a"], {"b"}], scheduler=scheduler)
    assert ns.get({"a": 1}, [[]], scheduler=scheduler) == ((),)


def fork_with_multiprocessing():
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    parent_end, child_end = ctx.Pipe()
    child = ctx.Process(target=child_end.send, args=("from the fork child",))
    child.start()
    message = parent_end.recv()
    child.join()
    return message, child.exitcode


def test_multiprocessing_fork_inside_a_task_still_works():
    got = ns.get({"m": (fork_with_multiprocessing,)}, "m", scheduler="processes")
    assert got == ("from the fork child", 0)


def test_worker_stopped_while_idle_is_found_by_the_next_run():
    from notebook_sched.schedulers import _pool
    from notebook_sched.schedulers.processes import WorkerHungError

    ns.get({"x": (inc, 1)}, "x", scheduler="processes", num_workers=2)  # the pool is up
    victim = _pool._pool.workers[0].process.pid
    os.kill(victim, signal.SIGSTOP)
    try:
        dsk = {f"t{i}": (time.sleep, 0.05) for i in range(8)}
        start = time.monotonic()
        with pytest.raises(WorkerHungError):
            ns.get(dsk, list(dsk), scheduler="processes", num_workers=2, worker_timeout=1.0)
        assert time.monotonic() - start < 4
    finally:
        try:
            os.kill(victim, signal.SIGCONT)
        except ProcessLookupError:
            pass
    assert ns.get({"x": (inc, 1)}, "x", scheduler="processes", num_workers=2) == 2


class RecursiveRepr:
    def __repr__(self):
        return repr(self)  # RecursionError

    def __hash__(self):
        return 7

    def __eq__(self, other):
        return isinstance(other, RecursiveRepr)


@pytest.mark.parametrize("scheduler", LOCAL)
def test_keys_whose_repr_fails_in_error_messages(scheduler):
    bad = RecursiveRepr()
    with pytest.raises(KeyError, match="failing repr|RecursiveRepr"):
        ns.get({"a": 1}, bad, scheduler=scheduler)  # a missing key
    with pytest.raises(GraphError, match="RecursiveRepr"):
        ns.get({"a": (inc, 1), "n": Node([bad])}, "n", scheduler=scheduler)  # a missing dep
    with pytest.raises(ZeroDivisionError) as info:
        ns.get({bad: (divmod, 1, 0)}, bad, scheduler=scheduler)  # a failing task
    assert "RecursiveRepr" in "\n".join(info.value.__notes__)


class Node:
    def __init__(self, deps):
        self.dependencies = frozenset(deps)

    def __call__(self, values):
        return sum(values.values())


def test_distributed_futures_rebuild_exceptions_as_their_own_type():
    from notebook_sched.distributed import Client, LocalCluster

    with LocalCluster(n_workers=1) as cluster, Client(cluster) as client:
        future = client.submit(raise_needs_args)
        with pytest.raises(NeedsArgs) as info:
            future.result(timeout=30)
        assert (info.value.a, info.value.b) == (1, 2)
        assert isinstance(future.exception(), NeedsArgs)
        group = client.submit(raise_group).exception()
        assert isinstance(group, ExceptionGroup) and isinstance(group.exceptions[0], NeedsArgs)
