"""Where the disk tier lives, and the key that signs its entries.

``cache="disk"`` means ``$NOTEBOOK_SCHED_CACHE_DIR`` when set, else ``notebook_sched``
under the platform's user cache folder (``$XDG_CACHE_HOME`` or ``~/.cache`` on Linux,
``~/Library/Caches`` on macOS, ``%LOCALAPPDATA%`` on Windows); any other string or
path names the folder itself.  ``True`` and ``"memory"`` have no folder.

A folder holds::

    key             32 random bytes, mode 0600: the HMAC key of this folder's entries
    loadcost.json   what loading an entry costs on this disk, as last measured
    v2/ab/ab12...   one entry per fingerprint (``disk.py`` has the format)

The folder is created with mode 0700.  The key is created with
``os.open(..., O_CREAT | O_EXCL, 0o600)``, so of two kernels that start at once one
creates it and the other reads it (waiting for its 32 bytes); a key that is not a
regular file owned by this user with no group or other permissions is refused, since
whoever could write it could make us unpickle their file.  With the key private,
a file in the folder that this user's cache did not write fails verification and is
never unpickled (``disk.py``).

:func:`open_folder` is called in the caller and in every worker process that writes
entries; each process reads the key once (``_opened``).
"""

from __future__ import annotations

import os
import secrets
import stat
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["ENV_DIR", "Folder", "FolderError", "default_root", "folder_for", "open_folder"]

ENV_DIR = "NOTEBOOK_SCHED_CACHE_DIR"
KEY_NAME = "key"
KEY_BYTES = 32
ENTRIES = "v2"  # bumped with the entry format: an old folder's entries are not read


class FolderError(OSError):
    """The disk tier's folder or key cannot be used (says why and what to do)."""


@dataclass(frozen=True)
class Folder:
    """An opened cache folder: its path and the key that signs its entries."""

    path: str
    key: bytes

    @property
    def entries(self) -> str:
        return os.path.join(self.path, ENTRIES)

    def __repr__(self) -> str:  # never shows the key
        return f"Folder({self.path!r})"


def default_root() -> str:
    """``$NOTEBOOK_SCHED_CACHE_DIR``, else ``notebook_sched`` in the user cache folder."""
    given = os.environ.get(ENV_DIR)
    if given:
        return os.path.abspath(os.path.expanduser(given))
    if sys.platform == "darwin":
        base = os.path.expanduser("~/Library/Caches")
    elif os.name == "nt":
        base = os.environ.get("LOCALAPPDATA") or os.path.expanduser("~\\AppData\\Local")
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "notebook_sched")


def folder_for(setting: Any) -> str | None:
    """The folder a ``cache`` setting names, or None for memory only (or off)."""
    if setting is None or isinstance(setting, bool) or setting == "memory":
        return None
    if setting == "disk":
        return default_root()
    if isinstance(setting, str | os.PathLike):
        return os.path.abspath(os.path.expanduser(os.fspath(setting)))
    raise ValueError(
        f"cache must be False, True, 'memory', 'disk' or a folder path; got {setting!r}. "
        f"Use e.g. cache='disk' (under ~/.cache/notebook_sched) or cache='/tmp/mycache'."
    )


_opened: dict[str, Folder] = {}
_open_lock = threading.Lock()  # guards _opened


def open_folder(path: str) -> Folder:
    """The folder at ``path``, created private if missing, with its key (made once)."""
    folder = _opened.get(path)
    if folder is not None:
        return folder
    with _open_lock:
        folder = _opened.get(path)
        if folder is None:
            _make_private_dir(path)
            folder = _opened[path] = Folder(path, _load_key(os.path.join(path, KEY_NAME)))
    return folder


def forget_opened() -> None:
    """Read keys again on the next open (a test that replaces a folder)."""
    with _open_lock:
        _opened.clear()


def _make_private_dir(path: str) -> None:
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        os.makedirs(os.path.join(path, ENTRIES), mode=0o700, exist_ok=True)
    except OSError as exc:
        raise FolderError(
            f"cannot create the cache folder {path!r} ({exc.strerror or exc}); choose another "
            f"with cache='/some/folder' or ${ENV_DIR}, or use cache='memory'"
        ) from exc
    if not os.path.isdir(path):
        raise FolderError(f"the cache folder {path!r} is not a folder")


def _load_key(key_path: str) -> bytes:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(key_path, flags, 0o600)
    except FileExistsError:
        return _read_key(key_path)
    except OSError as exc:
        raise FolderError(f"cannot create the cache key {key_path!r}: {exc}") from exc
    key = secrets.token_bytes(KEY_BYTES)
    try:
        written = 0
        while written < KEY_BYTES:
            written += os.write(fd, key[written:])
    finally:
        os.close(fd)
    return key


def _read_key(key_path: str, patience: float = 2.0) -> bytes:
    """The existing key, once its creator has written it whole; checked private."""
    deadline = time.monotonic() + patience
    while True:
        try:
            fd = os.open(key_path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError as exc:
            raise FolderError(f"cannot read the cache key {key_path!r}: {exc}") from exc
        try:
            _check_private(key_path, os.fstat(fd))
            key = os.read(fd, KEY_BYTES + 1)
        finally:
            os.close(fd)
        if len(key) == KEY_BYTES:
            return key
        if len(key) > KEY_BYTES or time.monotonic() > deadline:
            raise FolderError(
                f"the cache key {key_path!r} is damaged ({len(key)} bytes, not {KEY_BYTES}); "
                f"remove the folder (its entries cannot be verified without it) or use another"
            )
        time.sleep(0.01)  # another process has created it and is writing it


def _check_private(key_path: str, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise FolderError(f"the cache key {key_path!r} is not a regular file; refusing it")
    problems = []
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        problems.append(f"owned by uid {st.st_uid}, not this user ({os.getuid()})")
    if os.name != "nt" and st.st_mode & 0o077:
        problems.append(f"mode {stat.S_IMODE(st.st_mode):04o}, not 0600")
    if problems:
        raise FolderError(
            f"the cache key {key_path!r} is {' and '.join(problems)}: someone else could "
            f"forge entries. Refusing the folder; remove it or choose another cache folder"
        )
