"""``Future`` and the per-key state its copies share (``future.py``, below ``client``).

A :class:`Future` is a handle: the key, the client that made it, and the
:class:`_FutureState` that client keeps once per key (status, the event waiters block
on, done-callbacks).  The state is updated by the scheduler's I/O thread
(:meth:`_FutureState.notify`); ``_FutureState.lock`` guards its callback list.

It lives apart from ``client.py`` so that ``arguments.py`` (futures inside ``submit``
arguments) can recognise a Future by type without importing the client: the client
imports both, neither imports the client.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .state import CancelledError

if TYPE_CHECKING:
    from .client import Client

__all__ = ["Future", "PENDING", "FINISHED", "ERROR", "CANCELLED"]

PENDING, FINISHED, ERROR, CANCELLED = "pending", "finished", "error", "cancelled"


class _FutureState:
    """Status of one key as this client sees it (shared by its Future objects)."""

    __slots__ = ("key", "status", "error", "exception", "event", "callbacks", "lock")

    def __init__(self, key):
        self.key = key
        self.status = PENDING
        self.error = None  # the scheduler's error record, or a cancel reason
        self.exception: BaseException | None = None  # rebuilt once from ``error``
        self.event = threading.Event()
        self.callbacks: list = []
        self.lock = threading.Lock()

    def notify(self, kind: str, payload: Any = None) -> None:
        """From the scheduler's I/O thread."""
        if kind == "pending":
            self.status = PENDING
            self.event.clear()
            return
        if kind == "finished":
            self.status = FINISHED
        elif kind == "erred":
            self.status = ERROR
            self.error = payload
        else:
            self.status = CANCELLED
            self.error = payload
        self.event.set()
        with self.lock:
            callbacks, self.callbacks = self.callbacks, []
        for callback in callbacks:
            callback()

    def add_callback(self, callback: Callable[[], None]) -> None:
        with self.lock:
            if not self.event.is_set():
                self.callbacks.append(callback)
                return
        callback()


class Future:
    """A task's result that stays on the cluster until you ask for it."""

    __slots__ = ("key", "_client", "_state", "__weakref__")

    def __init__(self, key, client: Client, state: _FutureState):
        self.key = key
        self._client = client
        self._state = state

    @property
    def status(self) -> str:
        return self._state.status

    def done(self) -> bool:
        """True when the task finished, failed or was cancelled."""
        return self._state.event.is_set()

    def cancelled(self) -> bool:
        return self._state.status == CANCELLED

    def result(self, timeout: float | None = None) -> Any:
        """The task's value (fetched from its worker), or its exception raised."""
        __tracebackhide__ = True  # IPython and ipdb go from the caller to the error
        return self._client._gather_keys([self.key], timeout)[0]

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The task's exception once it is done, or None if it succeeded.

        Raises CancelledError for a cancelled future (as concurrent.futures does)."""
        if not self._state.event.wait(timeout):
            raise TimeoutError(f"{self.key!r} is not done after {timeout} s")
        if self._state.status == ERROR:
            return self._client._exception(self._state)
        if self._state.status == CANCELLED:
            raise CancelledError(f"{self.key!r} was cancelled: {self._state.error}")
        return None

    def cancel(self) -> None:
        self._client.cancel([self])

    def add_done_callback(self, fn: Callable[[Future], Any]) -> None:
        """Call ``fn(future)`` once the task is done (on the client's callback thread)."""
        self._client._add_callback(self, fn)

    def __del__(self) -> None:
        try:
            self._client._decref(self.key)
        except Exception:  # interpreter shutdown
            pass

    def __reduce__(self):
        raise TypeError(
            f"A Future ({self.key!r}) cannot be pickled. Pass it directly as an argument "
            f"of submit() (or inside lists, tuples and dicts there) and the task receives "
            f"its value; or call .result() first."
        )

    def __repr__(self) -> str:
        state = self._state
        extra = ""
        if state.status == ERROR and state.error is not None:
            exc = state.exception
            name = type(exc).__name__ if exc is not None else "an exception"
            extra = f" raised {name}"
        return f"<Future at {id(self):#x} key={self.key!r} state={state.status}{extra}>"
