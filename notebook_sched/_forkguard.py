"""Make a child forked by a task harmless to the worker that forked it.

A task may call ``os.fork()`` without exec.  The child is a copy of the worker with
one thread and copies of its descriptors; if it returns from the task into the
worker's loop it would send "its" result on the worker's channel, where the caller
takes it for the parent's (a wrong answer, or a confused run).  :func:`install`,
called once in a worker process, registers an at-fork hook that, in every child:

* sets :data:`state.forked`, which the worker's loop reads after each task (a flag,
  not a ``getpid`` syscall per task): a child that comes back exits at once with
  ``os._exit(0)``, its result discarded;
* points the worker's channel descriptors at /dev/null, so even code that never
  returns to the loop cannot talk on them, and the caller still sees the worker's
  own end close when the worker dies.  Children that go on with their own work
  (multiprocessing's fork start method, daemons) are unaffected.

Forks made from C run no at-fork hooks, so senders also compare :func:`os.getpid`
with the worker's pid before each message (:func:`is_forked_child`).  Both kinds of
worker use this module: the process pool's (``schedulers/_worker.py``) and the local
cluster's (``distributed/worker.py``, whose descriptors include its peers' sockets).
"""

from __future__ import annotations

import os
from collections.abc import Callable

__all__ = ["install", "state", "is_forked_child", "leave_if_forked"]


class _State:
    __slots__ = ("pid", "forked", "fds")

    def __init__(self) -> None:
        self.pid = -1  # the worker's pid once installed
        self.forked = False  # True in a child forked from the worker
        self.fds: Callable[[], list[int]] = list


state = _State()


def install(fds: Callable[[], list[int]]) -> None:
    """Guard this (worker) process; ``fds()`` lists the descriptors to blind in children."""
    first = state.pid == -1
    state.pid = os.getpid()
    state.forked = False
    state.fds = fds
    if first:
        os.register_at_fork(after_in_child=_after_fork_in_child)


def _after_fork_in_child() -> None:
    if state.pid == -1:
        return
    state.forked = True
    try:
        null = os.open(os.devnull, os.O_RDWR)
    except OSError:
        return
    try:
        for fd in state.fds():
            if fd >= 0:
                try:
                    os.dup2(null, fd)
                except OSError:
                    pass
    finally:
        os.close(null)


def is_forked_child() -> bool:
    """True in a process forked from a guarded worker (by a hook or by C code)."""
    return state.forked or (state.pid != -1 and os.getpid() != state.pid)


def leave_if_forked() -> None:
    """Exit at once, silently, if this is a forked child back in the worker's code."""
    if is_forked_child():
        os._exit(0)
