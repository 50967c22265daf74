"""The cluster's socket directory: where it is, who owns it, and who cleans it up.

Every socket of a cluster (the scheduler's, each worker's peer socket) lives in one
fresh directory that only this user can enter (``mkdtemp``: 0700).  An AF_UNIX path
must fit in ``sun_path`` (~104-108 bytes), so the directory must be short:

1. the temporary directory (``$TMPDIR``, ``tempfile.gettempdir()``);
2. ``$XDG_RUNTIME_DIR`` - per user, 0700, on systemd machines - if it is ours and
   private;
3. ``/tmp`` (a 0700 directory in it: others can neither enter it nor, /tmp being
   sticky, remove it).

Only when none of them is short enough (or writable) does ``protocol.listen_address``
fall back to TCP on 127.0.0.1, which every local user can connect to: the HMAC
handshake still keeps them out, but they can open connections (``listener.py``
bounds what that costs).

Clean-up: ``LocalCluster.close`` (and the atexit hook) removes the directory.  A
process killed by SIGTERM (or SIGHUP) runs no atexit hooks, so
:func:`install_sigterm_cleanup` chains a handler that removes the directories of the
open clusters and then lets the signal do what it did before (the default:
terminate).  Whatever is left by a SIGKILL is removed by the next cluster that
starts: :func:`sweep` deletes our directories (name prefix, an ``owner`` file with
the pid, owned by this user) whose owner process is dead - never one whose owner
still runs.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Callable, Iterable

__all__ = ["private_dir", "remove_dir", "sweep", "install_sigterm_cleanup", "PREFIX"]

PREFIX = "notebook_sched-"
OWNER_FILE = "owner"
MAX_SOCKET_PATH = 100  # sun_path is 104 (macOS) to 108 (Linux) bytes, with its NUL
SOCKET_NAME_ROOM = 32  # the longest name we put inside, "worker-123456.sock", and slack
_MKDTEMP_SUFFIX = 8


def _candidates() -> list[str]:
    bases = [tempfile.gettempdir()]
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and _private(runtime):
        bases.append(runtime)
    bases.append("/tmp")
    return list(dict.fromkeys(bases))


def _private(path: str) -> bool:
    try:
        info = os.stat(path)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o077


def _short_enough(base: str) -> bool:
    length = len(os.path.join(base, PREFIX)) + _MKDTEMP_SUFFIX + 1 + SOCKET_NAME_ROOM
    return length <= MAX_SOCKET_PATH


def private_dir() -> str:
    """A fresh 0700 directory for the cluster's sockets, short enough for AF_UNIX when
    any candidate is (see the module docstring); it holds an ``owner`` file."""
    if hasattr(os, "getuid"):
        for base in _candidates():
            if not _short_enough(base):
                continue
            try:
                directory = tempfile.mkdtemp(prefix=PREFIX, dir=base)
            except OSError:
                continue
            _mark(directory)
            return directory
    directory = tempfile.mkdtemp(prefix=PREFIX)  # too long everywhere: TCP it is
    _mark(directory)
    return directory


def _mark(directory: str) -> None:
    with open(os.path.join(directory, OWNER_FILE), "w") as f:
        f.write(f"{os.getpid()}\n")


def remove_dir(path: str | None) -> None:
    if path:
        shutil.rmtree(path, ignore_errors=True)


def sweep(bases: Iterable[str] | None = None) -> list[str]:
    """Remove socket directories left by clusters whose process is dead; returns them."""
    if not hasattr(os, "getuid"):
        return []
    removed = []
    for base in _candidates() if bases is None else bases:
        try:
            names = [n for n in os.listdir(base) if n.startswith(PREFIX)]
        except OSError:
            continue
        for name in names:
            path = os.path.join(base, name)
            if _stale(path):
                remove_dir(path)
                removed.append(path)
    return removed


def _stale(path: str) -> bool:
    try:
        info = os.lstat(path)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            return False
        with open(os.path.join(path, OWNER_FILE)) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return False  # not one of ours (or not readable): leave it
    if pid == os.getpid() or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # alive, someone else's process (pid reused)
    return False


_installed: set = set()  # signals whose handler we chained; guarded by _install_lock
_install_lock = threading.Lock()
_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


def install_sigterm_cleanup(directories: Callable[[], list[str]]) -> None:
    """On SIGTERM (and SIGHUP: a closed terminal), remove ``directories()`` and then
    act as before the handler was set.

    Only from the main thread, and not for a signal that is ignored; once per process."""
    if threading.current_thread() is not threading.main_thread():
        return
    with _install_lock:
        for signum in _SIGNALS:
            if signum not in _installed:
                _chain(signum, directories)
                _installed.add(signum)


def _chain(signum: int, directories: Callable[[], list[str]]) -> None:
    previous = signal.getsignal(signum)
    if previous in (signal.SIG_IGN, None):
        return

    def cleanup_then_previous(number, frame):
        for directory in directories():
            remove_dir(directory)
        if callable(previous):
            previous(number, frame)
            return
        signal.signal(number, signal.SIG_DFL)
        os.kill(os.getpid(), number)

    signal.signal(signum, cleanup_then_previous)
