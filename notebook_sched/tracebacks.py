"""Trimming tracebacks to what the user wrote: frames and worker traceback text.

What a user reads after a failure is their cell, their task, and the error; the
frames of notebook_sched (engine, backends, run hooks), of IPython's ``run_code``, and
of the library code they lead into (``multiprocessing.connection.wait`` under an
interrupt, ``dask.compute`` leading into our scheduler) are noise.  The functions here
make trimmed *copies*: the exception's real ``__traceback__`` keeps every frame, so the
debugger still sees them all.  Frames *below* a task runner (the function that calls
a task in this process, marked with :func:`task_runner`) are the task's own, whoever
wrote them: a dask.bag task failing in ``json.loads`` keeps ``json/decoder.py``, since
that is where the task failed (only notebook_sched's own frames go there too).
``name_cells`` maps cloudpickle's ``<dynamic-code>`` file names in a worker's traceback
back to the notebook cell a function came from; ``short_library_paths`` names library
files by their import path.

Pure functions of frames and text: nothing here imports IPython.
"""

from __future__ import annotations

import os
import sys
import types
from typing import Any

__all__ = [
    "PACKAGE_DIR",
    "package_module",
    "trim_traceback",
    "trim_remote_traceback",
    "name_cells",
    "short_library_paths",
    "task_runner",
]

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def package_module(name: str) -> bool:
    """Is ``name`` one of this package's modules?  The one "is this frame ours" test:
    tracebacks shown to the user (here) and sent from dask workers leave those out."""
    return name == "notebook_sched" or name.startswith("notebook_sched.")


_task_runners: set[types.CodeType] = set()  # code of the functions that call a task


def task_runner(function: Any) -> Any:
    """Mark ``function`` as one that calls a task: frames below it are the task's.
    Returns it unchanged (no wrapper: it runs once per task)."""
    _task_runners.add(function.__code__)
    return function


def _is_runner(frame: types.FrameType) -> bool:
    return frame.f_code in _task_runners


def _is_ours(frame: types.FrameType) -> bool:
    name = frame.f_globals.get("__name__", "") or ""
    return package_module(name) or name.startswith("IPython.core.")  # run_code, magics


_LIBRARY_DIRS = tuple(
    {os.path.join(os.path.realpath(prefix), "lib") for prefix in (sys.prefix, sys.base_prefix)}
)


def _is_library(frame: types.FrameType) -> bool:
    filename = frame.f_code.co_filename
    if filename.startswith("<frozen "):
        return True
    return os.path.realpath(filename).startswith(_LIBRARY_DIRS)


def trim_traceback(tb: types.TracebackType | None) -> types.TracebackType | None:
    """A copy of the chain ``tb`` without notebook_sched's (and IPython's) frames.

    Library frames next to ours go too: those our frames called
    (``multiprocessing.connection.wait``, the selector an interrupt lands in) and those
    that only lead into ours (``dask.compute`` calling our scheduler).  Library frames
    between two frames of the user's code stay, and so do those a task runner called:
    the task's own frames (a Dask task, ``json.loads``).
    """
    entries = []
    while tb is not None:
        frame = tb.tb_frame
        if _is_runner(frame):
            kind = "runner"
        elif _is_ours(frame):
            kind = "ours"
        else:
            kind = "library" if _is_library(frame) else "user"
        entries.append((tb, kind))
        tb = tb.tb_next
    kept = []
    for i, (entry, kind) in enumerate(entries):
        if kind in ("ours", "runner"):
            continue
        if kind == "library":
            before = next((k for _, k in reversed(entries[:i]) if k != "library"), None)
            after = next((k for _, k in entries[i + 1 :] if k != "library"), None)
            if before != "runner" and {before, after} & {"ours", "runner"}:
                continue  # called by our code, or leading into it
        kept.append(entry)
    chain = None
    for entry in reversed(kept):
        chain = types.TracebackType(chain, entry.tb_frame, entry.tb_lasti, entry.tb_lineno)
    return chain


def _library_prefixes() -> list[str]:
    """The folders of the standard library and installed packages, as a traceback may
    print them (real path, as given, with the home folder as ``~``), longest first."""
    import sysconfig

    folders = set()
    for name in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(name)
        if path:
            folders.update({path, os.path.realpath(path)})
    home = os.path.expanduser("~")
    for path in list(folders):
        if home not in ("", os.sep) and path.startswith(home + os.sep):
            folders.add("~" + path[len(home) :])
    return sorted((f.rstrip(os.sep) + os.sep for f in folders), key=len, reverse=True)


def short_library_paths(text: str) -> str:
    """``~/.pyenv/.../lib/python3.11/json/decoder.py`` -> ``json/decoder.py``: library
    files named as their import path, so a shown traceback holds no machine path."""
    for prefix in _library_prefixes():
        if prefix in text:
            text = text.replace(prefix, "")
    return text


def trim_remote_traceback(text: str) -> str:
    """The worker's traceback text without frames from notebook_sched's files."""
    out: list[str] = []
    skipping = False
    for line in text.splitlines(keepends=True):
        if line.startswith('  File "'):
            path = line[len('  File "') :].split('"', 1)[0]
            skipping = os.path.abspath(path).startswith(PACKAGE_DIR)
            if skipping:
                continue
        elif skipping and line.startswith("    "):
            continue
        else:
            skipping = False
        out.append(line)
    return "".join(out)


def name_cells(text: str, shell: Any) -> str:
    """``File "<dynamic-code>", line 5, in parse`` -> ``Cell In[2], line 5, in parse``.

    cloudpickle ships functions defined in a notebook by value and names their code
    ``<dynamic-code>`` in the worker; the kernel still has the functions, so a name
    and line that match one defined in a cell give back the cell it came from.
    """
    if "<dynamic-code>" not in text or shell is None:
        return text
    cells = getattr(getattr(shell, "compile", None), "_filename_map", {})
    where: dict[str, set] = {}
    for value in list(shell.user_ns.values()):
        code = getattr(getattr(value, "func", value), "__code__", None)
        if code is not None and code.co_filename in cells:
            where.setdefault(code.co_name, set()).add(cells[code.co_filename])
        for nested in getattr(code, "co_consts", ()) if code is not None else ():
            if isinstance(nested, types.CodeType) and nested.co_filename in cells:
                where.setdefault(nested.co_name, set()).add(cells[nested.co_filename])

    def replace(line: str) -> str:
        head = '  File "<dynamic-code>", line '
        if not line.startswith(head):
            return line
        number, _, name = line[len(head) :].partition(", in ")
        found = where.get(name.strip(), set())
        if len(found) != 1 or not number.isdigit():
            return line
        return f"  Cell In[{next(iter(found))}], line {number}, in {name}"

    return "".join(replace(line) for line in text.splitlines(keepends=True))
