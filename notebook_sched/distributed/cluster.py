"""``LocalCluster``: a scheduler thread in this process and worker processes around it.

::

    this process                                   worker processes (spawned)
    +--------------------------------+             +---------------------------+
    | LocalCluster                   |  spawn      | worker.main               |
    |   secret (32 random bytes),    | ----------> |  connects to the scheduler|
    |   private 0700 temp directory  |             |  with the secret, listens |
    |   processes, shared `current`  |             |  for peers in the same    |
    | Scheduler (I/O thread)         | <=========> |  directory                |
    |   listens on <dir>/scheduler   |  AF_UNIX    +---------------------------+
    +--------------------------------+

The secret travels to each worker through the spawn pipe (never argv or the
environment).  Sockets live in a directory only this user can enter (``sockdir``:
short enough for AF_UNIX, removed on close, on SIGTERM, and by the next cluster if
this process was killed), and every connection must also prove the secret before
anything it sends is unpickled.

Workers are spawned (not forked): safe in a kernel that already runs threads.  The
cluster is ready when every worker has registered.  When a worker dies the scheduler
calls :meth:`LocalCluster.worker_lost`, which reaps it, reports its exit code and the
tasks it was executing, and starts a replacement.  ``close`` stops the scheduler
(workers exit when their connection closes), joins the processes, kills stragglers
and removes the directory; clusters still open at interpreter exit are closed then.

``_lock`` guards ``_processes``, ``_pids``, ``_next_wid`` and ``status``; ``_joined``
(a condition on it) is notified when a worker registers.
"""

from __future__ import annotations

import atexit
import html
import multiprocessing
import multiprocessing.util  # noqa: F401 - registers its exit handler before ours
import os
import secrets
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

from .. import _spawn, config
from ..engine import check_positive
from ..errors import (
    exit_if_bootstrapping,
    note_out_of_fds,
    raise_if_main_guard,
)
from . import protocol, sockdir, worker
from .scheduler import HEARTBEAT_FRACTION, Scheduler

__all__ = ["LocalCluster", "WorkerInfo"]

_context = multiprocessing.get_context("spawn")
START_TIMEOUT = 60.0
MAX_START_FAILURES = 3  # replacements in a row that die before registering, then give up


@dataclass
class WorkerInfo:
    """What one worker is doing (a snapshot)."""

    name: str
    pid: int | None
    status: str  # "running", "paused" (over its memory limit) or "starting"
    nthreads: int
    running: list = field(default_factory=list)  # keys of the tasks executing now
    queued: int = 0  # tasks assigned to it and not yet running
    bytes_held: int = 0  # bytes of the results it keeps
    results_held: int = 0
    memory_limit: int | None = None

    def __str__(self) -> str:
        running = ", ".join(repr(k) for k in self.running[:3]) or "-"
        if len(self.running) > 3:
            running += ", ..."
        return (
            f"{self.name:<10} pid {self.pid or '?':<7} {self.status:<8} running {running}; "
            f"{self.queued} queued; {self.results_held} results, "
            f"{protocol.format_bytes(self.bytes_held)}"
        )


class _Proc:
    __slots__ = ("wid", "name", "process", "current", "pid", "registered", "spawned")

    def __init__(self, wid: int, name: str, process, current):
        self.wid = wid
        self.name = name
        self.process = process
        self.current = current
        self.pid = None
        self.registered = False
        self.spawned = time.monotonic()


class LocalCluster:
    """A scheduler (a thread here) and ``n_workers`` worker processes on this machine.

    ``n_workers`` defaults to one per CPU; each runs ``threads_per_worker`` tasks at
    a time.  ``memory_limit`` (bytes, or a size like ``"2GB"``) per worker: above it,
    by the size of the results it holds, a worker takes no new tasks.
    ``worker_timeout`` (seconds; default ``config.get("worker_timeout")``, 30 s; None:
    off): a worker silent that long - no heartbeat, no message: stopped, or wedged in
    native code holding the GIL - is killed and replaced, and its tasks run elsewhere.
    A worker busy in a long task keeps sending heartbeats.
    """

    def __init__(
        self,
        n_workers: int | None = None,
        threads_per_worker: int = 1,
        memory_limit: int | str | None = None,
        worker_timeout: float | None | str = "config",
    ):
        exit_if_bootstrapping()  # a worker importing a main script without a guard
        self.n_workers = check_positive("n_workers", n_workers, os.cpu_count() or 1)
        self.threads_per_worker = check_positive("threads_per_worker", threads_per_worker, 1)
        self.memory_limit = protocol.parse_bytes(memory_limit)
        if worker_timeout == "config":
            worker_timeout = config.get("worker_timeout")
        self.worker_timeout = config.validate("worker_timeout", worker_timeout)  # same rule
        self.status = "starting"
        self._lock = threading.Lock()
        self._joined = threading.Condition(self._lock)
        self._processes: dict[int, _Proc] = {}
        self._next_wid = 0
        self._start_failures: list = []  # (name, exit code) since a worker last registered
        self._secret = secrets.token_bytes(32)
        sockdir.sweep()  # directories left by clusters of processes that were killed
        self._directory = sockdir.private_dir()
        _directories.add(self._directory)
        sockdir.install_sigterm_cleanup(lambda: list(_directories))
        try:
            self.scheduler = Scheduler(self._directory, self._secret, self, self.worker_timeout)
            for _ in range(self.n_workers):
                self._spawn()
            self._wait_for_workers(self.n_workers)
        except BaseException as exc:
            self.close()  # what the failed start made: processes, sockets, the directory
            if isinstance(exc, OSError):
                note_out_of_fds(exc, "a local cluster", self.n_workers)
            raise
        self.status = "running"
        _open_clusters.add(self)

    # -- workers ---------------------------------------------------------------
    def _spawn(self) -> None:
        with self._lock:
            wid = self._next_wid
            self._next_wid += 1
        name = f"worker-{wid}"
        current = _context.RawArray("q", [-1] * self.threads_per_worker)
        settings = {
            "wid": wid,
            "name": name,
            "address": self.scheduler.address,
            "secret": self._secret,
            "nthreads": self.threads_per_worker,
            "current": current,
            "memory_limit": self.memory_limit,
            "directory": self._directory,
            "heartbeat": None
            if self.worker_timeout is None
            else self.worker_timeout * HEARTBEAT_FRACTION,
        }
        process = _context.Process(
            target=worker.main,
            args=(settings,),
            name=f"notebook_sched-{name}",
            daemon=False,  # tasks may start process pools of their own
        )
        proc = _Proc(wid, name, process, current)
        with self._lock:  # before start: the worker may register at once
            self._processes[wid] = proc
        _spawn.start(process)
        proc.pid = process.pid

    def _wait_for_workers(self, count: int, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        with self._joined:
            while sum(p.registered for p in self._processes.values()) < count:
                dead = [p for p in self._processes.values() if p.process.exitcode is not None]
                for proc in dead:
                    raise_if_main_guard(proc.process.exitcode)
                if dead and not any(p.registered for p in dead):
                    codes = ", ".join(f"{p.name}: {p.process.exitcode}" for p in dead)
                    raise RuntimeError(
                        f"LocalCluster: worker processes exited while starting ({codes}). "
                        f"Their error output is above; run the computation with "
                        f"scheduler='processes' or 'sync' to see whether it starts there."
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"LocalCluster: only {sum(p.registered for p in self._processes.values())}"
                        f" of {count} workers started within {timeout:.0f} s."
                    )
                self._joined.wait(min(left, 0.05))

    def worker_joined(self, wid: int, pid: int) -> None:
        """Scheduler hook (I/O thread): worker ``wid`` registered."""
        with self._joined:
            proc = self._processes.get(wid)
            if proc is not None:
                proc.registered = True
            self._start_failures.clear()
            self._joined.notify_all()

    def check_starting(self) -> str | None:
        """Scheduler hook (I/O thread, every tick): replace workers that exited (or hung
        for START_TIMEOUT) before registering.  Returns why no worker can be started,
        after MAX_START_FAILURES in a row; None while there is hope."""
        with self._lock:
            if self.status != "running":
                return None
            starting = [p for p in self._processes.values() if not p.registered]
        for proc in starting:
            code = proc.process.exitcode
            if code is None:
                if time.monotonic() - proc.spawned > START_TIMEOUT:
                    proc.process.kill()  # seen as exited at the next tick
                continue
            with self._lock:
                self._processes.pop(proc.wid, None)
                self._start_failures.append((proc.name, code))
                retry = len(self._start_failures) <= MAX_START_FAILURES
            if retry:
                self._spawn()
        with self._lock:
            failures = list(self._start_failures)
        if len(failures) <= MAX_START_FAILURES:
            return None
        codes = ", ".join(f"{name}: exit code {code}" for name, code in failures)
        return (
            f"no worker process could be started ({codes}); their error output is above. "
            f"Close this cluster and start a new one, or compute with scheduler='processes' "
            f"or 'sync' to see whether the tasks' environment imports there."
        )

    def kill_worker(self, wid: int) -> None:
        """Scheduler hook (I/O thread): ``wid`` does not answer; SIGKILL it (which also
        ends a stopped process)."""
        with self._lock:
            proc = self._processes.get(wid)
        if proc is not None and proc.process.exitcode is None:
            proc.process.kill()

    def worker_lost(self, wid: int) -> tuple[int | None, list]:
        """Scheduler hook (I/O thread): ``wid``'s connection closed.  Reap it, start a
        replacement; returns its exit code and the tasks it was executing."""
        with self._lock:
            proc = self._processes.pop(wid, None)
            closing = self.status in ("closing", "closed")
        if proc is None:
            return None, []
        executing = [tid for tid in proc.current if tid >= 0]
        proc.process.join(1.0)
        if proc.process.exitcode is None:
            proc.process.kill()
            proc.process.join(1.0)
        if not closing:
            self._spawn()
        return proc.process.exitcode, executing

    def executing(self) -> list[tuple[str, int]]:
        """``(worker name, task id)`` of every task executing now (shared memory)."""
        with self._lock:
            procs = list(self._processes.values())
        return [(p.name, tid) for p in procs for tid in p.current if tid >= 0]

    @property
    def threads(self) -> list[threading.Thread]:
        """The threads this cluster runs in this process (scheduler I/O, listener)."""
        return [self.scheduler.thread, self.scheduler.listener.thread]

    @property
    def pids(self) -> list[int]:
        with self._lock:
            return [p.pid for p in self._processes.values()]

    @property
    def workers(self) -> list[WorkerInfo]:
        """A snapshot of every worker's state."""
        with self._lock:
            procs = sorted(self._processes.values(), key=lambda p: p.wid)
        if self.status == "closed":
            return []

        def collect(state) -> list:
            summary = state.worker_summary()
            infos = []
            for proc in procs:
                running = []
                for tid in list(proc.current):
                    ts = state.tasks.get(tid) if tid >= 0 else None
                    if ts is not None:
                        running.append(ts.key)
                if proc.wid not in summary:
                    infos.append(WorkerInfo(proc.name, proc.pid, "starting", len(proc.current)))
                    continue
                processing, nbytes, held, paused = summary[proc.wid]
                infos.append(
                    WorkerInfo(
                        proc.name,
                        proc.pid,
                        "paused" if paused else "running",
                        len(proc.current),
                        running,
                        max(0, processing - len(running)),
                        nbytes,
                        held,
                        self.memory_limit,
                    )
                )
            return infos

        return self.scheduler.call(collect)

    # -- life cycle ------------------------------------------------------------
    def restart(self) -> None:
        """Kill every worker and start fresh ones; every future is cancelled."""
        if self.status != "running":
            raise RuntimeError(f"cannot restart a cluster that is {self.status}")
        self.scheduler.call(lambda state: state.reset("cancelled by a restart of the cluster"))
        with self._lock:
            procs = list(self._processes.values())
        for proc in procs:
            proc.process.kill()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            with self._lock:
                fresh = [p for p in self._processes.values() if p not in procs and p.registered]
            if len(fresh) >= self.n_workers:
                return
            if time.monotonic() > deadline:
                raise TimeoutError("LocalCluster.restart: the new workers did not start")
            time.sleep(0.01)

    def close(self) -> None:
        """Stop the scheduler and the workers; free the socket directory."""
        with self._lock:
            if self.status in ("closing", "closed"):
                return
            self.status = "closing"
        scheduler = getattr(self, "scheduler", None)
        if scheduler is not None:
            try:
                scheduler.call(lambda state: state.reset("the cluster was closed"), timeout=5)
            except Exception:
                pass
            scheduler.close()
        with self._lock:
            procs = list(self._processes.values())
            self._processes.clear()
        procs = [p for p in procs if p.process.pid is not None]  # started (see _spawn)
        deadline = time.monotonic() + 2.0
        for proc in procs:
            proc.process.join(max(0.0, deadline - time.monotonic()))
        for proc in procs:
            if proc.process.exitcode is None:
                proc.process.kill()
                proc.process.join(1.0)
        sockdir.remove_dir(self._directory)
        _directories.discard(self._directory)
        self.status = "closed"
        _open_clusters.discard(self)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- views -----------------------------------------------------------------
    def _summary(self) -> str:
        limit = protocol.format_bytes(self.memory_limit)
        threads = "thread" if self.threads_per_worker == 1 else "threads"
        return (
            f"LocalCluster: {self.n_workers} workers, {self.threads_per_worker} {threads} "
            f"each, memory limit {limit}, {self.status}"
        )

    def __repr__(self) -> str:
        return (
            f"<LocalCluster workers={self.n_workers} threads_per_worker="
            f"{self.threads_per_worker} memory_limit={protocol.format_bytes(self.memory_limit)}"
            f" status={self.status}>"
        )

    def __str__(self) -> str:
        lines = [self._summary()]
        if self.status == "running":
            lines += [f"  {info}" for info in self.workers]
        return "\n".join(lines)

    def _repr_pretty_(self, printer, cycle: bool) -> None:
        printer.text(repr(self) if cycle else str(self))

    def _repr_html_(self) -> str:
        rows = []
        if self.status == "running":
            for info in self.workers:
                running = ", ".join(html.escape(repr(k)) for k in info.running[:3]) or "-"
                rows.append(
                    f"<tr><td>{html.escape(info.name)}</td><td>{info.pid}</td>"
                    f"<td>{info.status}</td><td>{running}</td><td>{info.queued}</td>"
                    f"<td>{info.results_held}</td>"
                    f"<td>{protocol.format_bytes(info.bytes_held)}</td></tr>"
                )
        head = "".join(
            f"<th>{h}</th>"
            for h in ("worker", "pid", "status", "running", "queued", "results", "held")
        )
        return (
            f"<div><strong>{html.escape(self._summary())}</strong>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
        )


_open_clusters: weakref.WeakSet = weakref.WeakSet()
_directories: set = set()  # socket directories of clusters not closed yet (for SIGTERM)


def _close_all() -> None:
    for cluster in list(_open_clusters):
        try:
            cluster.close()
        except Exception:
            pass


# Registered after multiprocessing's own exit handler, so it runs first: the workers
# are gone before multiprocessing joins its children.
atexit.register(_close_all)
