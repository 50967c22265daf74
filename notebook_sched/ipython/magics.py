"""``%schedule``, ``%%schedule`` and ``%sched_rerun``: a thin shell over the Python API.

::

    %schedule                                  # print the scheduler and settings
    %schedule threads --workers 4              # default for later cells (config.set)
    %%schedule processes --workers 2 --no-progress
    ...cell...                                 # this cell only; restored afterwards
    %sched_rerun                               # rerun the last failed graph on sync
    %%schedule threads --background            # run the cell as a job; returns at once
    %sched_jobs                                # this session's jobs
    %sched_rerun job                           # rerun a failed job's task here

Arguments are parsed with ``IPython.core.magic_arguments`` (never evaluated); any
mistake raises ``UsageError`` naming the valid choices.  Settings map to the config:
``--workers N|auto`` -> ``num_workers``, ``--progress/--no-progress`` -> ``progress``
True/False, ``--rerun/--no-rerun`` -> ``rerun`` ``"always"``/``"never"``,
``--address tcp://host:8786`` -> ``dask_address`` (the cluster of the ``dask`` backend),
``--cache [memory|disk|PATH]`` -> ``cache`` (``--cache`` alone: ``"memory"``; ``off``
or ``--no-cache``: False).

A ``%%schedule`` cell typed in a front end runs as an ordinary cell.  The extension
adds an input transformer (:func:`scope_cells`) that rewrites the first line,
``%%schedule processes``, into one line that opens the settings' scope
(``config.set``), and leaves the body as it is: the cell then runs with its own line
numbers, its last expression is displayed, and a traceback or ``ipdb where`` starts
at the user's line (``Cell In[2], line 5``), not at a
``get_ipython().run_cell_magic('schedule', ...)`` frame holding the whole cell as a
string.  The scope closes in IPython's ``post_run_cell`` event, which fires after
every cell, also one that raised or was interrupted.

``%%schedule ... --background`` is the exception: the cell is left to IPython's own
cell-magic transform, and the magic hands the body to ``jobs.submit_call``: it runs on
the job's thread with the settings as a ``config.set`` scope there, the cell returns
the :class:`~notebook_sched.background.Job` at once (so ``_`` is the job), and the job's
result is the body's last expression.

``get_ipython().run_cell_magic('schedule', ...)`` called from code still works: the
body is then compiled under a cached file name (so tracebacks and the debugger show
its source), executed in the user namespace, and its last expression evaluated
separately and returned, as ``%%time`` does.  Exceptions are not caught: they reach
IPython as any cell's do, ``sys.last_traceback`` is set and ``%debug`` works right
after.  The magic's own frames carry ``__tracebackhide__`` so tracebacks skip them.
"""

from __future__ import annotations

import argparse
import ast
import linecache
import sys
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from .. import config, schedulers
from .describe import backend_choices, describe_settings, describe_value

__all__ = ["ScheduleMagics", "scope_cells", "close_cell_scopes"]

_LABELS = {"num_workers": "workers"}


def _workers(text: str) -> int | str:
    if text == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"--workers takes a positive integer or 'auto' (one per CPU); got {text!r}"
        )
    return value


def settings_from(args: argparse.Namespace) -> dict[str, Any]:
    """The config changes asked for by parsed ``%schedule`` arguments."""
    changes: dict[str, Any] = {}
    if args.scheduler is not None:
        try:
            changes["scheduler"] = schedulers.canonical_name(args.scheduler)
        except ValueError:
            raise UsageError(
                f"Unknown scheduler {args.scheduler!r}. Choose one of: {backend_choices()}."
            ) from None
    if args.workers is not None:
        changes["num_workers"] = None if args.workers == "auto" else args.workers
    if args.address is not None:
        changes["dask_address"] = args.address
    if args.cache is not None and args.cache_off:
        raise UsageError("Use either --cache or --no-cache, not both.")
    if args.cache is not None:
        cache = args.cache
        if len(cache) > 1 and cache[0] == cache[-1] and cache[0] in "'\"":
            cache = cache[1:-1]  # IPython's argument split keeps a quoted path's quotes
        changes["cache"] = False if cache.lower() in ("off", "false") else cache
    elif args.cache_off:
        changes["cache"] = False
    for on, off, name, values in (
        ("progress_on", "progress_off", "progress", (True, False)),
        ("rerun_on", "rerun_off", "rerun", ("always", "never")),
    ):
        if getattr(args, on) and getattr(args, off):
            raise UsageError(f"Use either --{name} or --no-{name}, not both.")
        if getattr(args, on):
            changes[name] = values[0]
        elif getattr(args, off):
            changes[name] = values[1]
    return changes


@magics_class
class ScheduleMagics(Magics):
    """The notebook_sched magics (registered by ``%load_ext notebook_sched``)."""

    @magic_arguments()
    @argument(
        "scheduler",
        nargs="?",
        default=None,
        help="backend name or alias (sync, threads, processes, ...; see %%schedule without "
        "arguments for the list)",
    )
    @argument("-h", "--help", action="store_true", help="print this help and change nothing")
    @argument(
        "--background",
        action="store_true",
        help="%%%%schedule only: run the cell as a background job (returns the job at once)",
    )
    # Written by scope_cells on line 1 of a %%schedule cell: the settings last until the
    # cell ends (hidden from the usage; users write %%schedule).
    @argument("--this-cell", action="store_true", help=argparse.SUPPRESS)
    @argument("-w", "--workers", type=_workers, default=None, help="workers per run, or 'auto'")
    @argument(
        "--address",
        default=None,
        help="dask.distributed scheduler for the dask backend, e.g. tcp://127.0.0.1:8786",
    )
    @argument(
        "--cache",
        nargs="?",
        const="memory",
        default=None,
        metavar="memory|disk|PATH",
        help="reuse task results that nothing changed: in memory, on disk, or in a folder",
    )
    @argument("--no-cache", dest="cache_off", action="store_true", help="no result cache")
    @argument("--progress", dest="progress_on", action="store_true", help="show progress")
    @argument("--no-progress", dest="progress_off", action="store_true", help="hide progress")
    @argument(
        "--rerun", dest="rerun_on", action="store_true", help="always rerun remote failures here"
    )
    @argument(
        "--no-rerun", dest="rerun_off", action="store_true", help="never rerun failed tasks here"
    )
    @line_cell_magic
    def schedule(self, line: str = "", cell: str | None = None) -> Any:
        """Show or set the scheduler: for later cells (%schedule) or this cell (%%schedule)."""
        __tracebackhide__ = True
        args = parse_argstring(self.schedule, line)
        if args.help:
            print(usage())
            return None
        changes = settings_from(args)
        if args.background:
            if cell is None:
                raise UsageError(
                    "--background runs a cell as a job: write it as %%schedule on the first "
                    "line of a cell (e.g. %%schedule threads --background)."
                )
            from ..background import submit_call

            return submit_call(lambda: self._run_cell(cell), changes)
        if args.this_cell:
            _open_scopes.append(config.set(**changes))
            _show_magic_line(self.shell, line)
            return None
        if cell is None:
            if not changes:
                print(describe_settings())
                return None
            config.set(**changes)
            shown = ", ".join(
                f"{_LABELS.get(k, k)}: {describe_value(k, v)}" for k, v in changes.items()
            )
            print(f"notebook_sched: {shown} (for later cells)")
            return None
        with config.set(**changes):
            return self._run_cell(cell)

    def _run_cell(self, cell: str) -> Any:
        __tracebackhide__ = True
        shell = self.shell
        source = shell.transform_cell(cell)
        # IPython 9 counts the running cell before running it: label the body as its cell.
        number = max(shell.execution_count - 1, 0)
        filename = shell.compile.cache(source, number, raw_code=cell)
        tree = shell.transform_ast(shell.compile.ast_parse(source, filename=filename))
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        namespace = shell.user_ns
        exec(shell.compile(tree, filename, "exec"), namespace)
        if last is None:
            return None
        return eval(shell.compile(last, filename, "eval"), namespace)

    @line_magic
    def sched_advise(self, line: str = "") -> Any:
        """Which scheduler suits the last run: ``%sched_advise``; measure every run from
        now on: ``%sched_advise on`` (``off`` stops)."""
        from ..diagnostics.advice import advise

        word = line.strip().lower()
        if word in ("on", "off"):
            config.set(advise=word == "on")
            state = "measured" if word == "on" else "no longer measured"
            print(f"notebook_sched: runs are {state}; %sched_advise shows the advice.")
            return None
        if word:
            raise UsageError(f"%sched_advise takes nothing, 'on' or 'off'; got {line.strip()!r}.")
        try:
            return advise()
        except LookupError as why:
            raise UsageError(str(why)) from None

    @line_magic
    def sched_jobs(self, line: str = "") -> Any:
        """This session's background jobs: name, backend, state, progress, time."""
        if line.strip():
            raise UsageError(f"%sched_jobs takes no arguments; got {line.strip()!r}.")
        from ..background import jobs

        return jobs()

    @line_magic
    def sched_rerun(self, line: str = "") -> None:
        """Rerun the last failed graph on the sync scheduler, so errors rise in the task's
        frame; ``%sched_rerun JOB`` (a variable holding a job, or a job's name) reruns
        that job's failed task here."""
        __tracebackhide__ = True
        if line.strip():
            _find_job(self.shell, line.strip()).debug()
            return
        from ..debug import RerunUnavailable, rerun_graph
        from ..failure import last_failure

        failure = last_failure()
        try:
            rerun_graph(failure)
        except RerunUnavailable as why:
            raise UsageError(f"%sched_rerun: {why}.") from None
        print(
            f"notebook_sched: the graph ran without error on the sync scheduler; the failure "
            f"of task {failure.key!r} ({type(failure.exception).__name__} on "
            f"{failure.backend!r}, {failure.worker}) did not reproduce here. It may depend on "
            f"where it ran or on timing. notebook_sched.last_failure() still describes it."
        )


def _find_job(shell: Any, word: str) -> Any:
    """The job named by ``word``: a variable of the user's namespace holding a job, or a
    job's name (``job-3``); looked up, never evaluated."""
    from ..background import Job, jobs

    value = shell.user_ns.get(word) if word.isidentifier() else None
    if isinstance(value, Job):
        return value
    for job in jobs():
        if job.name == word:
            return job
    names = ", ".join(job.name for job in jobs()) or "none yet"
    raise UsageError(
        f"%sched_rerun {word}: no job of that variable or name (jobs: {names}). "
        f"Write %sched_rerun job, where job = ns.submit(...)."
    )


def usage() -> str:
    """The usage text magic_arguments wrote for ``%schedule`` (what ``%schedule?`` shows)."""
    text = ScheduleMagics.schedule.__doc__ or ""
    return text.replace("::\n\n", "", 1).strip("\n")


# -- %%schedule cells as ordinary cells ----------------------------------------------

_CELL_MAGIC = "%%schedule"
_open_scopes: list = []  # config.set scopes of %%schedule cells, closed after the cell


def scope_cells(lines: list[str]) -> list[str]:
    """Input transformer: ``%%schedule ARGS`` on line 1 becomes one line opening the scope.

    The body keeps its lines, so line numbers in tracebacks are the cell's own.
    """
    if not lines:
        return lines
    first = lines[0]
    head, _, rest = first.partition(" ")
    if head.rstrip("\n") != _CELL_MAGIC:
        return lines
    if len(lines) == 1 or not "".join(lines[1:]).strip():
        return lines  # no body: let IPython run the magic (it reports the mistake)
    if "--background" in rest.split():
        return lines  # IPython runs the cell magic, which submits the body as a job
    line = ("--this-cell " + rest.strip()).strip()
    return [f"get_ipython().run_line_magic('schedule', {line!r})\n", *lines[1:]]


def _show_magic_line(shell: Any, line: str) -> None:
    """Let tracebacks and the debugger show line 1 as typed (``%%schedule processes``).

    IPython keeps the transformed source of a cell in ``linecache`` for tracebacks;
    only the display of line 1 changes here, the code that runs is not touched.
    """
    cells = getattr(shell.compile, "_filename_map", {})
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename not in cells:
        frame = frame.f_back
    entry = linecache.cache.get(frame.f_code.co_filename) if frame is not None else None
    if entry is None or not entry[2] or "--this-cell" not in entry[2][0]:
        return
    typed = (_CELL_MAGIC + " " + line.replace("--this-cell", "", 1).strip()).rstrip()
    lines = [typed + "\n", *entry[2][1:]]
    linecache.cache[frame.f_code.co_filename] = (entry[0], entry[1], lines, entry[3])


def close_cell_scopes(*_: Any) -> None:
    """``post_run_cell`` handler: restore the settings a ``%%schedule`` cell changed."""
    while _open_scopes:
        _open_scopes.pop().__exit__(None, None, None)
