"""Accepting connections: one thread authenticates every newcomer, none can wedge it.

::

    peers --connect--> listening socket --accept--> pending handshakes (at most
                       (non-blocking)                MAX_PENDING, each with a deadline)
                              one thread, one selector  |  HMAC challenge both ways,
                                                        |  one frame at a time
                                   authenticated <------+
                                   ``on_channel(channel)`` on a thread of its own

Authentication is ``multiprocessing.connection``'s challenge in both directions, as
``Listener(authkey=...)`` does it (``deliver_challenge`` then ``answer_challenge``),
so peers connect with the stock ``multiprocessing.connection.Client``.  But it runs
as a small state machine on non-blocking sockets, driven by one selector: a silent
or slow connection costs a file descriptor and a few bytes of state, not a thread,
and nothing it does blocks the others.  Frames are read exactly (header, then
body), so bytes the peer sends right after the handshake stay in the socket for
the :class:`~notebook_sched.distributed.protocol.Channel` that takes it over.

Limits, against floods of connections that never authenticate (anyone who can
reach the socket can open them; on the TCP fallback, any local user):

* at most MAX_PENDING handshakes at a time.  A newcomer beyond that evicts the
  oldest that has not yet answered our challenge and is older than GRACE_SECONDS;
  one that answered correctly (it has the secret) is never evicted, and a
  legitimate peer answers in a millisecond, so it gets in.  When there is no such
  victim, accepting pauses for GRACE_SECONDS: the newcomers wait in the kernel's
  backlog, at no cost to this process;
* each handshake must finish within HANDSHAKE_SECONDS; frames over 256 bytes
  (what the stdlib also rejects) end it at once;
* when ``accept`` fails for lack of file descriptors or memory (EMFILE, ENFILE,
  ENOBUFS, ENOMEM) the oldest pending handshake is dropped to free one and the
  listening socket is left out of the selector for a growing pause (up to
  MAX_BACKOFF), instead of spinning on a socket that stays readable;
* warnings go through :class:`RateLimitedLog`: at most one line per LOG_SECONDS,
  with the count of those left out.

Nothing from a peer is unpickled before it has proved the secret.
"""

from __future__ import annotations

import errno
import hmac
import logging
import os
import selectors
import socket
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from multiprocessing import connection as _mpc
from typing import Any

from .protocol import Channel, keep_standard_fds

__all__ = ["AuthListener", "RateLimitedLog", "set_socket_timeout"]

logger = logging.getLogger("notebook_sched.distributed")

MAX_PENDING = 16
GRACE_SECONDS = 0.1
HANDSHAKE_SECONDS = 3.0
MAX_FRAME = 256
MAX_BACKOFF = 1.0
LOG_SECONDS = 5.0
ACCEPTS_PER_ROUND = 64
_RESOURCE_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_LEN = struct.Struct("!i")
_CHALLENGE, _WELCOME, _FAILURE = _mpc.CHALLENGE, _mpc.WELCOME, _mpc.FAILURE


class RateLimitedLog:
    """``warning`` at most once per ``seconds``; the next line says how many were left out."""

    def __init__(self, seconds: float = LOG_SECONDS):
        self.seconds = seconds
        self.last = -float("inf")
        self.suppressed = 0

    def warning(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self.last < self.seconds:
            self.suppressed += 1
            return
        if self.suppressed:
            message += f" ({self.suppressed} similar messages in the last {self.seconds:.0f} s)"
            self.suppressed = 0
        self.last = now
        logger.warning(message, *args)


def set_socket_timeout(fd: int, seconds: float | None) -> None:
    """Bound every blocking read and write on socket ``fd`` (``SO_RCVTIMEO`` /
    ``SO_SNDTIMEO``; None or 0: no bound).  A read that times out raises
    BlockingIOError.  Needs no new file descriptor (unlike a dup)."""
    whole = int(seconds or 0)
    value = struct.pack("ll", whole, int(((seconds or 0) - whole) * 1e6))
    sock = socket.socket(fileno=fd)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
    finally:
        sock.detach()


def _response(secret: bytes, message: bytes) -> bytes:
    """Our answer to a peer's challenge, as ``answer_challenge`` computes it."""
    create = getattr(_mpc, "_create_response", None)  # Python >= 3.12
    if create is not None:
        return create(secret, message)
    return hmac.new(secret, message, "md5").digest()


class _Handshake:
    """One connection proving the secret: the server half of the stdlib handshake.

    Steps: 0 read the peer's answer to our challenge, 1 read its challenge, 2 read
    its welcome; then done.  ``feed`` is called when the socket is readable."""

    __slots__ = ("sock", "started", "deadline", "step", "expected", "header", "body", "want")

    def __init__(self, sock: socket.socket, secret: bytes, now: float):
        self.sock = sock
        self.started = now
        self.deadline = now + HANDSHAKE_SECONDS
        self.step = 0
        self.header = b""
        self.body = b""
        self.want = -1  # body length once the header is in
        message = os.urandom(_mpc.MESSAGE_LENGTH)
        self.expected = hmac.new(secret, message, "md5").digest()
        self._send(_CHALLENGE + message)  # the legacy form: every Python answers it

    def _send(self, payload: bytes) -> None:
        frame = _LEN.pack(len(payload)) + payload
        if self.sock.send(frame) != len(frame):  # a fresh socket's buffer takes 40 bytes
            raise OSError("the peer does not read")

    def _frame(self) -> bytes | None:
        """The next whole frame, or None until it has arrived; reads no byte past it."""
        if self.want < 0:
            chunk = self.sock.recv(4 - len(self.header))
            if not chunk:
                raise EOFError("closed during the handshake")
            self.header += chunk
            if len(self.header) < 4:
                return None
            (self.want,) = _LEN.unpack(self.header)
            if not 0 <= self.want <= MAX_FRAME:
                raise ValueError(f"a handshake frame of {self.want} bytes")
        if len(self.body) < self.want:
            chunk = self.sock.recv(self.want - len(self.body))
            if not chunk:
                raise EOFError("closed during the handshake")
            self.body += chunk
            if len(self.body) < self.want:
                return None
        frame, self.header, self.body, self.want = self.body, b"", b"", -1
        return frame

    def feed(self, secret: bytes) -> bool:
        """Advance on readable data; True once authenticated.  Raises to drop it."""
        while True:
            try:
                frame = self._frame()
            except BlockingIOError:
                return False
            if frame is None:
                return False
            if self.step == 0:
                if not hmac.compare_digest(frame, self.expected):
                    self._send(_FAILURE)
                    raise _mpc.AuthenticationError("digest received was wrong")
                self._send(_WELCOME)
            elif self.step == 1:
                if not frame.startswith(_CHALLENGE):
                    raise _mpc.AuthenticationError("the peer sent no challenge")
                self._send(_response(secret, frame[len(_CHALLENGE) :]))
            else:
                if frame != _WELCOME:
                    raise _mpc.AuthenticationError("digest sent was rejected")
                return True
            self.step += 1


class AuthListener:
    """Accepts connections on ``address``; authenticated ones go to ``on_channel``.

    ``on_channel(channel)`` runs on a new daemon thread per authenticated connection
    (only holders of the secret get one).  ``close`` stops accepting and drops the
    handshakes still running.
    """

    def __init__(self, address: Any, secret: bytes, on_channel: Callable[[Channel], None], name):
        self.secret = secret
        self.on_channel = on_channel
        self.name = name
        self.log = RateLimitedLog()
        if isinstance(address, str):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(address)
            sock.listen(64)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.address = sock.getsockname()
        self.closed = False
        # Handshakes in progress, oldest first; only the listener thread touches them.
        self._pending: OrderedDict[int, _Handshake] = OrderedDict()
        self._wake_r, self._wake_w = os.pipe()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._selector.register(sock, selectors.EVENT_READ, self)
        self._paused_until = 0.0  # accept backs off after EMFILE and friends
        self._backoff = 0.0
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    # -- the listener thread ---------------------------------------------------
    def _run(self) -> None:
        try:
            while not self.closed:
                for key, _ in self._selector.select(self._next_timeout()):
                    if key.data is None:
                        return  # woken by close()
                    if key.data is self:
                        self._accept()
                    else:
                        self._advance(key.data)
                self._expire()
        except Exception:
            logger.exception("%s: the listener thread crashed", self.name)
        finally:
            for handshake in list(self._pending.values()):
                self._drop(handshake)
            self._selector.close()
            self.sock.close()
            for fd in (self._wake_r, self._wake_w):
                os.close(fd)

    def _next_timeout(self) -> float | None:
        now = time.monotonic()
        times = []
        if self._paused_until:
            if now >= self._paused_until:
                self._paused_until = 0.0
                self._selector.register(self.sock, selectors.EVENT_READ, self)
            else:
                times.append(self._paused_until)
        if self._pending:
            times.append(next(iter(self._pending.values())).deadline)
        return max(0.0, min(times) - now) if times else None

    def _accept(self) -> None:
        for _ in range(ACCEPTS_PER_ROUND):
            if len(self._pending) >= MAX_PENDING and not self._make_room():
                return
            keep_standard_fds()  # a task closed fd 1: the socket must not become it
            try:
                sock, _ = self.sock.accept()
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno not in _RESOURCE_ERRORS:
                    self.log.warning("%s: accept failed (%s)", self.name, exc)
                    break
                self._back_off(exc)
                return
            self._backoff = 0.0
            self._start(sock)

    def _make_room(self) -> bool:
        """Evict a handshake that has not proved anything yet, or pause accepting."""
        now = time.monotonic()
        self.log.warning(
            "%s: more than %d connections are authenticating at once (is something "
            "flooding the cluster's socket?); dropping the oldest silent ones",
            self.name,
            MAX_PENDING,
        )
        for handshake in self._pending.values():  # oldest first
            if now - handshake.started < GRACE_SECONDS:
                break
            if handshake.step == 0:
                self._drop(handshake)
                return True
        self._pause(GRACE_SECONDS)
        return False

    def _pause(self, seconds: float) -> None:
        """Leave the listening socket out of the selector for ``seconds``."""
        if not self._paused_until:
            self._selector.unregister(self.sock)
        self._paused_until = time.monotonic() + seconds

    def _back_off(self, exc: OSError) -> None:
        """Out of file descriptors or memory: free one, and pause accepting."""
        if self._pending:
            self._drop(next(iter(self._pending.values())))
        self._backoff = min(MAX_BACKOFF, max(0.05, self._backoff * 2))
        self._pause(self._backoff)
        self.log.warning(
            "%s: cannot accept connections (%s); pausing %.2f s", self.name, exc, self._backoff
        )

    def _start(self, sock: socket.socket) -> None:
        try:
            sock.setblocking(False)
            handshake = _Handshake(sock, self.secret, time.monotonic())
            self._selector.register(sock, selectors.EVENT_READ, handshake)
        except OSError as exc:
            self.log.warning("%s: dropped a connection (%s)", self.name, exc)
            sock.close()
            return
        self._pending[sock.fileno()] = handshake

    def _advance(self, handshake: _Handshake) -> None:
        try:
            done = handshake.feed(self.secret)
        except (_mpc.AuthenticationError, OSError, EOFError, ValueError) as exc:
            self.log.warning(
                "%s: dropped a connection that failed authentication (%s: %s)",
                self.name,
                type(exc).__name__,
                exc,
            )
            self._drop(handshake)
            return
        if done:
            self._forget(handshake)
            sock = handshake.sock
            sock.setblocking(True)
            channel = Channel(_mpc.Connection(sock.detach()), self.name)
            threading.Thread(
                target=self._serve, args=(channel,), name=f"{self.name}-conn", daemon=True
            ).start()

    def _expire(self) -> None:
        now = time.monotonic()
        while self._pending:
            oldest = next(iter(self._pending.values()))
            if oldest.deadline > now:
                return
            self.log.warning(
                "%s: dropped a connection that did not authenticate within %.0f s",
                self.name,
                HANDSHAKE_SECONDS,
            )
            self._drop(oldest)

    def _forget(self, handshake: _Handshake) -> None:
        self._pending.pop(handshake.sock.fileno(), None)
        try:
            self._selector.unregister(handshake.sock)
        except (KeyError, ValueError):
            pass

    def _drop(self, handshake: _Handshake) -> None:
        self._forget(handshake)
        handshake.sock.close()

    def _serve(self, channel: Channel) -> None:
        if self.closed:
            channel.close()
            return
        try:
            self.on_channel(channel)
        except Exception:
            logger.exception("%s: error while setting up a connection", self.name)
            channel.close()

    # -- from other threads ----------------------------------------------------
    def close(self) -> None:
        """Stop accepting; drop the handshakes in progress; remove the socket file."""
        if self.closed:
            return
        self.closed = True
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        self.thread.join(2)
        if isinstance(self.address, str):
            try:
                os.unlink(self.address)
            except OSError:
                pass
