"""Background jobs: ``submit`` a compute, keep working, collect the result later.

::

    job = ns.submit(total)              # returns at once; the graph compiles in the job
    job.done(), job.result(timeout=10)  # a concurrent.futures.Future
    await job                           # in a cell (IPython's top-level await)
    job.cancel()                        # stops it within ~0.5 s, nothing left running
    ns.jobs()                           # this session's jobs, with an HTML table
    ns.cancel_all()

A :class:`Job` is a ``concurrent.futures.Future`` (CPython's state machine: pending,
running, cancelled, finished; ``wait``, ``as_completed`` and ``add_done_callback``
work) around one ordinary ``get`` run on a thread of ours, and awaitable through
``asyncio.wrap_future``.  Nothing here schedules tasks: the job thread calls the
backend's public ``get`` like any cell would.

* **Settings are captured at submit**: the resolved config (``config.snapshot()``,
  so a ``with config.set(...)`` scope in force counts, whether scopes are global or
  per context) and the call's keywords become explicit options of the job's ``get``;
  a mapping graph is copied (shallow), so later edits of the user's dict do not reach
  the job.  ``submit`` does nothing else: a 10,000-task graph returns in microseconds
  and is compiled in the job thread.
* **The job thread runs in a copy of the submitting context**: ipykernel keeps the
  cell's parent header in a context variable, so what the job's tasks print (on its
  own thread under ``sync``, on the threads backend's workers, which copy the caller's
  context; in worker processes, captured and written by the job thread as results
  come back: ``task_output.py``) goes to the submitting cell, not to whatever cell
  runs now.  The copy also
  sets ``_budget.BACKGROUND``: the job's runs yield to a foreground compute, and
  jobs share what is left in turn; threads, process workers and ``auto`` draw on one
  process-wide budget of ``num_workers`` (``schedulers/_budget.py``).
* **Cancelling reuses the interrupt path.**  :class:`JobCancelled` is a
  ``KeyboardInterrupt``; every backend already stops cleanly on one (drops unstarted
  tasks, replaces busy process workers, stops threads: tests/test_interrupts.py).
  ``cancel()`` makes the job's observer raise it at the next task event (a task
  boundary on any thread), raises it asynchronously in the job thread (a pure-Python
  task under ``sync``, a runner waiting on worker pipes), and, if the run has not
  stopped after ``KILL_AFTER`` seconds, kills the job's busy process workers so the
  runner wakes (they would be replaced by the interrupt path anyway).  A run on the
  local cluster is woken with a ``cancelled`` notice instead (``distributed/run.py``
  ``wake_run``): it releases its tasks and the cluster's workers cancel them.
* **Failures** keep the backend's record (``job.failure()``); the job's run does not
  rerun a remote failure itself (``rerun="never"``): ``job.debug()`` does it on the
  caller's thread, so ``%debug`` lands in the task's frame.
* **The stop button** interrupts the main thread only, so jobs go on; kernel shutdown
  and interpreter exit cancel every job (``atexit``, before the pool's own hook).

The progress view (``diagnostics/job_view.py``) is created on the submitting thread
(the cell, in a notebook) and updated by one ticker thread that only sets traits.
"""

from __future__ import annotations

from .job import Job, JobCancelled, JobList
from .session import cancel_all, drop, jobs, submit, submit_call

__all__ = ["Job", "JobCancelled", "JobList", "submit", "submit_call", "jobs", "drop", "cancel_all"]
