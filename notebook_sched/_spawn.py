"""Start a spawned worker process when the caller's main script is not a file.

A ``spawn`` child re-runs the caller's main script before it unpickles anything, so
that functions defined there can be found.  multiprocessing finds the script through
``__main__.__file__``, and trusts it: a program fed to ``python -`` (a heredoc, a pipe)
has ``__file__ == "<stdin>"``, and other embedders set names such as ``"<string>"``.
The child then tries to open ``<stdin>`` in the caller's folder, fails with
``FileNotFoundError`` before our code runs, and exits with code 1: every worker dies at
birth, and the user reads "worker died" about a task that never ran.

There is no script to re-run in that case (our tasks are pickled by value, main's
functions included), so :func:`start` hides ``__main__.__file__`` from multiprocessing
while the process starts, as it would be for ``python -c``.  Both kinds of worker start
through it: the process pool's (``schedulers/_pool.py``) and the local cluster's
(``distributed/cluster.py``).  A lock keeps two starting threads from restoring each
other's view; any other reader of ``__main__.__file__`` sees it absent only for the
few milliseconds of a start, and only when it names no file.
"""

from __future__ import annotations

import os
import sys
import threading

__all__ = ["start", "main_script_is_missing"]

_lock = threading.Lock()


def main_script_is_missing() -> bool:
    """True when ``__main__`` names a script path that is no file (``<stdin>``)."""
    main = sys.modules.get("__main__")
    if main is None or getattr(main, "__spec__", None) is not None:
        return False  # python -m: the child imports the module by name
    path = getattr(main, "__file__", None)
    return isinstance(path, str) and not os.path.isfile(path)


def start(process) -> None:
    """``process.start()``, with a main script that is no file hidden from the child."""
    if not main_script_is_missing():
        process.start()
        return
    with _lock:
        main = sys.modules["__main__"]
        path = main.__dict__.pop("__file__", None)
        try:
            process.start()
        finally:
            if path is not None:
                main.__file__ = path
