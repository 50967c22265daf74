"""The profiler: records every task's key, worker, start and stop, on any backend.

::

    with notebook_sched.Profiler() as prof:
        total.compute(scheduler="processes")
    prof.plot()        # task stream: a row per worker, coloured by prefix
    prof.summary()     # per prefix: count, failed, total and mean seconds

It is an :class:`~notebook_sched.events.Observer` registered for the ``with`` block
(or passed per call with ``observers=[prof]``), so it sees what every backend emits.
Records are appended as tuples (atomic under the GIL; events arrive on worker threads
under ``threads``); a failed task's start comes from its ``task_started`` event, since
``task_failed`` carries no times.  Times are ``time.time()`` seconds as the backends
report them (measured in the worker process for ``processes``).

Plots (``plot.py``) import matplotlib only when called.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..events import Observer, RunInfo
from .progress import natural_order, prefix_function

__all__ = ["Profiler", "TaskRecord", "ProfileSummary", "SummaryRow"]


class TaskRecord(NamedTuple):
    key: Hashable
    worker: str
    start: float
    stop: float
    error: BaseException | None = None  # set for a task that failed

    @property
    def duration(self) -> float:
        return self.stop - self.start


class Profiler(Observer):
    """Records tasks of every run while registered (see module docstring)."""

    def __init__(self) -> None:
        from .advice import Advisor

        self.advisor = Advisor()  # CPU, GIL and verdicts per prefix; advise(profiler)
        self.task_measured = self.advisor.task_measured
        self.task_done = self.advisor.task_done
        self.records: list[TaskRecord] = []
        self.runs: list[tuple[RunInfo, float, float | None, BaseException | None]] = []
        self._starts: dict = {}  # key -> time.time() of its task_started
        self._runs_lock = threading.Lock()  # guards runs

    # -- events ------------------------------------------------------------------------
    def graph_started(self, run: RunInfo) -> None:
        self.advisor.graph_started(run)
        with self._runs_lock:
            self.runs.append((run, time.time(), None, None))

    def task_started(self, key: Hashable, worker: str) -> None:
        self._starts[key] = time.time()

    def task_finished(self, key: Hashable, worker: str, start: float, stop: float) -> None:
        self._starts.pop(key, None)
        self.records.append(TaskRecord(key, worker, start, stop))

    def task_failed(self, key: Hashable, worker: str, error: BaseException) -> None:
        now = time.time()
        start = self._starts.pop(key, now)
        self.records.append(TaskRecord(key, worker, min(start, now), now, error))

    def graph_finished(self, run: RunInfo, error: BaseException | None) -> None:
        self.advisor.graph_finished(run, error)
        with self._runs_lock:
            for i in range(len(self.runs) - 1, -1, -1):
                if self.runs[i][0] is run:
                    self.runs[i] = (run, self.runs[i][1], time.time(), error)
                    break

    # -- results -----------------------------------------------------------------------
    def clear(self) -> None:
        from .advice import Advisor

        self.records = []
        self.runs = []
        self._starts = {}
        self.advisor = Advisor()
        self.task_measured = self.advisor.task_measured
        self.task_done = self.advisor.task_done

    @property
    def failed(self) -> list[TaskRecord]:
        return [r for r in self.records if r.error is not None]

    @property
    def workers(self) -> list[str]:
        return sorted({r.worker for r in self.records}, key=natural_order)

    def summary(self) -> ProfileSummary:
        """A per-prefix table: count, failed, total and mean seconds (largest total first)."""
        prefix = prefix_function()
        groups: dict[str, list] = {}
        for record in self.records:
            groups.setdefault(prefix(record.key), []).append(record)
        measured = self._verdicts()
        rows = []
        for name, records in groups.items():
            total = sum(r.duration for r in records)
            failed = sum(1 for r in records if r.error is not None)
            cpu, gil, verdict = measured.get(name, (None, None, None))
            rows.append(
                SummaryRow(
                    name, len(records), failed, total, total / len(records), cpu, gil, verdict
                )
            )
        rows.sort(key=lambda row: (-row.total, row.prefix))
        return ProfileSummary(rows)

    def _verdicts(self) -> dict:
        """prefix -> (CPU share, busy-GIL share, verdict) over every recorded run."""
        try:
            rows = self.advisor.advice(every_run=True).rows
        except LookupError:
            return {}
        return {
            r.prefix: (
                None if r.cpu is None or not r.wall else r.cpu / r.wall,
                r.gil_busy,
                r.verdict,
            )
            for r in rows
            if r.verdict is not None
        }

    def plot(self, ax: Any = None, *, title: str | None = None, color_by: str = "prefix") -> Any:
        """Draw the task stream with matplotlib; returns the Axes.

        In a notebook, ``prof.plot()`` as a cell's last line shows the figure only (the
        returned Axes displays as nothing, instead of a stray ``<Axes: ...>`` line).
        """
        from .plot import task_stream

        made_here = ax is None
        if color_by not in ("prefix", "verdict"):
            raise ValueError(f"color_by must be 'prefix' or 'verdict'; got {color_by!r}")
        verdicts = None
        if color_by == "verdict":
            verdicts = {name: v[2] for name, v in self._verdicts().items()}
        ax = task_stream(self.records, ax=ax, title=title, verdicts=verdicts)
        if made_here:
            try:  # IPython calls _ipython_display_ instead of printing the repr
                ax._ipython_display_ = _display_nothing
            except AttributeError:
                pass
        return ax

    def __repr__(self) -> str:
        return (
            f"<Profiler tasks={len(self.records)} failed={len(self.failed)} "
            f"workers={len(self.workers)} runs={len(self.runs)}>"
        )

    def _repr_html_(self) -> str:
        """In a notebook: a line of counts, the summary table and the task stream."""
        head = (
            f"<b>Profiler</b>: {_count(len(self.records), 'task')}, {len(self.failed)} failed, "
            f"{_count(len(self.workers), 'worker')}, {_count(len(self.runs), 'run')}"
        )
        if not self.records:
            return f"<div>{head} (nothing recorded yet)</div>"
        return f"<div>{head}{self.summary()._repr_html_()}{self._plot_png()}</div>"

    def _plot_png(self) -> str:
        try:
            from matplotlib.figure import Figure
        except ImportError:
            return ""
        import base64
        import io

        from .plot import figure_size, task_stream

        figure = Figure(figsize=figure_size(len(self.workers)))  # not pyplot: shown once
        task_stream(self.records, ax=figure.subplots())
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", bbox_inches="tight", dpi=80)
        data = base64.b64encode(buffer.getvalue()).decode("ascii")
        return f"<img alt='task stream' src='data:image/png;base64,{data}'>"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _display_nothing() -> None:
    """The notebook display of an Axes that ``Profiler.plot`` made (its figure shows)."""


@dataclass
class SummaryRow:
    prefix: str
    count: int
    failed: int
    total: float  # seconds spent in tasks of this prefix
    mean: float
    cpu: float | None = None  # CPU share of the wall time (None: not measured here)
    gil_busy: float | None = None  # busy-GIL share while its tasks ran
    verdict: str | None = None  # holds-gil / releases-gil / waits (advice.py)


class ProfileSummary:
    """Rows of :meth:`Profiler.summary`; prints as a table, renders as HTML."""

    columns = ("prefix", "count", "failed", "total (s)", "mean (s)", "CPU", "GIL busy", "verdict")

    def __init__(self, rows: list[SummaryRow]):
        self.rows = rows

    def __iter__(self):
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, prefix: str) -> SummaryRow:
        for row in self.rows:
            if row.prefix == prefix:
                return row
        raise KeyError(f"no task with prefix {prefix!r}; prefixes: {[r.prefix for r in self]}")

    def _cells(self) -> list[tuple[str, ...]]:
        from .advice import verdict_words  # the advice's words: one vocabulary

        def pct(value):
            return "-" if value is None else f"{min(value, 1.0):.0%}"

        return [
            (
                r.prefix,
                str(r.count),
                str(r.failed),
                f"{r.total:.4f}",
                f"{r.mean:.6f}",
                pct(r.cpu),
                pct(r.gil_busy),
                verdict_words(r.verdict) if r.verdict else "-",
            )
            for r in self.rows
        ]

    def __repr__(self) -> str:
        cells = [self.columns, *self._cells()]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.columns))]
        lines = []
        for n, row in enumerate(cells):
            left = row[0].ljust(widths[0])
            rest = [value.rjust(width) for value, width in zip(row[1:], widths[1:], strict=True)]
            lines.append("  ".join([left, *rest]))
            if n == 0:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>"
            for row in self._cells()
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
