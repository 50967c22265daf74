"""A worker process of the local cluster: runs tasks, keeps their results, serves them.

::

    scheduler (client process)                     worker process
       |  compute/release/where/send/peers  ---->  receiver thread (never sends, never
       |                                             blocks but on ``lock``) feeds the
       |                                             WorkerMachine, wakes executors
       |  <---- done batches, errors        ----   executor threads (slot 0 is the main
       |                                             thread): pop ready, run, store result
       |  <---- data, paused, stolen --------   sender thread: answers ``send``/``steal``
                                                   fetcher thread --get--> peer workers
                           peer workers --get-->   peer server (one thread per peer)

The sender, the peer servers and the fetcher live in ``transfers.py``.

State: a :class:`~notebook_sched.distributed.worker_state.WorkerMachine` (its
docstring describes the tables), guarded by ``lock`` (``ready_cond``/``fetch_cond``
are conditions on it).  Every thread here is a thin shell: it turns what it heard
(a message, a finished task, a peer's answer) into a stimulus, calls the machine
under ``lock``, wakes threads and queues replies as instructed while it still holds
the lock, and sends or interrupts after releasing it (``_handle``).

The receiver thread never writes to the scheduler connection: a worker always drains
what the scheduler sends, so the scheduler's blocking sends cannot deadlock with
ours.  Executors report results on the connection (under ``Channel.send_lock``).

Cancelling: ``release`` of a running task sets its cancel flag and interrupts the
thread running it - with SIGUSR1 for the main thread (so ``time.sleep`` and other
blocking calls stop at once), with an asynchronous exception for other threads.  The
shared array ``current`` holds the task each slot runs (-1 idle): the scheduler
reads it for its status view and, when this process dies, to know whom to blame.

An executor thread survives whatever its task does (the task runner catches it); if
our own code around a task raises there, the worker exits (code 1) rather than leave
that task running forever on a dead thread: the cluster replaces it, as after a crash.

A task that fails with ``MemoryError`` may leave the process poisoned (it lowered
its ``RLIMIT_AS``, leaked, fragmented the heap), so every later task here would fail
too: the worker starts no other task, reports what it finished and exits
(``_retire``); the cluster replaces it and recomputes what it held, as after a death.

The process ignores SIGINT (the client handles interrupts) and exits as soon as its
connection to the scheduler closes, so a killed client leaves no orphans.  A
heartbeat thread sends ``("heartbeat",)`` every ``settings["heartbeat"]`` seconds, so
the scheduler can tell a worker busy in a long task (heartbeats go on: a pure-Python
loop gives up the GIL every few milliseconds) from one that stopped answering.

A task that calls ``os.fork()`` (without exec): the child is a copy of this worker
with one thread, holding copies of the scheduler and peer sockets.  It must never
speak on them (its answer would be taken for the parent's) nor keep them open (the
scheduler would not see this worker's death).  The fork guard (``_forkguard.py``,
the process pool's workers' too) points those descriptors at /dev/null in every
child, which is harmless to children that go on to do their own work
(multiprocessing's fork start method, daemons); the executor checks its flag after
each task, before it takes a lock, and the sender the pid before each message: a
child that comes back from the task into the worker's code exits at once
(``os._exit``), its result discarded.  The parent's result is the answer.
"""

from __future__ import annotations

import ctypes
import os
import queue
import signal
import sys
import threading
import time
import traceback
from typing import Any

from .._forkguard import install as install_fork_guard
from .._forkguard import leave_if_forked
from .._forkguard import state as fork_state
from ..errors import dump_exception as _dump_exception
from ..measure import CLUSTER, process_meter
from ..task_output import install_per_thread
from ..task_runner import Failed, TaskCancelled, TaskRunner
from . import protocol
from .listener import AuthListener
from .transfers import Transfers, pack_values
from .worker_state import (
    WAKE_EXECUTORS,
    WAKE_FETCHER,
    Compute,
    Interrupt,
    Peers,
    Release,
    Reply,
    SendDone,
    SendError,
    Steal,
    Task,
    Where,
    WorkerMachine,
)

_CANCEL_SIGNAL = getattr(signal, "SIGUSR1", None)


def _compute(items: list) -> Compute:
    return Compute(items, time.time())


_STIMULI = {  # scheduler operation -> stimulus ("send" goes to the sender thread)
    "compute": _compute,
    "release": Release,
    "steal": Steal,
    "where": Where,
    "peers": Peers,
}


class Worker(Transfers):
    def __init__(self, settings: dict):
        self.wid = settings["wid"]
        self.name = settings["name"]
        self.secret = settings["secret"]
        self.nthreads = settings["nthreads"]
        self.current = settings["current"]
        self.lock = threading.Lock()  # guards ``machine`` (and nothing else)
        self.ready_cond = threading.Condition(self.lock)
        self.fetch_cond = threading.Condition(self.lock)
        self.machine = WorkerMachine(self.nthreads, settings["memory_limit"], time.time())
        self.in_task = [False] * self.nthreads
        self.idents: list = [0] * self.nthreads
        self.meter = process_meter()  # measures a sample of tasks (see _execute)
        self.streams = install_per_thread()  # tasks' prints go to their run (task_output)
        self.replies: queue.SimpleQueue = queue.SimpleQueue()
        self.heartbeat = settings.get("heartbeat")
        self.peer_channels: set = set()  # open to or from peers (for the fork guard)
        self.retiring = False  # a task ran out of memory here: run nothing more (_retire)
        self.channel = protocol.connect(settings["address"], self.secret)
        self.server = AuthListener(
            protocol.listen_address(settings["directory"], f"{self.name}.sock"),
            self.secret,
            self._serve_peer,
            f"notebook_sched-{self.name}-peers",
        )

    # -- life cycle ------------------------------------------------------------
    def start(self) -> None:
        self.channel.send(
            ("register", self.wid, self.name, os.getpid(), self.nthreads, self.server.address)
        )
        if hasattr(os, "register_at_fork"):  # no fork, no hook (Windows)
            install_fork_guard(self._guarded_fds)
        loops = [
            (self._receive_loop, "receiver"),
            (self._fetch_loop, "fetcher"),
            (self._reply_loop, "sender"),
        ]
        if self.heartbeat:
            loops.append((self._heartbeat_loop, "heartbeat"))
        for target, name in loops:
            threading.Thread(target=target, name=f"notebook_sched-{name}", daemon=True).start()
        for slot in range(1, self.nthreads):
            thread = threading.Thread(target=self._execute_loop, args=(slot,), daemon=True)
            thread.name = f"notebook_sched-task-{slot}"
            thread.start()
        if _CANCEL_SIGNAL is not None:
            signal.signal(_CANCEL_SIGNAL, self._on_cancel_signal)
        self._execute_loop(0)

    def _heartbeat_loop(self) -> None:
        beat = protocol.dumps(("heartbeat",))
        while True:
            time.sleep(self.heartbeat)
            self._send_frames(*beat)

    def _guarded_fds(self) -> list[int]:
        """The sockets a forked child must not speak on (``_forkguard.py``)."""
        fds = [self.channel.fd, self.server.sock.fileno()]
        return fds + [channel.fd for channel in list(self.peer_channels)]

    def _receive_loop(self) -> None:
        recv = self.channel.recv
        while True:
            try:
                message = recv()
            except (EOFError, OSError):
                _exit()  # the scheduler is gone: so are we
            except BaseException:
                # The message could not be loaded here (a task's function from a module
                # that fails to import in a worker, say). This thread is the worker's
                # only ear: dying quietly would hang every run. Say why and exit; the
                # cluster replaces the worker and, after repeated deaths, fails the task.
                print(
                    "notebook_sched worker: a message from the scheduler could not be "
                    "loaded in this process (a task's function or argument whose module "
                    "cannot be imported here?):",
                    file=sys.__stderr__,
                )
                traceback.print_exc(file=sys.__stderr__)
                _exit(1)
            if message is None:
                _exit()
            for op, items in message:
                if op == "send":
                    self.replies.put(items)  # answered by the sender thread
                else:
                    self._handle(_STIMULI[op](items))

    # -- applying the machine's instructions -----------------------------------
    def _handle(self, stimulus: Any) -> None:
        with self.lock:
            out = self.machine.handle(stimulus)
            self._under_lock(out)
        self._after_lock(out)

    def _under_lock(self, out) -> None:
        for instruction in out:
            if instruction is WAKE_EXECUTORS:
                self.ready_cond.notify(self.nthreads)
            elif instruction is WAKE_FETCHER:
                self.fetch_cond.notify()
            elif type(instruction) is Reply:  # queued in the order of the state changes
                self.replies.put(instruction.message)

    def _after_lock(self, out) -> None:
        for instruction in out:
            kind = type(instruction)
            if kind is SendDone:
                self._send_done(instruction.batch, instruction.values)
            elif kind is SendError:
                self._send_error(instruction.tid, instruction.exc)
            elif kind is Interrupt:
                self._interrupt(instruction.slot)

    # -- cancelling ------------------------------------------------------------
    def _interrupt(self, slot: int) -> None:
        if slot == 0 and _CANCEL_SIGNAL is not None:
            signal.pthread_kill(threading.main_thread().ident, _CANCEL_SIGNAL)
        elif self.idents[slot]:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(self.idents[slot]), ctypes.py_object(TaskCancelled)
            )

    def _on_cancel_signal(self, signum, frame) -> None:
        task = self.machine.running[0]
        if task is not None and task.cancelled and self.in_task[0]:
            raise TaskCancelled

    # -- running tasks (executor threads) --------------------------------------
    def _execute_loop(self, slot: int) -> None:
        self.idents[slot] = threading.get_ident()
        for stream in self.streams:
            stream.register()  # what this thread's tasks print is kept apart
        while True:
            try:
                self._execute(slot)
            except TaskCancelled:  # arrived between tasks: nothing to undo
                self.in_task[slot] = False
            except BaseException:  # ours, not the task's (the runner catches those)
                # A dead executor thread would leave its task running forever: the
                # worker dies instead, so the cluster replaces it and recomputes.
                # To the process's own stderr: sys.stderr is this thread's task capture.
                traceback.print_exc(file=sys.__stderr__)
                _exit(1)

    def _execute(self, slot: int) -> None:
        """Run tasks on executor thread ``slot`` through its TaskRunner, which measures
        a sample of them (every task after a long one, one in SAMPLE_EVERY otherwise)
        with the worker's TaskMeter: thread CPU, run-queue time and this process's
        busy-GIL share, sent with the task's times to any run that listens."""
        lock, machine, current, in_task = self.lock, self.machine, self.current, self.in_task
        next_task, clock = machine.next_task, time.time
        runner = TaskRunner(
            CLUSTER,
            hooks=machine.hooks,  # filled and emptied under lock; a get is atomic
            keys=machine.hook_keys,
            measure=True,
            timed=True,
            meter=self.meter,
        )
        run = runner.run_timed
        while True:
            with lock:
                while True:
                    task = None if self.retiring else next_task(slot)
                    if task is not None:
                        break
                    if machine.outbox:  # out of ready work: report what is done
                        batch = machine.take_outbox(clock())
                        lock.release()
                        try:
                            self._send_done(*batch)
                        finally:
                            lock.acquire()
                        continue
                    self.ready_cond.wait()
                current[slot] = task.tid
            try:
                in_task[slot] = True
                value = run(task.tid, task.spec, machine.data)
                in_task[slot] = False
            except TaskCancelled:  # landed just outside the task: cancelled all the same
                in_task[slot] = False
                value = Failed(TaskCancelled())
            if fork_state.forked:
                os._exit(0)  # a child forked by the task came back here: see the docstring
            self._send_output(task.tid)
            error = None
            if type(value) is Failed:
                error, value = value.exc, None
                if isinstance(error, TaskCancelled):
                    error = None
                    task.cancelled = True
                elif isinstance(error, MemoryError):
                    with lock:
                        self.retiring = True  # no other slot starts a task here now
            self._finished(slot, task, value, error, runner.start, runner.stop, runner.record)
            if self.retiring:
                self._retire()

    def _finished(
        self, slot: int, task: Task, value: Any, error, start: float, stop: float, measured=None
    ):
        with self.lock:
            self.current[slot] = -1
            out = self.machine.task_finished(slot, task, value, error, start, stop, measured)
            if out:
                self._under_lock(out)
        if out:
            self._after_lock(out)

    def _retire(self) -> None:
        """A task ran out of memory here (its error is sent): this process may stay
        poisoned (a task lowered its RLIMIT_AS, leaked, fragmented the heap), so it
        reports what it finished and exits; the cluster starts a fresh worker and
        recomputes what this one held, as after any worker's death."""
        with self.lock:
            batch = self.machine.take_outbox(time.time()) if self.machine.outbox else None
        if batch is not None:
            self._send_done(*batch)
        _exit()

    def _send_done(self, batch: list, values: dict | None) -> None:
        if not batch:
            return
        errors = []
        if values:
            packed, errors = pack_values(list(values.items()))
            if errors:
                bad = {item[0] for item in errors}
                batch = [item for item in batch if item[0] not in bad]
            values = dict(packed)
        if batch:
            self._send_frames(*protocol.dumps(("done", batch, values)))
        for tid, exc in errors:
            self._send_error(tid, exc)

    def _send_output(self, tid: int) -> None:
        """Send what task ``tid`` printed (before it is reported done), if anything."""
        stdout, stderr = self.streams
        out, err = stdout.take(), stderr.take()
        if out or err:
            self._send_frames(*protocol.dumps(("output", [(tid, out, err)])))

    def _send_error(self, tid: int, exc: BaseException) -> None:
        text = "".join(traceback.format_exception(exc))
        head, buffers = protocol.dumps(("error", tid, _dump_exception(exc), text))
        self._send_frames(head, buffers)

    def _send_frames(self, head: bytes, buffers: list) -> None:
        leave_if_forked()  # a forked child never speaks for this worker (forks from C too)
        try:
            self.channel.send_frames(head, buffers)
        except OSError:
            _exit()


def _exit(code: int = 0) -> None:
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def main(settings: dict) -> None:
    """Entry point of a worker process (spawned by ``cluster.py``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ["NOTEBOOK_SCHED_WORKER"] = settings["name"]
    Worker(settings).start()
