"""Data between a worker and the others: the transfer half of a worker process.

A mixin of :class:`~notebook_sched.distributed.worker.Worker` (whose docstring
describes the state and the threads): the sender thread answers the scheduler's
``send`` requests, a peer-server thread per peer answers ``get``, and the fetcher
thread gets the inputs of local tasks from the workers that hold them.

A fetch fails when the peer died - its data is then made again and announced by a
``where`` - or, rarely, while the peer lives (its listener was busy, a transient
error).  So a failed fetch is put in ``retries`` and tried again after a growing
delay (up to MAX_FETCH_DELAY), as long as the input is still wanted here and no
``where`` named another holder: a transient failure never leaves a task waiting
for an input that nobody will send.
"""

from __future__ import annotations

import time

from . import protocol
from .protocol import Channel

__all__ = ["Transfers", "pack_values"]

MAX_FETCH_DELAY = 2.0  # between attempts to fetch from a peer that did not answer


class Transfers:
    """Transfer methods of Worker (see the module docstring)."""

    def _want(self, tid: int, wid: int) -> None:
        self.fetching.add(tid)
        wanted = self.to_fetch.get(wid)
        if wanted is None:
            self.to_fetch[wid] = [tid]
        else:
            wanted.append(tid)

    def _on_where(self, items: list) -> None:
        with self.lock:
            for tid, wid in items:
                if tid not in self.data and tid in self.waiters and tid not in self.fetching:
                    self._want(tid, wid)
            self.fetch_cond.notify()

    def _on_peers(self, items: list) -> None:
        with self.lock:
            for peers in items:
                self.peers.update(peers)

    # -- data for the scheduler (sender thread) and for peers ------------------
    def _reply_loop(self) -> None:
        while True:
            request = self.replies.get()
            if type(request) is tuple:  # ("paused", flag)
                self._send_frames(*protocol.dumps(request))
                continue
            with self.lock:
                items = [(rid, tid, self.data[tid]) for rid, tid in request if tid in self.data]
                missing = [(rid, tid) for rid, tid in request if tid not in self.data]
            packed, errors = pack_values(items)
            del items
            self._send_frames(*protocol.dumps(("data", packed, missing, errors)))

    def _serve_peer(self, channel: Channel) -> None:
        """Answer ``("get", [tids])`` from one peer until it hangs up."""
        self.peer_channels.add(channel)
        try:
            while True:
                message = channel.recv()
                with self.lock:
                    items = [(tid, self.data[tid]) for tid in message[1] if tid in self.data]
                    missing = [tid for tid in message[1] if tid not in self.data]
                packed, errors = pack_values(items)
                del items
                channel.send(("data", packed, missing, errors))
        except (EOFError, OSError):
            pass
        finally:
            self.peer_channels.discard(channel)
            channel.close()

    def _fetch_loop(self) -> None:
        channels: dict = {}
        while True:
            with self.lock:
                while True:
                    timeout = self._due_retries()
                    if self.to_fetch:
                        break
                    self.fetch_cond.wait(timeout)
                wid, tids = self.to_fetch.popitem()
                address = self.peers.get(wid)
            try:
                channel = channels.get(wid)
                if channel is None:
                    channel = channels[wid] = protocol.connect(address, self.secret)
                    self.peer_channels.add(channel)
                channel.send(("get", tids))
                _, items, missing, errors = channel.recv()
            except (OSError, EOFError, TypeError, protocol.AuthenticationError):
                # The peer died (its data will be made again and announced by ``where``)
                # or the connection failed while it lives (try again, ever more slowly).
                dead = channels.pop(wid, None)
                if dead is not None:
                    self.peer_channels.discard(dead)
                    dead.close()
                with self.lock:
                    self.fetching.difference_update(tids)
                    attempt = self.fetch_attempts.get(tids[0], 0)
                    for tid in tids:
                        self.fetch_attempts[tid] = attempt + 1
                    delay = min(MAX_FETCH_DELAY, 0.05 * 2**attempt)
                    self.retries.append((time.monotonic() + delay, wid, tids))
                continue
            self._fetched(items, missing, errors)

    def _due_retries(self) -> float | None:
        """(Under ``lock``) queue the failed fetches that are due, if still wanted and
        not claimed by a ``where``; seconds until the next one, or None."""
        if not self.retries:
            return None
        now = time.monotonic()
        later = []
        for due, wid, tids in self.retries:
            if due > now:
                later.append((due, wid, tids))
                continue
            for tid in tids:
                if tid in self.waiters and tid not in self.data and tid not in self.fetching:
                    self._want(tid, wid)
        self.retries = later
        return min(due for due, _, _ in later) - now if later else None

    def _fetched(self, items: list, missing: list, errors: list) -> None:
        failed = []
        for n, (tid, packed) in enumerate(items):
            try:
                items[n] = (tid, protocol.unpack(packed))
            except Exception as exc:
                items[n] = None
                errors.append((tid, _unpicklable_result(exc, "unpickled here")))
        with self.lock:
            for item in items:
                if item is None:
                    continue
                tid, value = item
                self.fetching.discard(tid)
                self.fetch_attempts.pop(tid, None)
                users = self.waiters.get(tid)
                if not users or tid in self.data:
                    continue
                self.data[tid] = value
                self.copies[tid] = len(users)
                self._wake_users(tid)
            self.fetching.difference_update(missing)
            for tid, exc in errors:
                self.fetching.discard(tid)
                for user in self.waiters.pop(tid, ()):
                    if self.tasks.pop(user.tid, None) is not None:
                        failed.append((user.tid, exc))
            self.ready_cond.notify(self.nthreads)
        for tid, exc in failed:
            self._send_error(tid, exc)


def pack_values(items: list) -> tuple[list, list]:
    """Pack the value (last field) of each item; items that cannot be pickled become
    ``(fields but the value..., exception)`` errors."""
    packed, errors = [], []
    for item in items:
        try:
            packed.append((*item[:-1], protocol.pack(item[-1])))
        except Exception as exc:
            errors.append((*item[:-1], _unpicklable_result(exc)))
    return packed, errors


def _unpicklable_result(exc: BaseException, how: str = "sent from its worker process"):
    from ..errors import TaskPicklingError

    return TaskPicklingError(
        f"A result cannot be {how} ({type(exc).__name__}: {exc}). "
        f"Results that travel between processes must be picklable: return plain data, "
        f"or use scheduler='threads'."
    )
