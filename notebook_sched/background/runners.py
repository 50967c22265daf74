"""The job threads: a few runner threads fed by a queue (see :class:`Runners`)."""

from __future__ import annotations

import queue
import threading
from typing import Any

__all__ = ["Runners", "runners"]


class Runners:
    """The job threads: ``submit`` hands a job to an idle runner through a queue, so it
    never waits for a thread to start (``Thread.start`` waits until the new thread runs,
    tens of ms on a loaded machine).  A runner that takes a job starts a spare if none
    is idle, and a runner idle for ``IDLE_EXIT`` seconds exits (nothing lingers)."""

    IDLE_EXIT = 1.0

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.lock = threading.Lock()  # guards idle, count
        self.idle = 0  # runners waiting on the queue
        self.count = 0

    def run(self, job: Any, context: Any) -> None:
        with self.lock:  # put under the lock: an idle runner leaves only on an empty queue
            self.queue.put((job, context))
            start = self.idle == 0
            if start:
                self.idle += 1  # the new runner counts as idle until it takes a job
        if start:
            self._spawn()

    def _spawn(self) -> None:
        with self.lock:
            self.count += 1
            number = self.count
        thread = threading.Thread(
            target=self._loop, name=f"notebook_sched-jobs-{number}", daemon=True
        )
        thread.start()

    def _loop(self) -> None:
        me = threading.current_thread()
        while True:
            try:
                job, context = self.queue.get(timeout=self.IDLE_EXIT)
            except queue.Empty:
                with self.lock:
                    if self.queue.empty():
                        self.idle -= 1
                        return
                continue
            with self.lock:
                self.idle -= 1
                spare = self.idle == 0
                if spare:
                    self.idle += 1
            if spare:
                self._spawn()  # so the next submit finds a runner waiting
            me.name = f"notebook_sched-{job.name}"
            context.run(job._run)
            del job, context  # an idle runner must not keep the last job (its result) alive
            me.name = "notebook_sched-jobs-idle"
            with self.lock:
                self.idle += 1


runners = Runners()
