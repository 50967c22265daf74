"""Authenticated, framed messages between the scheduler, the workers and their peers.

Transport
    ``multiprocessing.connection`` sockets: an AF_UNIX socket in a private (0700)
    directory (``sockdir.py`` picks one short enough) where the platform has them,
    else 127.0.0.1.  Nothing listens on another interface.

Authentication
    Every accepted connection runs ``multiprocessing.connection``'s HMAC challenge in
    both directions with the cluster's 32-byte random secret, *before* a single byte
    from it is unpickled.  ``listener.py`` does the accepting side: one thread and a
    selector for every handshake, a cap on how many run at once, a short deadline.

Framing
    A message is one *head* frame, optionally followed by buffer frames.  Frames use
    the wire format of ``Connection.send_bytes`` (4-byte big-endian length, or -1 and
    an 8-byte length).  The head is ``b"\\x00" + pickle`` when there are no
    out-of-band buffers, else ``b"\\x01" + count + lengths + pickle``.  Large
    contiguous buffers (NumPy arrays, bytes-like data) are pickled with protocol 5
    *out of band*: they are written straight from the array's memory, and read
    straight into a fresh ``bytearray`` that becomes the array's memory on the other
    side (``os.readv`` into the buffer: one copy, from the kernel, and no other).

Objects are pickled with cloudpickle, so functions and classes defined in a notebook
travel by value.  Writers of a connection shared by threads hold its send lock
(``Channel.send_lock``); each connection has one reader.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import struct
import sys
import threading
from multiprocessing.connection import AuthenticationError, Connection
from multiprocessing.connection import Client as _connect
from typing import Any

import cloudpickle

__all__ = [
    "Channel",
    "connect",
    "dumps",
    "loads",
    "pack",
    "unpack",
    "listen_address",
    "parse_bytes",
    "format_bytes",
    "AuthenticationError",
]

logger = logging.getLogger("notebook_sched.distributed")

OUT_OF_BAND_MIN = 64 * 1024  # smaller buffers stay inside the pickle
_HEAD_PLAIN = b"\x00"
_HEAD_BUFFERS = b"\x01"
_LEN = struct.Struct("!i")
_LEN64 = struct.Struct("!Q")


def dumps(obj: Any) -> tuple[bytes, list]:
    """``(head frame, out-of-band buffers)`` for ``obj``."""
    buffers: list = []

    def callback(buffer: pickle.PickleBuffer) -> bool:
        try:
            raw = buffer.raw()
        except BufferError:  # not contiguous: pickle it in band
            return True
        if raw.nbytes < OUT_OF_BAND_MIN:
            return True
        buffers.append(raw)
        return False

    body = cloudpickle.dumps(obj, protocol=5, buffer_callback=callback)
    if not buffers:
        return _HEAD_PLAIN + body, buffers
    sizes = struct.pack(f"!I{len(buffers)}Q", len(buffers), *(b.nbytes for b in buffers))
    return _HEAD_BUFFERS + sizes + body, buffers


def pack(value: Any) -> tuple:
    """A user value pickled on its own, to travel inside a message.

    Its large buffers stay out of band in the message too, so the receiving I/O
    thread can read a message without unpickling user objects (which might fail, or
    be slow): whoever asked for the value calls :func:`unpack`.
    """
    buffers: list = []

    def callback(buffer: pickle.PickleBuffer) -> bool:
        try:
            raw = buffer.raw()
        except BufferError:
            return True
        if raw.nbytes < OUT_OF_BAND_MIN:
            return True
        buffers.append(pickle.PickleBuffer(raw))
        return False

    return (cloudpickle.dumps(value, protocol=5, buffer_callback=callback), buffers)


def unpack(packed: tuple) -> Any:
    return pickle.loads(packed[0], buffers=packed[1])


def loads(head: bytes | bytearray | memoryview, buffers: list | None = None) -> Any:
    view = memoryview(head)
    if view[0] == 0:
        return pickle.loads(view[1:])
    return pickle.loads(view[_buffers_offset(view) :], buffers=buffers)


def _buffer_sizes(view: memoryview) -> list[int]:
    (count,) = struct.unpack_from("!I", view, 1)
    return list(struct.unpack_from(f"!{count}Q", view, 5))


def _buffers_offset(view: memoryview) -> int:
    (count,) = struct.unpack_from("!I", view, 1)
    return 5 + 8 * count


class Channel:
    """One authenticated connection: whole messages out, whole messages in.

    ``send`` may be called from several threads (it holds ``send_lock`` for the
    frames of one message); ``recv`` from one thread only.
    """

    __slots__ = ("conn", "fd", "send_lock", "peer")

    def __init__(self, conn: Connection, peer: str = ""):
        self.conn = conn
        self.fd = conn.fileno()
        self.send_lock = threading.Lock()
        self.peer = peer

    def fileno(self) -> int:
        return self.fd

    def send(self, obj: Any) -> None:
        head, buffers = dumps(obj)
        self.send_frames(head, buffers)

    def send_frames(self, head: bytes, buffers: list) -> None:
        send = self.conn.send_bytes
        with self.send_lock:
            send(head)
            for buffer in buffers:
                send(buffer)

    def recv(self) -> Any:
        """The next message; raises EOFError when the other side closed."""
        head = self._read_frame()
        if head[0] == 0:
            return pickle.loads(memoryview(head)[1:])
        view = memoryview(head)
        buffers = [self._read_frame() for _ in _buffer_sizes(view)]
        return pickle.loads(view[_buffers_offset(view) :], buffers=buffers)

    def _read_frame(self) -> bytes | bytearray:
        (size,) = _LEN.unpack(self._read_exact(4))
        if size == -1:
            (size,) = _LEN64.unpack(self._read_exact(8))
        if size <= OUT_OF_BAND_MIN:
            return self._read_exact(size)
        buffer = bytearray(size)
        view = memoryview(buffer)
        got = 0
        fd = self.fd
        while got < size:
            n = os.readv(fd, [view[got:]])
            if n == 0:
                raise EOFError("connection closed in the middle of a message")
            got += n
        return buffer

    def _read_exact(self, size: int) -> bytes:
        data = os.read(self.fd, size)
        if len(data) == size:
            return data
        if not data:
            raise EOFError("connection closed")
        parts = [data]
        got = len(data)
        while got < size:
            chunk = os.read(self.fd, size - got)
            if not chunk:
                raise EOFError("connection closed in the middle of a message")
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)

    def close(self) -> None:
        try:
            self.conn.close()
        except OSError:
            pass


def keep_standard_fds() -> None:
    """Reopen /dev/null on fds 0-2 if a task closed them (``os.close(1)``).

    A new socket takes the lowest free fd: after a task closed fd 1, the next
    connection would be fd 1, and every later ``print`` in that worker would write
    into it, corrupting the stream (a peer then waits forever for a frame that never
    parses).  Called before a worker opens or accepts a connection: ~1 µs."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


def connect(address: Any, secret: bytes) -> Channel:
    """Open an authenticated channel to ``address`` (both sides prove the secret)."""
    keep_standard_fds()
    conn = _connect(address, authkey=secret)
    return Channel(conn, str(address))


def listen_address(directory: str | None, name: str) -> Any:
    """An AF_UNIX path in ``directory`` where supported, else loopback TCP."""
    if directory and hasattr(socket, "AF_UNIX") and sys.platform != "win32":
        path = os.path.join(directory, name)
        if len(path) < 100:  # sun_path is ~104-108 bytes
            return path
    return ("127.0.0.1", 0)


_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
    "k": 10**3,
    "m": 10**6,
    "g": 10**9,
    "t": 10**12,
}


def parse_bytes(value: int | float | str | None) -> int | None:
    """``"2GB"``, ``"512 MiB"``, ``1e9`` or None -> bytes (None means no limit)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError(f"memory_limit must be a size like '2GB' or a number of bytes; got {value}")
    if isinstance(value, int | float):
        if value <= 0:
            raise ValueError(f"memory_limit must be positive; got {value!r}")
        return int(value)
    text = str(value).strip().lower().replace(" ", "")
    number = text.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = text[len(number) :]
    if unit not in _UNITS or not number:
        raise ValueError(
            f"memory_limit {value!r} is not a size; write e.g. memory_limit='2GB', "
            f"'512MiB' or a number of bytes."
        )
    size = int(float(number) * _UNITS[unit])
    if size <= 0:
        raise ValueError(f"memory_limit must be positive; got {value!r}")
    return size


def format_bytes(n: int | None) -> str:
    if n is None:
        return "none"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"
