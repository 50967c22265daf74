"""Data between a worker and the others: the transfer threads of a worker process.

A mixin of :class:`~notebook_sched.distributed.worker.Worker` (whose docstring
describes the threads): the sender thread answers the scheduler's ``send`` requests,
a peer-server thread per peer answers ``get``, and the fetcher thread gets the inputs
of local tasks from the workers that hold them.  Like the worker's other threads they
are a thin shell around its :class:`~notebook_sched.distributed.worker_state.WorkerMachine`,
which decides what to fetch, from whom, and when to try again.

A fetch fails when the peer died - its data is then made again and announced by a
``where`` - or, rarely, while the peer lives (its listener was busy, a transient
error); the machine then retries it later (``FetchFailed``, ``due_retries``).
Values are pickled and unpickled outside the lock.
"""

from __future__ import annotations

import time

from . import protocol
from .protocol import Channel
from .worker_state import Fetched, FetchFailed

__all__ = ["Transfers", "pack_values"]


class Transfers:
    """Transfer methods of Worker (see the module docstring)."""

    # -- data for the scheduler (sender thread) and for peers ------------------
    def _reply_loop(self) -> None:
        while True:
            request = self.replies.get()
            if type(request) is tuple:  # ("paused", flag)
                self._send_frames(*protocol.dumps(request))
                continue
            with self.lock:
                items, missing = self.machine.lookup_requests(request)
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
                    items, missing = self.machine.lookup(message[1])
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
        machine = self.machine
        while True:
            with self.lock:
                while True:
                    timeout = machine.due_retries(time.monotonic())
                    if machine.to_fetch:
                        break
                    self.fetch_cond.wait(timeout)
                wid, tids, address = machine.pop_fetch()
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
                self._handle(FetchFailed(wid, tids, time.monotonic()))
                continue
            self._fetched(items, missing, errors)

    def _fetched(self, items: list, missing: list, errors: list) -> None:
        for n, (tid, packed) in enumerate(items):
            try:
                items[n] = (tid, protocol.unpack(packed))
            except Exception as exc:
                items[n] = None
                errors.append((tid, _unpicklable_result(exc, "unpickled here")))
        self._handle(Fetched(items, missing, errors))


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


def _unpicklable_result(exc: BaseException, how: str | None = None):
    from ..errors import unpicklable_result

    return unpicklable_result(None, f"{type(exc).__name__}: {exc}", how=how)
