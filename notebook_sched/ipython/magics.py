"""``%schedule``, ``%%schedule`` and ``%sched_rerun``: a thin shell over the Python API.

::

    %schedule                                  # print the scheduler and settings
    %schedule threads --workers 4              # default for later cells (config.set)
    %%schedule processes --workers 2 --no-progress
    ...cell...                                 # this cell only; restored afterwards
    %sched_rerun                               # rerun the last failed graph on sync

Arguments are parsed with ``IPython.core.magic_arguments`` (never evaluated); any
mistake raises ``UsageError`` naming the valid choices.  Settings map to the config:
``--workers N|auto`` -> ``num_workers``, ``--progress/--no-progress`` -> ``progress``
True/False, ``--rerun/--no-rerun`` -> ``rerun`` ``"always"``/``"never"``,
``--address tcp://host:8786`` -> ``dask_address`` (the cluster of the ``dask`` backend).

The cell body of ``%%schedule`` runs the way ``%%time`` runs its cell: IPython's own
input transformations, compiled under a cached file name (so tracebacks and the
debugger show its source), executed in the user namespace, the last expression
evaluated separately and returned, so IPython displays it as the cell's result.
Exceptions are not caught: they reach IPython as any cell's do, ``sys.last_traceback``
is set and ``%debug`` works right after.  The magic's own frames carry
``__tracebackhide__`` so tracebacks skip them.  Top-level ``await`` is not supported
in a ``%%schedule`` cell.
"""

from __future__ import annotations

import argparse
import ast
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from .. import config, schedulers
from .describe import backend_choices, describe_settings, describe_value

__all__ = ["ScheduleMagics"]

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
    @argument("-w", "--workers", type=_workers, default=None, help="workers per run, or 'auto'")
    @argument(
        "--address",
        default=None,
        help="dask.distributed scheduler for the dask backend, e.g. tcp://127.0.0.1:8786",
    )
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
        changes = settings_from(parse_argstring(self.schedule, line))
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
    def sched_rerun(self, line: str = "") -> None:
        """Rerun the last failed graph on the sync scheduler, so errors rise in the task's frame."""
        __tracebackhide__ = True
        if line.strip():
            raise UsageError("%sched_rerun takes no arguments; it reruns the last failed graph.")
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
