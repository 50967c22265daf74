"""What runs inside a worker process (and inside foreign executors' workers).

Kept tiny on purpose: a spawned worker imports this module, the job format and its
messages (``_job.py``), the capture of what tasks print (``task_output.py``), the task
runner (``task_runner.py``: it runs, times, measures and fails each task, and calls
its result hook), ``errors`` (exceptions that cross processes) and ``cloudpickle``;
nothing from Jupyter, no backend, no diagnostics.
This module is only transport: it feeds jobs to the runner and sends what comes out
as ``_job.py``'s typed messages.

The shared ``current`` value holds the task being run (-1 when idle), so when a worker
dies the caller can name the task that killed it.  The shared ``beat`` counter is
raised every HEARTBEAT_SECONDS by a small thread, so the caller can tell a worker busy
in a long task from one that stopped answering (``worker_timeout``).  A child forked
by a task never speaks on the worker's pipe (see ``_forkguard.py``).
"""

from __future__ import annotations

import atexit
import os
import pickle
import pickletools
import signal
import sys
import threading
import time
import traceback

import cloudpickle

from .._forkguard import install as install_fork_guard
from .._forkguard import leave_if_forked
from .._forkguard import state as fork_state
from ..errors import MAIN_GUARD_EXIT
from ..errors import dump_exception as _dump_exception
from ..measure import PROCESS, result_nbytes
from ..task_output import install as capture_output
from ..task_output import pending as pending_output
from ..task_runner import Failed, TaskRunner
from ._blas import limit_by_environment, limited_native_threads
from ._job import (
    NOT_SENT,
    Results,
    TaskError,
    Unloadable,
    Unpicklable,
    run_job,
)

# Called as a worker leaves: _pool registers its shutdown here when a task imports it
# (a nested compute on processes), so this module need not name _pool.
AT_EXIT: list = []

__all__ = ["worker_main", "run_batch", "run_payload", "MAIN_GUARD_EXIT", "NOT_SENT"]

FLUSH_SECONDS = 0.1
FLUSH_BYTES = 256 << 10  # results waiting to be sent: at most about this many bytes
HEARTBEAT_SECONDS = 0.2  # the caller's liveness check reads the count (processes.py)


def _local_inputs(job: tuple, jobs: list, produced: list) -> list:
    """``[(task, value)]`` of a failed job's in-batch inputs, for the caller's record."""
    out = []
    for _ref, batch_pos in job[4]:
        value = produced[batch_pos]
        try:
            cloudpickle.dumps(value)
        except Exception:
            continue
        out.append((jobs[batch_pos][0], value))
    return out


def _picklable(value) -> bool:
    try:
        cloudpickle.dumps(value)
    except Exception:
        return False
    return True


def _split_unpicklable(results: list, held: dict | None) -> tuple[list, list]:
    """``(results that pickle, [(task, reason, inputs)] of those that do not)``;
    ``inputs``: the task's in-batch inputs that ``held`` kept (``run_batch``), as
    ``(task, value, picklable)``, the value NOT_SENT when it does not pickle either."""
    good, bad = [], []
    for item in results:
        task, value = item[0], item[1]
        try:
            cloudpickle.dumps(value)
        except Exception as exc:
            inputs = []
            for dep, dep_value in (held or {}).get(task, ()):
                ok = _picklable(dep_value)
                inputs.append((dep, dep_value if ok else NOT_SENT, ok))
            bad.append((task, f"{type(exc).__name__}: {exc}", inputs))
        else:
            good.append(item)
    return good, bad


def _send(conn, batch: int, results: list, final: bool, held: dict | None = None) -> None:
    """Send ``results``; ``held``: in-batch inputs kept for them, forgotten once sent."""
    leave_if_forked()  # a fork from C code ran no at-fork hook
    output = pending_output(batch)  # what the tasks printed goes first (_output.py)
    if output is not None:
        conn.send_bytes(cloudpickle.dumps(output, protocol=5))
    try:
        data = cloudpickle.dumps(Results(batch, results, final), protocol=5)
    except Exception:
        # Find the culprits: send the rest, and report those (the batch goes on).
        good, bad = _split_unpicklable(results, held)
        if not bad:
            raise
        data = cloudpickle.dumps(Unpicklable(batch, good, final, bad), protocol=5)
    if held:
        held.clear()
    conn.send_bytes(data)


def _runner(every: int | None, hooks: dict | None, keys: dict | None) -> TaskRunner:
    """The task runner of a batch or payload: every task timed, a sample measured by
    this process's TaskMeter when the caller measures (``every``; 0: every task)."""
    measuring = every is not None
    return TaskRunner(
        PROCESS,
        execute=run_job,
        hooks=hooks,
        keys=keys,
        measure=measuring,
        every=every or 0,
        timed=True,
        meter=_meter() if measuring else None,
    )


def run_batch(
    conn, current, batch: int, jobs: list, runner: TaskRunner, keep_inputs: bool = False
) -> None:
    """Run ``jobs`` in order through ``runner``, streaming results to ``conn``.

    Memory (issue 22): a job is dropped as soon as it has run, so its inputs are
    freed then unless a later job of the batch reads them, and results are sent once
    FLUSH_BYTES of them wait (or FLUSH_SECONDS passed), not kept until the batch ends.

    ``keep_inputs``: a chain's last task keeps its in-batch input until its result is
    sent (``Batch.keep_inputs``), in ``kept``: ``{task: [(input task, value)]}``, so
    that auto can rerun it in the caller when its result cannot be pickled."""
    produced = [None] * len(jobs)
    results: list = []
    kept: dict | None = {} if keep_inputs else None
    held = 0  # bytes of the results waiting in ``results``
    last_flush = time.time()
    run = runner.run_timed
    for pos, job in enumerate(jobs):
        task = current.value = job[0]
        value = run(task, job, produced)
        if fork_state.forked:
            os._exit(0)  # a child forked by the task: never speak for the worker
        if type(value) is Failed:
            current.value = -1
            _send_failure(conn, batch, results, job, jobs, produced, value.exc)
            return
        for _ref, batch_pos in job[4]:
            if kept is not None and job[5]:
                kept.setdefault(task, []).append((jobs[batch_pos][0], produced[batch_pos]))
            produced[batch_pos] = None  # a chain intermediate has one reader
        if job[5]:
            sent = value
            held += result_nbytes(value) or 0
            if pos + 1 < len(jobs) and any(p == pos for _, p in jobs[pos + 1][4]):
                produced[pos] = value  # a chain link sent home too (plan.py: home)
        else:
            sent = NOT_SENT
            produced[pos] = value
        jobs[pos] = (task,)  # its inputs go now (_local_inputs reads only the task)
        job = None
        stop = runner.stop
        results.append((task, sent, runner.start, stop, runner.record))
        value = sent = None
        if (held >= FLUSH_BYTES or stop - last_flush > FLUSH_SECONDS) and pos + 1 < len(jobs):
            _send(conn, batch, results, False, kept)
            results = []
            held = 0
            last_flush = stop
    current.value = -1
    _send(conn, batch, results, True, kept)


def _send_failure(conn, batch, results, job, jobs, produced, exc: BaseException) -> None:
    tb_text = "".join(traceback.format_exception(exc))
    local_inputs = _local_inputs(job, jobs, produced)
    _send(conn, batch, results, False)
    message = TaskError(batch, [], job[0], _dump_exception(exc), tb_text, local_inputs)
    leave_if_forked()
    conn.send_bytes(cloudpickle.dumps(message, protocol=5))


def _meter():
    """This worker's TaskMeter (``measure.py``, imported only when someone measures)."""
    from ..measure import process_meter

    return process_meter()


def batch_id(data: bytes) -> int:
    """The batch number of a ``(batch, jobs)`` pickle, read without loading it.

    Only used when loading failed: the first integer the pickle pushes is the batch."""
    try:
        for opcode, arg, _pos in pickletools.genops(data):
            if opcode.name in ("BININT", "BININT1", "BININT2", "LONG1", "INT", "LONG"):
                return int(arg)
    except Exception:
        pass
    return -1


def _heartbeat(beat) -> None:
    """Count up ``beat`` every HEARTBEAT_SECONDS while this process runs Python.

    A task that is merely slow keeps it going (a pure-Python loop hands the GIL over
    every few milliseconds; sleeping and GIL-releasing C calls do not hold it); a
    stopped or deadlocked process does not."""
    while True:
        time.sleep(HEARTBEAT_SECONDS)
        beat.value += 1


def worker_main(conn, current, name: str, beat=None, pool_size: int = 1) -> None:
    """Entry point of a pool worker process: run batches until told to stop.

    Each batch runs with native thread pools (BLAS, OpenMP) limited to ``cpus //
    pool_size`` threads (``_blas.py``): ``pool_size`` workers each starting a BLAS call
    on every core would share the cores between ``pool_size x cpus`` threads (a
    matrix-product graph ran 3.4x slower on 2 workers than on 2 threads here)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the caller handles interrupts
    install_fork_guard(lambda: [conn.fileno()])
    if beat is not None:
        threading.Thread(target=_heartbeat, args=(beat,), name="heartbeat", daemon=True).start()
    os.environ["NOTEBOOK_SCHED_WORKER"] = name
    capture_output()  # tasks' prints travel with their results (_output.py)
    limit_by_environment(pool_size)
    loads = pickle.loads
    try:
        while True:
            try:
                data = conn.recv_bytes()
            except (EOFError, OSError):
                return  # the caller went away
            try:
                message = loads(data)
            except Exception as exc:
                tb_text = "".join(traceback.format_exception(exc))
                dumped = _dump_exception(exc)
                failed = Unloadable(batch_id(data), [], -1, dumped, tb_text, [])
                conn.send_bytes(cloudpickle.dumps(failed, protocol=5))
                continue
            if message is None:
                return
            data = None  # the batch's bytes: its inputs live in its jobs now
            runner = _runner(message.every, message.hooks, message.keys)
            with limited_native_threads(pool_size):
                run_batch(conn, current, message.batch, message.jobs, runner, message.keep_inputs)
            sys.stdout.flush()
    finally:
        # A task may have started a pool of its own (nested compute); its workers are
        # not daemons, and multiprocessing would wait for them as this process exits.
        for stop in AT_EXIT:
            stop()
        # So may a local cluster (a task computing on 'distributed', a peer layer that
        # cannot register here): its processes would be waited for before the atexit
        # hook that closes it runs, until the caller's stop() kills this process and
        # leaves its socket folder behind.  So the exit hooks run now (only once).
        atexit._run_exitfuncs()
        atexit._clear()


def run_payload(payload, every: int | None = None, hooks=None, keys=None):
    """Run a list of jobs in a foreign executor's worker; returns results or an error.

    ``payload`` is cloudpickled bytes for process-based executors (so lambdas and
    notebook functions travel), and the answer is then ``(pid, pickled outcome)`` so
    the caller can name the worker; for thread pools it is the plain list, and the
    answer the plain outcome: ``Results(-1, results, True)``, ``TaskError`` (holding
    the exception itself on a thread) or ``Unpicklable``.  ``every``: the sampling
    rate when the caller measures (0: every task), else None; ``hooks``/``keys``: the
    jobs' result hooks (``_job.batch_hooks``).
    """
    if isinstance(payload, bytes):
        return os.getpid(), _run_payload(payload, _runner(every, hooks, keys))
    return _run_payload(payload, _runner(every, hooks, keys))


def _run_payload(payload, runner: TaskRunner):
    pickled = isinstance(payload, bytes)
    try:
        jobs = pickle.loads(payload) if pickled else payload
    except Exception as exc:  # an input that fails to unpickle: the caller names the task
        tb_text = "".join(traceback.format_exception(exc))
        return cloudpickle.dumps(TaskError(-1, [], -1, _dump_exception(exc), tb_text, []))
    pid = os.getpid()  # a child forked by a task must not answer for the executor
    produced = [None] * len(jobs)
    results = []
    for pos, job in enumerate(jobs):
        value = runner.run_timed(job[0], job, produced)
        if pickled and os.getpid() != pid:
            os._exit(0)
        if type(value) is Failed:  # SystemExit too: the task's failure, not the pool's
            exc = value.exc
            if not pickled:
                return TaskError(-1, results, job[0], exc, None, [])
            tb_text = "".join(traceback.format_exception(exc))
            local = _local_inputs(job, jobs, produced)
            return cloudpickle.dumps(
                TaskError(-1, results, job[0], _dump_exception(exc), tb_text, local)
            )
        produced[pos] = value
        sent = value if job[5] else NOT_SENT
        results.append((job[0], sent, runner.start, runner.stop, runner.record))
    if not pickled:
        return Results(-1, results, True)
    try:
        return cloudpickle.dumps(Results(-1, results, True))
    except Exception:
        _good, bad = _split_unpicklable(results, None)
        if not bad:
            raise
        return cloudpickle.dumps(Unpicklable(-1, [], True, bad[:1]))
