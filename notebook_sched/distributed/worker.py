"""A worker process of the local cluster: runs tasks, keeps their results, serves them.

::

    scheduler (client process)                     worker process
       |  compute/release/where/send/peers  ---->  receiver thread (never sends, never
       |                                             blocks but on ``lock``) updates the
       |                                             tables below, wakes executors
       |  <---- done batches, errors        ----   executor threads (slot 0 is the main
       |                                             thread): pop ready, run, store result
       |  <---- data, paused, stolen --------   sender thread: answers ``send``/``steal``
                                                   fetcher thread --get--> peer workers
                           peer workers --get-->   peer server (one thread per peer)

The sender, the peer servers and the fetcher live in ``transfers.py``.

State (all guarded by ``lock``; ``ready_cond``/``fetch_cond`` are conditions on it):

``data``     tid -> value: results computed here (*home* data, freed when the
             scheduler says ``release``) and *copies* fetched from peers.
``copies``   tid -> how many local tasks still read that copy; at zero it is dropped.
``tasks``    tid -> :class:`_Task` assigned here and not finished (waiting for inputs,
             ready, or running).  ``missing`` counts inputs not yet in ``data``.
``waiters``  input tid -> tasks waiting for it (produced here, or fetched).
``ready``    heap of ``(priority, tid)``: lowest first, so a reduction finishes one
             branch before starting the next.
``retries``  failed fetches to try again (``transfers.py``).
``outbox``   finished tasks not yet reported; flushed when the worker runs out of
             ready work, every FLUSH_SECONDS, or at MAX_BATCH.  Many small tasks thus
             cost one message, and a task made ready here runs without a round trip.

The receiver thread never writes to the scheduler connection: a worker always drains
what the scheduler sends, so the scheduler's blocking sends cannot deadlock with
ours.  Executors report results on the connection (under ``Channel.send_lock``).

Cancelling: ``release`` of a running task sets its cancel flag and interrupts the
thread running it - with SIGUSR1 for the main thread (so ``time.sleep`` and other
blocking calls stop at once), with an asynchronous exception for other threads.  The
shared array ``current`` holds the task each slot runs (-1 idle): the scheduler
reads it for its status view and, when this process dies, to know whom to blame.

The process ignores SIGINT (the client handles interrupts) and exits as soon as its
connection to the scheduler closes, so a killed client leaves no orphans.  A
heartbeat thread sends ``("heartbeat",)`` every ``settings["heartbeat"]`` seconds, so
the scheduler can tell a worker busy in a long task (heartbeats go on: a pure-Python
loop gives up the GIL every few milliseconds) from one that stopped answering.

A task that calls ``os.fork()`` (without exec): the child is a copy of this worker
with one thread, holding copies of the scheduler and peer sockets.  It must never
speak on them (its answer would be taken for the parent's) nor keep them open (the
scheduler would not see this worker's death).  ``register_at_fork`` points those
descriptors at /dev/null in every child, which is harmless to children that go on
to do their own work (multiprocessing's fork start method, daemons); and the
executor checks the pid after each task, before it takes a lock: a child that
comes back from the task into the worker's code exits at once (``os._exit``), its
result discarded.  The parent's result is the answer.
"""

from __future__ import annotations

import ctypes
import heapq
import os
import queue
import signal
import sys
import threading
import time
import traceback
from typing import Any

from ..engine import run_spec
from ..errors import dump_exception as _dump_exception
from . import protocol
from .listener import AuthListener
from .protocol import sizeof
from .transfers import Transfers, pack_values

FLUSH_SECONDS = 0.01
MAX_BATCH = 4096
_CANCEL_SIGNAL = getattr(signal, "SIGUSR1", None)


class TaskCancelled(BaseException):
    """Raised inside a running task whose result nobody wants any more."""


class _Task:
    __slots__ = ("tid", "spec", "deps", "priority", "missing", "send_back", "cancelled", "started")

    def __init__(self, tid, spec, deps, priority, send_back):
        self.tid = tid
        self.spec = spec
        self.deps = deps
        self.priority = priority
        self.missing = 0
        self.send_back = send_back
        self.cancelled = False
        self.started = False  # popped from ``ready`` (a task id may be queued twice)


class Worker(Transfers):
    def __init__(self, settings: dict):
        self.wid = settings["wid"]
        self.name = settings["name"]
        self.secret = settings["secret"]
        self.nthreads = settings["nthreads"]
        self.current = settings["current"]
        self.memory_limit = settings["memory_limit"]
        self.lock = threading.Lock()
        self.ready_cond = threading.Condition(self.lock)
        self.fetch_cond = threading.Condition(self.lock)
        self.data: dict = {}
        self.sizes: dict = {}
        self.bytes_held = 0
        self.paused = False
        self.copies: dict = {}
        self.tasks: dict = {}
        self.waiters: dict = {}
        self.ready: list = []
        self.outbox: list = []
        self.values: dict = {}
        self.last_flush = time.time()
        self.peers: dict = {}
        self.to_fetch: dict = {}
        self.fetching: set = set()
        self.running: list = [None] * self.nthreads
        self.in_task = [False] * self.nthreads
        self.idents: list = [0] * self.nthreads
        self.replies: queue.SimpleQueue = queue.SimpleQueue()
        self.heartbeat = settings.get("heartbeat")
        self.pid = os.getpid()  # checked before each message: forks from C run no hooks
        self.forked = False  # set in a forked child; checked after each task (cheaper)
        self.peer_channels: set = set()  # open to or from peers (for the fork guard)
        self.retries: list = []  # (due, wid, tids) of fetches that failed; under lock
        self.fetch_attempts: dict = {}  # tid -> failed fetches so far; under lock
        self.channel = protocol.connect(settings["address"], self.secret)
        self.server = AuthListener(
            protocol.listen_address(settings["directory"], f"{self.name}.sock"),
            self.secret,
            self._serve_peer,
            f"notebook_sched-{self.name}-peers",
        )
        self.handlers = {
            "compute": self._on_compute,
            "release": self._on_release,
            "where": self._on_where,
            "send": self.replies.put,
            "peers": self._on_peers,
            "steal": self._on_steal,
        }

    # -- life cycle ------------------------------------------------------------
    def start(self) -> None:
        self.channel.send(
            ("register", self.wid, self.name, os.getpid(), self.nthreads, self.server.address)
        )
        if hasattr(os, "register_at_fork"):  # no fork, no hook (Windows)
            os.register_at_fork(after_in_child=self._after_fork_in_child)
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

    def _after_fork_in_child(self) -> None:
        """In a child forked by a task: cut it off from our sockets (module docstring)."""
        self.forked = True
        fds = [self.channel.fd, self.server.sock.fileno()]
        fds += [channel.fd for channel in list(self.peer_channels)]
        try:
            null = os.open(os.devnull, os.O_RDWR)
        except OSError:
            return
        for fd in fds:
            if fd >= 0:
                try:
                    os.dup2(null, fd)
                except OSError:
                    pass
        os.close(null)

    def _receive_loop(self) -> None:
        handlers = self.handlers
        recv = self.channel.recv
        while True:
            try:
                message = recv()
            except (EOFError, OSError):
                _exit()  # the scheduler is gone: so are we
            if message is None:
                _exit()
            for op, items in message:
                handlers[op](items)

    # -- scheduler operations (receiver thread) --------------------------------
    def _on_compute(self, items: list) -> None:
        data, copies, tasks, waiters, ready = (
            self.data,
            self.copies,
            self.tasks,
            self.waiters,
            self.ready,
        )
        done_here = []
        with self.lock:
            pushed = False
            fetch = False
            for tid, spec, deps, priority, remote, send_back in items:
                if tid in data:  # a copy we fetched earlier becomes the home copy
                    copies.pop(tid, None)
                    done_here.append((tid, self.sizes.setdefault(tid, sizeof(data[tid]))))
                    continue
                task = _Task(tid, spec, deps, priority, send_back)
                tasks[tid] = task
                missing = 0
                for dep in deps:
                    if dep in data:
                        if dep in copies:
                            copies[dep] += 1
                    else:
                        missing += 1
                        users = waiters.get(dep)
                        if users is None:
                            waiters[dep] = [task]
                        else:
                            users.append(task)
                task.missing = missing
                if not missing:
                    heapq.heappush(ready, (priority, tid))
                    pushed = True
                for dep, wid in remote:
                    if dep not in data and dep not in self.fetching:
                        self._want(dep, wid)
                        fetch = True
            if done_here:
                now = time.time()
                for tid, nbytes in done_here:
                    self.outbox.append((tid, nbytes, now, now))
                    self._wake_users(tid)
                pushed = True
            if pushed:
                self.ready_cond.notify(self.nthreads)
            if fetch:
                self.fetch_cond.notify()

    def _on_release(self, tids: list) -> None:
        interrupt = []
        with self.lock:
            for tid in tids:
                task = self.tasks.pop(tid, None)
                if task is not None:
                    task.cancelled = True
                    self._forget_inputs(task)
                    for slot, running in enumerate(self.running):
                        if running is task:
                            interrupt.append(slot)
                if tid in self.data and tid not in self.copies:
                    del self.data[tid]
                    self.bytes_held -= self.sizes.pop(tid, 0)
            self._check_memory()
        for slot in interrupt:
            self._interrupt(slot)

    def _on_steal(self, tids: list) -> None:
        """Give back the tasks among ``tids`` that have not started (nor are awaited
        here); the answer goes out through the sender thread."""
        given = []
        with self.lock:
            for tid in tids:
                task = self.tasks.get(tid)
                if task is None or task.started or tid in self.waiters:
                    continue
                del self.tasks[tid]
                task.cancelled = True
                self._forget_inputs(task)
                given.append(tid)
        self.replies.put(("stolen", given))

    def _forget_inputs(self, task: _Task) -> None:
        """A cancelled task no longer waits for, or reads, its inputs."""
        for dep in task.deps:
            users = self.waiters.get(dep)
            if users is not None and task in users:
                users.remove(task)
                if not users:
                    del self.waiters[dep]
            elif dep in self.copies:
                self._drop_copy(dep)

    def _drop_copy(self, tid: int) -> None:
        left = self.copies[tid] - 1
        if left:
            self.copies[tid] = left
        else:
            del self.copies[tid]
            self.data.pop(tid, None)

    def _interrupt(self, slot: int) -> None:
        if slot == 0 and _CANCEL_SIGNAL is not None:
            signal.pthread_kill(threading.main_thread().ident, _CANCEL_SIGNAL)
        elif self.idents[slot]:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(self.idents[slot]), ctypes.py_object(TaskCancelled)
            )

    def _on_cancel_signal(self, signum, frame) -> None:
        task = self.running[0]
        if task is not None and task.cancelled and self.in_task[0]:
            raise TaskCancelled

    def _check_memory(self) -> None:
        """Pause (take no new tasks) above the memory limit.  Called under ``lock``."""
        if self.memory_limit is None:
            return
        paused = self.bytes_held > self.memory_limit
        if paused != self.paused:
            self.paused = paused
            self.replies.put(("paused", paused))

    # -- running tasks (executor threads) --------------------------------------
    def _execute_loop(self, slot: int) -> None:
        self.idents[slot] = threading.get_ident()
        while True:
            try:
                self._execute(slot)
            except TaskCancelled:  # arrived between tasks: nothing to undo
                self.in_task[slot] = False

    def _execute(self, slot: int) -> None:
        lock, ready, tasks, data = self.lock, self.ready, self.tasks, self.data
        current, running, in_task = self.current, self.running, self.in_task
        clock = time.time
        while True:
            with lock:
                while not ready:
                    if self.outbox:
                        batch = self._take_outbox()
                        lock.release()
                        try:
                            self._send_done(*batch)
                        finally:
                            lock.acquire()
                        continue
                    self.ready_cond.wait()
                tid = heapq.heappop(ready)[1]
                task = tasks.get(tid)
                if task is None or task.cancelled or task.started:
                    continue
                task.started = True
                running[slot] = task
                current[slot] = tid
            start = clock()
            error = None
            value = None
            try:
                in_task[slot] = True
                value = run_spec(task.spec, data)
                in_task[slot] = False
            except TaskCancelled:
                in_task[slot] = False
                task.cancelled = True
            except BaseException as exc:
                in_task[slot] = False
                error = exc
            if self.forked:
                os._exit(0)  # a child forked by the task came back here: see the docstring
            stop = clock()
            self._finished(slot, task, value, error, start, stop)

    def _finished(self, slot: int, task: _Task, value: Any, error, start: float, stop: float):
        with self.lock:
            self.running[slot] = None
            self.current[slot] = -1
            for dep in task.deps:
                if dep in self.copies:
                    self._drop_copy(dep)
            if task.cancelled:
                return
            if self.tasks.get(task.tid) is task:
                del self.tasks[task.tid]
            if error is None:
                self._store(task, value, start, stop)
                if not (
                    self.ready
                    and len(self.outbox) < MAX_BATCH
                    and stop - self.last_flush < FLUSH_SECONDS
                ):
                    batch = self._take_outbox()
                else:
                    batch = None
            else:
                batch = self._take_outbox()
        if error is not None:
            self._send_done(*batch)
            self._send_error(task.tid, error)
        elif batch is not None:
            self._send_done(*batch)

    def _store(self, task: _Task, value: Any, start: float, stop: float) -> None:
        tid = task.tid
        nbytes = sizeof(value)
        self.data[tid] = value
        self.sizes[tid] = nbytes
        self.bytes_held += nbytes
        self.outbox.append((tid, nbytes, start, stop))
        if task.send_back:
            self.values[tid] = value
        self._wake_users(tid)
        self._check_memory()

    def _wake_users(self, tid: int) -> None:
        users = self.waiters.pop(tid, None)
        if users:
            ready = self.ready
            for user in users:
                user.missing -= 1
                if not user.missing:
                    heapq.heappush(ready, (user.priority, user.tid))
            if self.nthreads > 1:
                self.ready_cond.notify(self.nthreads)

    def _take_outbox(self) -> tuple[list, dict | None]:
        batch, values = self.outbox, self.values
        self.outbox = []
        self.values = {}
        self.last_flush = time.time()
        return batch, values or None

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

    def _send_error(self, tid: int, exc: BaseException) -> None:
        text = "".join(traceback.format_exception(exc))
        head, buffers = protocol.dumps(("error", tid, _dump_exception(exc), text))
        self._send_frames(head, buffers)

    def _send_frames(self, head: bytes, buffers: list) -> None:
        if os.getpid() != self.pid:  # a forked child never speaks for this worker
            os._exit(0)
        try:
            self.channel.send_frames(head, buffers)
        except OSError:
            _exit()


def _exit() -> None:
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(0)


def main(settings: dict) -> None:
    """Entry point of a worker process (spawned by ``cluster.py``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ["NOTEBOOK_SCHED_WORKER"] = settings["name"]
    Worker(settings).start()
