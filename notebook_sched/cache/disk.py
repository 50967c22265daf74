"""The disk tier's entries: one signed file per fingerprint, written atomically.

An entry is the pickled result (protocol 5) with its large buffers (NumPy arrays,
pandas blocks, bytearrays) stored out of band, each at a 64-byte aligned offset, so
they are written straight from the array's memory and loaded without a copy::

    0   b"NSCACHE2"                     magic (format version 2)
    8   tag                             HMAC-SHA256(key, magic + lengths + header + pickle)
    40  header_len u32, pickle_len u64
    52  header                          JSON: the fingerprint, the file's size, the run
                                        time, and per buffer: offset, length, keyed digest
        pickle                          the pickle stream (in-band data, small)
        buffers                         raw bytes, each 64-byte aligned after the pickle

**Never unpickle what we did not sign.**  :func:`read_entry` checks the tag before it
parses the header or touches the pickle stream, then that the header names the
fingerprint asked for (an entry copied to another name fails), that the file is as
long as the header says, and each buffer's digest; only then does it unpickle.  So
the signature covers every byte: the pickle stream directly, each buffer through its
digest in the signed header.  A bad, foreign, truncated or unreadable entry is a
miss: :class:`CacheWarning` names the file and why, and the file is removed.

*Why the buffers are checked by a fast keyed hash.*  The buffers are raw data handed
to the signed pickle (NumPy builds arrays over them with the dtype and shape the
pickle says): the pickle stream, which alone chooses what code runs, is under the
HMAC.  A buffer's digest is ``xxh3_128`` seeded with a secret derived from the folder's
key (:func:`_buffer_seed`), ~10 GB/s, where HMAC-SHA256 over every byte runs at
~0.6 GB/s here and BLAKE3 (format 1) at ~2-3 GB/s on one core: on a rerun after a
restart that loads 64 MB of inputs, verification was a visible share of the time.  It
catches any damage (a torn write, a flipped bit, another entry's bytes).  It is not a
cryptographic MAC: forging a buffer would take someone who can write into this
user's private folder yet cannot read its key, and a collision of a hash whose seed
they do not know; even then they choose bytes of an array, never code.

**Atomic, safe under concurrent writers.**  An entry is written to a private temporary
file in its final folder and renamed over the entry (``os.replace``): a reader sees
the old file or the new one, never a partial one, and two kernels writing the same
fingerprint both write complete, equivalent files (the last rename wins).  There is
no fsync: a crash may leave a truncated entry, which verification turns into a miss.

**Zero-copy loads.**  Entries over :data:`MAP_FROM` bytes are memory-mapped
copy-on-write (``ACCESS_COPY``): arrays read the page cache directly, stay writable,
and a change never reaches the file.  (Not ``MAP_POPULATE``: on a private writable
mapping it copies every page up front, 6x slower on a 100 MB entry here.)  Later
renames and evictions do not disturb a mapping (the old inode lives while mapped).

**Least recently used out.**  A hit touches the entry's mtime; when a process's
estimate of the folder's size passes ``cache_disk_max_bytes`` it scans the folder
and removes the entries with the oldest mtimes (and temporary files an hour old, left
by a writer that died).  Each process keeps its own estimate, so the bound is soft by
what the other writers added since their last scan.

**Older formats** (:data:`OLD_FORMATS`: ``v1/``, entries ``NSCACHE1``) are never read
(a format change changes what a fingerprint's file holds); :func:`clear` and
:func:`evict` remove them.  Only what is provably ours goes: a file in ``v1/ab/``
named by a fingerprint that starts with ``ab``, a regular file (not a link) whose old
signature checks under this folder's key (``NSCACHE1`` had the same layout up to the
end of the pickle stream, under HMAC-SHA256, so the check reads no buffers), and our
temporary files there an hour old, as for the current format; then the emptied
folders, with ``rmdir``, which leaves a folder holding anything else where it is.

**Written only when loading beats recomputing** (:class:`LoadCost`): when the first
result that took over :data:`MIN_WRITE_SECONDS` is to be stored, a probe entry of 4 MiB
and a tiny one are written and read back cold (``posix_fadvise(DONTNEED)`` drops them
from the page cache first), which gives this disk's fixed cost per entry and its
bytes per second through the whole load path (read, verify, unpickle).  The figures
are kept in the folder (``loadcost.json``, for :data:`COST_MAX_AGE` seconds), so a
kernel restarted on the same folder does not probe again (~40 ms); the file is plain
numbers, never unpickled, and a bad one is measured again.  A result is written when
its task ran at least :data:`WRITE_MARGIN` times longer than loading it is expected to
take: a 10 µs task never is.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import mmap
import os
import pickle
import secrets
import struct
import tempfile
import threading
import time
import warnings
from typing import Any, NamedTuple

from xxhash import xxh3_128

from .folder import Folder

__all__ = [
    "CacheWarning",
    "LoadCost",
    "MISSING",
    "read_entry",
    "write_entry",
    "entry_path",
    "clear",
    "remove_old_formats",
    "usage",
    "evict",
    "measure_load_cost",
    "known_load_cost",
    "COST_FILE",
]

MAGIC = b"NSCACHE2"
_FIXED = struct.Struct("<IQ")
_DATA = len(MAGIC) + 32 + _FIXED.size  # where the header starts
ALIGN = 64
MAP_FROM = 1 << 20  # entries at least this long are memory-mapped
MAX_HEADER = 1 << 24
WRITE_MARGIN = 2.0
MIN_WRITE_SECONDS = 100e-6  # no disk loads an entry faster: quicker tasks are never written
STALE_TEMP_SECONDS = 3600.0
MISSING: Any = object()


class CacheWarning(UserWarning):
    """A disk entry was not used (damaged, foreign, unreadable) or not written."""


class LoadCost(NamedTuple):
    """What loading an entry costs on this folder's disk: seconds per entry + per byte."""

    fixed: float
    per_byte: float

    def seconds(self, nbytes: int) -> float:
        return self.fixed + nbytes * self.per_byte

    def worth_writing(self, run_seconds: float, nbytes: int = 0) -> bool:
        """Whether a task that ran ``run_seconds`` is worth an entry of ``nbytes``."""
        return run_seconds >= WRITE_MARGIN * self.seconds(nbytes)


def entry_path(folder: Folder, digest: bytes) -> str:
    name = digest.hex()
    return os.path.join(folder.entries, name[:2], name)


def _buffer_seed(folder: Folder) -> int:
    """The secret seed of this folder's buffer digests (from its key; remembered)."""
    seed = _seeds.get(folder.key)
    if seed is None:
        mac = hmac.new(folder.key, b"notebook_sched buffer digest seed", hashlib.sha256)
        seed = _seeds[folder.key] = int.from_bytes(mac.digest()[:8], "little")
    return seed


_seeds: dict[bytes, int] = {}


def _buffer_digest(view: memoryview, seed: int) -> str:
    return xxh3_128(view, seed=seed).hexdigest()


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


# -- writing ------------------------------------------------------------------------


def write_entry(folder: Folder, digest: bytes, value: Any, run_seconds: float = 0.0) -> int:
    """Store ``value`` as the entry of ``digest``; the bytes written (0 if it cannot be
    pickled).  Atomic: readers never see a partial entry."""
    import cloudpickle

    raw_buffers: list = []
    try:
        stream = cloudpickle.dumps(value, protocol=5, buffer_callback=raw_buffers.append)
        views = [b.raw() for b in raw_buffers]
    except Exception:  # not picklable (a lock, a generator...): memory tier only
        return 0
    offset = 0
    layout = []
    seed = _buffer_seed(folder) if views else 0
    for view in views:
        layout.append([offset, view.nbytes, _buffer_digest(view, seed)])
        offset = _aligned(offset + view.nbytes)
    buffers_end = layout[-1][0] + layout[-1][1] if layout else 0
    header = {"fingerprint": digest.hex(), "seconds": run_seconds, "buffers": layout}
    # The file size goes in the header, which is part of it: iterate to a fixed point.
    size = 0
    while True:
        header["size"] = size
        head = json.dumps(header, separators=(",", ":")).encode()
        first = _aligned(_DATA + len(head) + len(stream))
        total = first + buffers_end if views else _DATA + len(head) + len(stream)
        if total == size:
            break
        size = total
    fixed = _FIXED.pack(len(head), len(stream))
    tag = hmac.new(folder.key, MAGIC + fixed + head + stream, hashlib.sha256).digest()
    path = entry_path(folder, digest)
    _write_atomically(path, [MAGIC, tag, fixed, head, stream], views, first, layout)
    return size


def _write_atomically(path: str, parts: list, views: list, first: int, layout: list) -> None:
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            for part in parts:
                f.write(part)
            for view, (offset, _, _) in zip(views, layout, strict=True):
                f.seek(first + offset)
                f.write(view)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# -- reading ------------------------------------------------------------------------


class _Bad(Exception):
    """Why an entry was refused (never shown as an error: it becomes a warning)."""


def read_entry(folder: Folder, digest: bytes) -> Any:
    """The value stored for ``digest``, or :data:`MISSING`.  Verified before unpickling;
    a bad entry warns, is removed, and reads as missing."""
    path = entry_path(folder, digest)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return MISSING
    except OSError as exc:
        _refuse(path, f"cannot be opened ({exc})", remove=False)
        return MISSING
    try:
        stream, buffers = _verified(fd, folder, digest)
    except _Bad as why:
        _refuse(path, str(why))
        return MISSING
    except OSError as exc:
        _refuse(path, f"cannot be read ({exc})", remove=False)
        return MISSING
    finally:
        os.close(fd)
    try:
        value = pickle.loads(stream, buffers=buffers)
    except Exception as exc:  # signed by us, but its classes changed or vanished
        _refuse(path, f"could not be loaded ({type(exc).__name__}: {exc})")
        return MISSING
    try:
        os.utime(path)  # the least recently used entries are evicted first
    except OSError:
        pass
    return value


def _verified(fd: int, folder: Folder, digest: bytes) -> tuple[memoryview, list]:
    """The pickle stream and buffers of the entry open on ``fd``, after every check."""
    size = os.fstat(fd).st_size
    if size < _DATA:
        raise _Bad(f"is truncated ({size} bytes)")
    if size >= MAP_FROM:
        data = memoryview(mmap.mmap(fd, size, access=mmap.ACCESS_COPY))
    else:
        data = memoryview(bytearray(size))
        got = os.preadv(fd, [data], 0) if hasattr(os, "preadv") else os.readv(fd, [data])
        if got != size:
            raise _Bad(f"changed while read ({got} of {size} bytes)")
    if data[: len(MAGIC)] != MAGIC:
        raise _Bad("is not a notebook_sched cache entry (unknown format)")
    head_len, stream_len = _FIXED.unpack(data[40:_DATA])
    stream_at = _DATA + head_len
    end = stream_at + stream_len
    if head_len > MAX_HEADER or end > size:
        raise _Bad(f"is truncated or damaged (lengths past the end of its {size} bytes)")
    mac = hmac.new(folder.key, data[: len(MAGIC)], hashlib.sha256)
    mac.update(data[40:end])
    if not hmac.compare_digest(mac.digest(), data[len(MAGIC) : 40]):
        raise _Bad("has a bad signature (damaged, or not written by this user's cache)")
    header = json.loads(bytes(data[_DATA:stream_at]))
    if header.get("fingerprint") != digest.hex():
        raise _Bad("is signed for another fingerprint (renamed or copied)")
    if header.get("size") != size:
        raise _Bad(f"is {size} bytes, not the {header.get('size')} it was written with")
    first = _aligned(end)
    buffers = []
    seed = _buffer_seed(folder) if header["buffers"] else 0
    for offset, length, expected in header["buffers"]:
        view = data[first + offset : first + offset + length]
        if len(view) != length or _buffer_digest(view, seed) != expected:
            raise _Bad("has a damaged data buffer")
        buffers.append(view)
    return data[stream_at:end], buffers


def _refuse(path: str, why: str, remove: bool = True) -> None:
    what = "removed" if remove else "ignored"
    warnings.warn(f"notebook_sched cache: entry {path} {why}; {what}, recomputing", CacheWarning, 3)
    if remove:
        try:
            os.unlink(path)
        except OSError:
            pass


# -- the folder as a whole ----------------------------------------------------------


def _entries(folder: Folder) -> list[tuple[float, int, str]]:
    """(mtime, size, path) of every entry; stale temporary files are removed."""
    found = []
    now = time.time()
    try:
        subdirs = [e.path for e in os.scandir(folder.entries) if e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return found
    for sub in subdirs:
        try:
            listing = list(os.scandir(sub))
        except FileNotFoundError:
            continue
        for entry in listing:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if entry.name.startswith(".tmp-"):
                if now - st.st_mtime > STALE_TEMP_SECONDS:
                    _unlink(entry.path)
                continue
            found.append((st.st_mtime, st.st_size, entry.path))
    return found


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def usage(folder: Folder) -> tuple[int, int]:
    """(entries, bytes) in the folder."""
    entries = _entries(folder)
    return len(entries), sum(size for _, size, _ in entries)


def clear(folder: Folder) -> int:
    """Remove every entry, and the entries of older formats we signed (the key stays);
    how many were removed."""
    entries = _entries(folder)
    for _, _, path in entries:
        _unlink(path)
    with _estimate_lock:
        _estimates[folder.path] = 0
    return len(entries) + remove_old_formats(folder)


def evict(folder: Folder, max_bytes: int) -> int:
    """Remove the entries of older formats we signed (never read again), then the
    least recently used entries until the folder holds ``max_bytes`` at most; the
    bytes it then holds."""
    remove_old_formats(folder)
    entries = sorted(_entries(folder))
    total = sum(size for _, size, _ in entries)
    for _, size, path in entries:
        if total <= max_bytes:
            break
        _unlink(path)
        total -= size
    return total


# -- older formats ------------------------------------------------------------------

OLD_FORMATS = (("v1", b"NSCACHE1"),)  # (entries folder, magic) of formats we wrote
_HEX = frozenset("0123456789abcdef")


def remove_old_formats(folder: Folder) -> int:
    """Remove the entries of :data:`OLD_FORMATS` that this folder's key signed, our
    stale temporary files there, and the folders that leaves empty (see the module
    docstring); how many entries were removed."""
    removed = 0
    for name, magic in OLD_FORMATS:
        top = os.path.join(folder.path, name)
        for sub in _plain_entries(top, want_dir=True):
            if len(sub.name) != 2 or not set(sub.name) <= _HEX:
                continue
            for entry in _plain_entries(sub.path, want_dir=False):
                if _old_entry_is_ours(entry, sub.name, folder.key, magic):
                    _unlink(entry.path)
                    removed += 1
            _rmdir(sub.path)
        _rmdir(top)
    return removed


def _plain_entries(path: str, want_dir: bool) -> list:
    """The folders (or regular files) in ``path``, never through a symbolic link."""
    try:
        if os.path.islink(path):
            return []
        listing = list(os.scandir(path))
    except OSError:
        return []
    found = []
    for entry in listing:
        try:
            if entry.is_symlink():
                continue
            if entry.is_dir(follow_symlinks=False) if want_dir else entry.is_file():
                found.append(entry)
        except OSError:
            continue
    return found


def _old_entry_is_ours(entry: os.DirEntry, prefix: str, key: bytes, magic: bytes) -> bool:
    name = entry.name
    if name.startswith(".tmp-"):  # our writer's temporary file, left an hour ago
        try:
            return time.time() - entry.stat(follow_symlinks=False).st_mtime > STALE_TEMP_SECONDS
        except OSError:
            return False
    if not name.startswith(prefix) or len(name) < 32 or not set(name) <= _HEX:
        return False
    try:
        with open(entry.path, "rb") as f:
            start = f.read(_DATA)
            if len(start) < _DATA or start[: len(magic)] != magic:
                return False
            head_len, stream_len = _FIXED.unpack(start[40:_DATA])
            if head_len > MAX_HEADER or stream_len > os.fstat(f.fileno()).st_size:
                return False
            mac = hmac.new(key, start[: len(magic)], hashlib.sha256)
            mac.update(start[40:_DATA])
            left = head_len + stream_len
            while left > 0:
                chunk = f.read(min(left, 1 << 20))
                if not chunk:
                    return False  # truncated: not provably ours
                mac.update(chunk)
                left -= len(chunk)
    except OSError:
        return False
    return hmac.compare_digest(mac.digest(), start[len(magic) : 40])


def _rmdir(path: str) -> None:
    try:
        os.rmdir(path)  # only when empty: anything else in it stays
    except OSError:
        pass


_estimates: dict[str, int] = {}  # folder path -> bytes, as this process last knew
_estimate_lock = threading.Lock()  # guards _estimates


def account(folder: Folder, written: int, max_bytes: int | None) -> None:
    """Add an entry's bytes to this process's estimate; evict when it passes the bound."""
    if max_bytes is None or written <= 0:
        return
    with _estimate_lock:
        known = _estimates.get(folder.path)
        if known is None:
            known = usage(folder)[1]
        else:
            known += written
        if known > max_bytes:
            known = evict(folder, max_bytes)
        _estimates[folder.path] = known


# -- what a load costs here ---------------------------------------------------------

_costs: dict[str, LoadCost] = {}
_cost_lock = threading.Lock()  # guards _costs; serialises the probes
PROBE_BYTES = 4 << 20


def known_load_cost(folder: Folder) -> LoadCost | None:
    """This folder's :class:`LoadCost` if this process measured it already, else None."""
    return _costs.get(folder.path)


def measure_load_cost(folder: Folder) -> LoadCost:
    """This folder's :class:`LoadCost`: as kept in the folder if measured lately, else
    measured now (~10-50 ms) and kept; once per process."""
    cost = _costs.get(folder.path)
    if cost is not None:
        return cost
    with _cost_lock:
        cost = _costs.get(folder.path)
        if cost is None:
            cost = _kept_load_cost(folder)
        if cost is None:
            tiny = _cold_load_seconds(folder, 0)
            big = _cold_load_seconds(folder, PROBE_BYTES)
            per_byte = max(big - tiny, 1e-12) / PROBE_BYTES
            cost = LoadCost(max(tiny, 1e-6), per_byte)
            _keep_load_cost(folder, cost)
        _costs[folder.path] = cost
    return cost


COST_FILE = "loadcost.json"
COST_MAX_AGE = 7 * 86400.0  # a disk's speed is measured again after a week


def _kept_load_cost(folder: Folder) -> LoadCost | None:
    """The figures a process measured on this folder lately, or None (missing, old,
    or not two positive numbers: then it is measured again)."""
    path = os.path.join(folder.path, COST_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            kept = json.load(f)
        fresh = 0 <= time.time() - float(kept["measured"]) <= COST_MAX_AGE
        fixed, per_byte = float(kept["fixed"]), float(kept["per_byte"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not fresh or not (0 < fixed < 10 and 0 < per_byte < 1e-3):
        return None
    return LoadCost(fixed, per_byte)


def _keep_load_cost(folder: Folder, cost: LoadCost) -> None:
    kept = {"fixed": cost.fixed, "per_byte": cost.per_byte, "measured": time.time()}
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-cost-", dir=folder.path)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(kept, f)
        os.replace(tmp, os.path.join(folder.path, COST_FILE))
    except OSError:
        pass  # a read-only folder: measured again by the next process


def _cold_load_seconds(folder: Folder, nbytes: int) -> float:
    """Write a probe entry of ``nbytes``, drop it from the page cache, time its load."""
    digest = b"\0probe" + secrets.token_bytes(26)
    value = bytearray(secrets.token_bytes(nbytes)) if nbytes else 0
    write_entry(folder, digest, value)
    path = entry_path(folder, digest)
    try:
        _drop_from_page_cache(path)
        start = time.perf_counter()
        loaded = read_entry(folder, digest)
        seconds = time.perf_counter() - start
        del loaded
    finally:
        _unlink(path)
    return seconds


def _drop_from_page_cache(path: str) -> None:
    advise = getattr(os, "posix_fadvise", None)
    if advise is None:
        return  # (macOS, Windows) the probe then measures the page cache: optimistic
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        advise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
