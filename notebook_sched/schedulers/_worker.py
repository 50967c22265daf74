"""What runs inside a worker process (and inside foreign executors' workers).

Kept tiny on purpose: a spawned worker imports this module, the job format
(``_job.py``: what a job is and how it runs), ``errors`` (exceptions that cross
processes), the sampling rule of ``reporter.py`` and ``cloudpickle``; nothing from
Jupyter, no backend, no diagnostics.

Worker-to-caller messages (pickled tuples):

``("R", batch, results, final)``   results: ``[(task, value, start, stop), ...]``
                                   (a fifth item, a ``measure.Measured`` or None,
                                   when the caller measures: see ``run_batch``);
                                   sent when the batch ends, and every FLUSH_SECONDS
                                   meanwhile so progress stays live.
``("E", batch, results, task, exception_bytes, traceback_text, local_inputs)``
                                   a task raised; sent at once, the rest of the batch
                                   is dropped.
``("U", batch, results, task, message)``  a result could not be pickled.
``("L", batch, [], -1, exception_bytes, traceback_text)``
                                   the batch could not be unpickled here (an input's
                                   ``__setstate__`` raised, a module is missing); the
                                   caller finds the task whose job fails to load and
                                   reports the error as that task's.  The worker lives on.

The shared ``current`` value holds the task being run (-1 when idle), so when a worker
dies the caller can name the task that killed it.  The shared ``beat`` counter is
raised every HEARTBEAT_SECONDS by a small thread, so the caller can tell a worker busy
in a long task from one that stopped answering (``worker_timeout``).  A child forked
by a task never speaks on the worker's pipe (see ``_forkguard.py``).
"""

from __future__ import annotations

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
from ..reporter import skip_after
from ._blas import limit_by_environment, limited_native_threads
from ._job import NOT_SENT, run_job

# Called as a worker leaves: _pool registers its shutdown here when a task imports it
# (a nested compute on processes), so this module need not name _pool.
AT_EXIT: list = []

__all__ = ["worker_main", "run_batch", "run_payload", "MAIN_GUARD_EXIT", "NOT_SENT"]

FLUSH_SECONDS = 0.1
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


def _first_unpicklable(results: list) -> tuple[list, int, str] | None:
    """``(results before it, task, reason)`` for the first result that cannot be pickled."""
    for n, (task, value, *_times) in enumerate(results):
        try:
            cloudpickle.dumps(value)
        except Exception as exc:
            return results[:n], task, f"{type(exc).__name__}: {exc}"
    return None


def _send(conn, batch: int, results: list, final: bool) -> None:
    leave_if_forked()  # a fork from C code ran no at-fork hook
    try:
        data = cloudpickle.dumps(("R", batch, results, final), protocol=5)
    except Exception:
        # Find the culprit, send what can be sent and report the rest as an error.
        culprit = _first_unpicklable(results)
        if culprit is None:
            raise
        good, task, reason = culprit
        conn.send_bytes(cloudpickle.dumps(("U", batch, good, task, reason)))
        raise _BatchAborted from None
    conn.send_bytes(data)


class _BatchAborted(Exception):
    pass


def run_batch(conn, current, batch: int, jobs: list, sampling: tuple | None = None) -> None:
    """Run ``jobs`` in order, streaming results to ``conn``.

    ``sampling`` is ``(every, long)`` when the caller measures: results then carry a
    fifth item for a sample of tasks (every task after one that took ``long`` seconds,
    one in ``every`` otherwise), else None: a ``measure.Measured`` (this worker
    thread's CPU seconds, the result's bytes, the busy-GIL share of this process's
    probe while the task ran; see ``measure.py``).
    """
    clock = time.time
    every, long_task = sampling or (0, 0.0)
    skip = 0 if sampling else 1 << 62
    meter = _meter() if sampling else None
    produced = [None] * len(jobs)
    results: list = []
    last_flush = clock()
    try:
        for pos, job in enumerate(jobs):
            current.value = job[0]
            sample = skip <= 0
            began = meter.begin() if sample else None
            start = clock()
            try:
                value = run_job(job, produced)
            except BaseException as exc:
                if fork_state.forked:
                    os._exit(0)  # a child forked by the task: never speak for the worker
                current.value = -1
                tb_text = "".join(traceback.format_exception(exc))
                local_inputs = _local_inputs(job, jobs, produced)
                _send(conn, batch, results, False)
                results = []
                message = ("E", batch, [], job[0], _dump_exception(exc), tb_text, local_inputs)
                leave_if_forked()
                conn.send_bytes(cloudpickle.dumps(message, protocol=5))
                return
            stop = clock()
            if fork_state.forked:
                os._exit(0)  # see _forkguard: the parent's result is the answer
            for _ref, batch_pos in job[4]:
                produced[batch_pos] = None  # a chain intermediate has one reader
            sent = value if job[5] else NOT_SENT
            if not job[5]:
                produced[pos] = value
            if sampling:
                measured = None
                if sample:
                    measured = meter.end(began, value, stop)
                    skip = skip_after(stop - start, every, long_task)
                else:
                    skip -= 1
                results.append((job[0], sent, start, stop, measured))
            else:
                results.append((job[0], sent, start, stop))
            value = None
            if stop - last_flush > FLUSH_SECONDS and pos + 1 < len(jobs):
                _send(conn, batch, results, False)
                results = []
                last_flush = stop
        current.value = -1
        _send(conn, batch, results, True)
    except _BatchAborted:
        current.value = -1


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
                failed = ("L", batch_id(data), [], -1, _dump_exception(exc), tb_text)
                conn.send_bytes(cloudpickle.dumps(failed, protocol=5))
                continue
            if message is None:
                return
            batch, jobs, sampling = message
            with limited_native_threads(pool_size):
                run_batch(conn, current, batch, jobs, sampling)
            sys.stdout.flush()
    finally:
        # A task may have started a pool of its own (nested compute); its workers are
        # not daemons, and multiprocessing would wait for them as this process exits.
        for stop in AT_EXIT:
            stop()


def run_payload(payload, measure: bool = False):
    """Run a list of jobs in a foreign executor's worker; returns results or an error.

    ``payload`` is cloudpickled bytes for process-based executors (so lambdas and
    notebook functions travel), and the answer is then ``(pid, pickled outcome)`` so
    the caller can name the worker; for thread pools it is the plain list, and the
    answer the plain outcome: ``("R", results)``, ``("E", results, task, exception,
    traceback_text, local_inputs)`` or ``("U", [], task, reason)``.  ``measure``: each
    result carries a fifth item, the ``measure.Measured`` of its task (this process's
    TaskMeter, as in :func:`run_batch`).
    """
    if isinstance(payload, bytes):
        return os.getpid(), _run_payload(payload, measure)
    return _run_payload(payload, measure)


def _run_payload(payload, measure: bool = False):
    pickled = isinstance(payload, bytes)
    try:
        jobs = pickle.loads(payload) if pickled else payload
    except Exception as exc:  # an input that fails to unpickle: the caller names the task
        tb_text = "".join(traceback.format_exception(exc))
        return cloudpickle.dumps(("E", [], -1, _dump_exception(exc), tb_text, []))
    pid = os.getpid()  # a child forked by a task must not answer for the executor
    produced = [None] * len(jobs)
    results = []
    clock = time.time
    meter = _meter() if measure else None
    for pos, job in enumerate(jobs):
        began = meter.begin() if meter else None
        start = clock()
        try:
            value = run_job(job, produced)
        except BaseException as exc:  # SystemExit too: the task's failure, not the pool's
            if pickled and os.getpid() != pid:
                os._exit(0)
            if not pickled:
                return ("E", results, job[0], exc, None, [])
            tb_text = "".join(traceback.format_exception(exc))
            local = _local_inputs(job, jobs, produced)
            return cloudpickle.dumps(("E", results, job[0], _dump_exception(exc), tb_text, local))
        if pickled and os.getpid() != pid:
            os._exit(0)
        produced[pos] = value
        stop = clock()
        if meter:
            measured = meter.end(began, value, stop)
            results.append((job[0], value if job[5] else NOT_SENT, start, stop, measured))
        else:
            results.append((job[0], value if job[5] else NOT_SENT, start, stop))
    if not pickled:
        return ("R", results)
    try:
        return cloudpickle.dumps(("R", results))
    except Exception:
        culprit = _first_unpicklable(results)
        if culprit is None:
            raise
        _good, task, reason = culprit
        return cloudpickle.dumps(("U", [], task, reason))
