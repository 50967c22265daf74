"""The command line: ``python -m notebook_sched COMMAND`` (also ``notebook-sched``).

Commands:

``demo``  run a sample workload of a few hundred tasks (NumPy and pure Python) on every
          local backend and print wall time, speed-up and an agreement check.

Kept thin: each command imports its module only when chosen.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__

__all__ = ["main"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m notebook_sched",
        description="Run Dask-style task graphs from Jupyter: command-line helpers.",
    )
    parser.add_argument("--version", action="version", version=f"notebook_sched {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo = commands.add_parser(
        "demo",
        help="run a sample workload on sync, threads and processes and compare",
        description=(
            "Run a sample workload (NumPy tasks that release the GIL and pure-Python "
            "tasks that hold it) on the sync, threads and processes backends; print each "
            "backend's wall time, its speed-up over sync, and whether all agree."
        ),
    )
    demo.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        metavar="N",
        help="threads or processes per backend (default: one per CPU)",
    )
    demo.add_argument(
        "--chunks",
        type=_positive_int,
        default=96,
        metavar="N",
        help="tasks in each half of the workload (default: 96, about 380 tasks in all)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from .demo import main as demo_main

        return demo_main(workers=args.workers, chunks=args.chunks)
    raise AssertionError(f"unhandled command {args.command!r}")  # argparse rejects others


if __name__ == "__main__":
    sys.exit(main())
