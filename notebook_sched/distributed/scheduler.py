"""The scheduler's I/O thread: sockets in, :class:`SchedulerState` stimuli, messages out.

::

    client threads --post(fn)--> inbox --+
                                         |     one I/O thread, the only one that
    worker channels --messages-----------+-->  touches ``state``:  read what is ready,
                                               run the inbox, dispatch, then send one
    workers <--one message per worker------+   message per worker and hand notices to
    client objects <--notify(kind, payload)+   the client objects they name

The I/O thread waits on an ``epoll``/``kqueue`` selector holding every worker's
channel and the read end of a wake-up pipe.  ``post`` appends a function to the inbox
and writes to the pipe only if the loop may be asleep (``_sleeping``), so a burst of
client calls costs one wake-up.  Messages that are already readable are all taken
(up to MAX_ROUNDS rounds) before anything is sent, so many finished tasks produce one
dispatch and one message per worker.

Values (results sent back, gathered data) arrive as *packed* values (see
``protocol.pack``): the I/O thread never unpickles user objects; the client thread
that asked for them does.

A worker channel that reaches EOF means a dead worker: the loop asks the cluster for
its exit code and the tasks it was executing (shared memory), tells the state, which
reschedules, and the cluster starts a replacement.

Liveness (``worker_timeout`` seconds, None: off): workers send a heartbeat every
HEARTBEAT_FRACTION of it from a thread of their own, so a task that computes or
sleeps for hours does not silence them; any message counts.  Every quarter of the
timeout the loop looks for workers not heard from for longer - stopped (SIGSTOP),
wedged in native code holding the GIL, swapped out - and has the cluster kill them:
their tasks are retried elsewhere and the death counts towards KilledWorker.  The
same bound is set on each worker socket (``SO_RCVTIMEO``/``SO_SNDTIMEO``), so a worker
stopped in the middle of a message cannot block the I/O thread either.  A message
that cannot be read (a bad frame, an unknown operation) is treated the same way: the
worker is killed, never trusted again.  The same tick asks the cluster about
workers that have not registered yet (``check_starting``): one that exited or hung
while starting is replaced, a few times; when none can be started and no worker is
left, everything waiting is cancelled with the reason rather than left to wait.

The listener authenticates connections (``listener.py``); the first message of a
worker is ``register`` (read within HANDSHAKE_SECONDS), after which the channel is
handed to the loop through the inbox.
"""

from __future__ import annotations

import logging
import os
import select
import selectors
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from . import protocol
from .listener import HANDSHAKE_SECONDS, AuthListener, set_socket_timeout
from .state import SchedulerState
from .stimuli import Reset, TaskUnsendable, WorkerJoined, WorkerLost, from_worker

__all__ = ["Scheduler"]

logger = logging.getLogger("notebook_sched.distributed")

MAX_ROUNDS = 16
CALL_TIMEOUT = 30.0
HEARTBEAT_FRACTION = 0.2  # workers send a heartbeat every worker_timeout * this
TICK_SECONDS = 1.0  # at most this long between checks of starting and silent workers


class Scheduler:
    """The listener, the worker channels and the state, driven by one thread.

    ``hooks`` (the cluster) provides ``worker_joined(wid, pid)``,
    ``worker_lost(wid) -> (exit code, executing tids)``, ``kill_worker(wid)`` and
    ``check_starting() -> reason or None`` (None: workers can still be started).
    """

    def __init__(
        self, directory: str | None, secret: bytes, hooks: Any, worker_timeout: float | None = None
    ):
        self.state = SchedulerState()
        self.hooks = hooks
        self.worker_timeout = worker_timeout
        self.channels: dict[int, protocol.Channel] = {}
        self.last_heard: dict[int, float] = {}  # wid -> monotonic time of its last message
        self.inbox: deque = deque()
        self._sleeping = False
        self._closing = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        self.listener = AuthListener(
            protocol.listen_address(directory, "scheduler.sock"),
            secret,
            self._on_channel,
            "notebook_sched-scheduler-listener",
        )
        self.address = self.listener.address
        self.thread = threading.Thread(
            target=self._run, name="notebook_sched-scheduler", daemon=True
        )
        self.thread.start()

    # -- from other threads ----------------------------------------------------
    def post(self, fn: Callable[[SchedulerState], Any]) -> None:
        """Run ``fn(state)`` on the I/O thread soon."""
        self.inbox.append(fn)
        if self._sleeping:
            try:
                os.write(self._wake_w, b"x")
            except (BlockingIOError, OSError):
                pass

    def call(self, fn: Callable[[SchedulerState], Any], timeout: float = CALL_TIMEOUT) -> Any:
        """Run ``fn(state)`` on the I/O thread and return its result."""
        if threading.current_thread() is self.thread:
            return fn(self.state)
        if not self.thread.is_alive():
            raise RuntimeError("the cluster's scheduler thread is not running")
        done = threading.Event()
        box: list = []

        def run(state: SchedulerState) -> None:
            try:
                box.append((True, fn(state)))
            except BaseException as exc:
                box.append((False, exc))
            finally:
                done.set()

        self.post(run)
        if not done.wait(timeout):
            raise TimeoutError("the scheduler thread did not answer (is it stuck or closed?)")
        ok, value = box[0]
        if not ok:
            raise value
        return value

    def close(self) -> None:
        """Tell the workers to exit, stop the loop and the listener."""
        if self._closing:
            return
        self.listener.close()
        self.post(self._begin_close)
        self.thread.join(5)
        self.selector.close()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    # -- the loop --------------------------------------------------------------
    def _on_channel(self, channel: protocol.Channel) -> None:
        """A new authenticated connection (handshake thread): expect ``register``."""
        try:
            set_socket_timeout(channel.fd, HANDSHAKE_SECONDS)
            message = channel.recv()
            set_socket_timeout(channel.fd, self.worker_timeout)
        except Exception as exc:  # silent, cut off or garbled: not one of our workers
            logger.warning("notebook_sched scheduler: dropped a connection (%r)", exc)
            channel.close()
            return
        if type(message) is not tuple or message[0] != "register" or len(message) != 6:
            logger.warning("notebook_sched scheduler: dropped a connection that did not register")
            channel.close()
            return
        self.post(lambda state: self._add_worker(channel, message))

    def _add_worker(self, channel: protocol.Channel, message: tuple) -> None:
        _, wid, name, pid, nthreads, address = message
        if self._closing:
            channel.close()
            return
        self.channels[wid] = channel
        self.last_heard[wid] = time.monotonic()
        self.selector.register(channel.fd, selectors.EVENT_READ, wid)
        self.state.handle(WorkerJoined(wid, name, nthreads, address))
        self.hooks.worker_joined(wid, pid)

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException:  # logged, and waiting clients see the thread is gone
            logger.exception(
                "notebook_sched scheduler thread crashed; its last stimuli:\n%s",
                self.state.format_log(),
            )
        finally:
            for channel in self.channels.values():
                channel.close()
            self.channels.clear()

    def _loop(self) -> None:
        select = self.selector.select
        inbox = self.inbox
        state = self.state
        every = TICK_SECONDS if self.worker_timeout is None else self.worker_timeout / 4
        every = min(every, TICK_SECONDS)
        next_check = 0.0
        while not self._closing:
            self._sleeping = True
            events = select(0 if inbox else every)
            self._sleeping = False
            if time.monotonic() >= next_check:
                self._tick()
                next_check = time.monotonic() + every
            rounds = 0
            while events:
                for key, _ in events:
                    if key.data is None:
                        try:
                            os.read(self._wake_r, 4096)
                        except BlockingIOError:
                            pass
                    else:
                        self._read(key.data)
                rounds += 1
                if rounds >= MAX_ROUNDS:
                    break
                events = select(0)
            while inbox:
                fn = inbox.popleft()
                try:
                    fn(state)
                except Exception:
                    logger.exception(
                        "notebook_sched scheduler: a request failed; the last stimuli:\n%s",
                        state.format_log(10),
                    )
            state.dispatch()
            self._flush()

    def _read(self, wid: int) -> None:
        channel = self.channels.get(wid)
        if channel is None:
            return
        try:
            message = channel.recv()
            self.last_heard[wid] = time.monotonic()
            stimulus = from_worker(wid, message)  # None: a heartbeat
        except BlockingIOError:  # stopped in the middle of a message (SO_RCVTIMEO)
            self.hooks.kill_worker(wid)
            self._lost(wid, hung=self.worker_timeout)
            return
        except (EOFError, OSError):
            self._lost(wid)
            return
        except Exception as exc:  # an absurd length prefix, an unknown operation...
            self._broken(wid, f"sent a message that cannot be read ({exc!r:.200})")
            return
        if stimulus is not None:
            self.state.handle(stimulus)

    def _broken(self, wid: int, why: str) -> None:
        logger.error("notebook_sched scheduler: %s %s; it is replaced", self._name(wid), why)
        self.hooks.kill_worker(wid)
        self._lost(wid)

    def _name(self, wid: int) -> str:
        worker = self.state.workers.get(wid)
        return worker.name if worker is not None else f"worker {wid}"

    def _tick(self) -> None:
        """Every TICK_SECONDS at most: workers that start, workers that went silent."""
        reason = self.hooks.check_starting()
        if reason is not None and not self.state.workers:
            self.state.handle(Reset(reason))  # nothing could ever run what is waiting
        if self.worker_timeout is None:
            return
        now = time.monotonic()
        timeout = self.worker_timeout
        for wid, heard in list(self.last_heard.items()):
            silent = now - heard
            if silent > timeout and wid in self.channels and not _readable(self.channels[wid]):
                logger.warning(
                    "notebook_sched scheduler: %s sent nothing for %.1f s (worker_timeout=%s); "
                    "killing it, its tasks go to other workers",
                    self._name(wid),
                    silent,
                    timeout,
                )
                self.hooks.kill_worker(wid)
                self._lost(wid, hung=silent)

    def _lost(self, wid: int, hung: float | None = None) -> None:
        """``wid``'s channel is finished (closed, broken, or the worker was killed)."""
        channel = self.channels.pop(wid, None)
        self.last_heard.pop(wid, None)
        if channel is None:
            return
        try:
            self.selector.unregister(channel.fd)
        except (KeyError, ValueError):
            pass
        channel.close()
        exit_code, executing = self.hooks.worker_lost(wid)
        self.state.handle(WorkerLost(wid, exit_code, executing, hung))

    def _flush(self) -> None:
        state = self.state
        for _ in range(8):  # failures found while pickling may add operations
            outbox = state.take_outbox()
            if not outbox:
                break
            broken = []
            for wid, ops in outbox.items():
                channel = self.channels.get(wid)
                if channel is not None and not self._send(wid, channel, ops):
                    broken.append(wid)
            for wid in broken:  # part of a message may be out: the channel is unusable
                self._broken(wid, "does not read its messages")
            state.dispatch()
        for target, kind, payload in state.take_notices():
            try:
                target.notify(kind, payload)
            except Exception:
                logger.exception("notebook_sched scheduler: a notice failed")

    def _send(self, wid: int, channel: protocol.Channel, ops: list) -> bool:
        try:
            head, buffers = protocol.dumps(ops)
        except Exception:
            ops = self._drop_unsendable(ops)
            head, buffers = protocol.dumps(ops)
        try:
            channel.send_frames(head, buffers)
        except BlockingIOError:
            return False  # stuck for worker_timeout (SO_SNDTIMEO)
        except OSError:
            pass  # the worker died; its EOF is handled by _read
        return True

    def _drop_unsendable(self, ops: list) -> list:
        """Fail the tasks that cannot be pickled; keep the rest of the message."""
        kept = []
        for op, items in ops:
            if op != "compute":
                kept.append((op, items))
                continue
            good = []
            for item in items:
                try:
                    protocol.dumps(item)
                    good.append(item)
                except Exception as exc:
                    self.state.handle(TaskUnsendable(item[0], exc))
            kept.append((op, good))
        return kept

    def _begin_close(self, state: SchedulerState) -> None:
        self._closing = True
        for channel in self.channels.values():
            try:
                channel.send(None)
            except OSError:
                pass


def _readable(channel: protocol.Channel) -> bool:
    """Whether a message (say, a heartbeat) waits unread: the worker spoke; we were busy."""
    poller = select.poll()  # not select.select: file descriptors past 1023 are fine
    poller.register(channel.fd, select.POLLIN)
    return bool(poller.poll(0))
