"""Task-stream plot of profiler records, with matplotlib (imported only here).

One row per worker; each task is a bar from its start to its stop, coloured by its
prefix (a legend maps colours to prefixes); failed tasks are drawn red with a hatch
and an ``x`` at their end.  Time runs from the first task's start.

When no ``ax`` is given, the figure is made with ``pyplot`` so that it shows inline in
a notebook and with ``plt.show()`` in scripts; the Axes is returned (as pandas'
``.plot()`` does), so the figure is not displayed twice.
"""

from __future__ import annotations

from typing import Any

from .progress import natural_order, prefix_function

__all__ = ["task_stream", "figure_size"]

FAILED_COLOUR = "#d62728"
MAX_LEGEND = 15


def figure_size(workers: int) -> tuple[float, float]:
    return (10, 1.2 + 0.45 * max(1, workers))


VERDICT_COLOURS = {
    "holds-gil": "#ff7f0e",
    "releases-gil": "#2ca02c",
    "waits": "#1f77b4",
    None: "#bbbbbb",
}
VERDICT_LABELS = {
    "holds-gil": "holds the GIL",
    "releases-gil": "releases the GIL",
    "waits": "waits (I/O, sleep)",
    None: "not measured",
}


def task_stream(
    records: list, ax: Any = None, title: str | None = None, verdicts: dict | None = None
) -> Any:
    """Draw ``records`` (profiler TaskRecords) as a task stream; returns the Axes.

    ``verdicts`` (prefix -> verdict) colours bars by the kind of work instead of by
    prefix."""
    from matplotlib import colormaps
    from matplotlib.patches import Patch

    workers = sorted({r.worker for r in records}, key=natural_order)
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=figure_size(len(workers)))
    row_of = {worker: n for n, worker in enumerate(workers)}
    prefix = prefix_function()
    names: list[str] = []
    colour_of: dict[str, Any] = {}
    palette = colormaps["tab20"]
    t0 = min((r.start for r in records), default=0.0)
    bars: dict[tuple, list] = {}  # (row, prefix, failed) -> [(start, width)]
    for record in records:
        name = prefix(record.key)
        if verdicts is not None:
            name = VERDICT_LABELS[verdicts.get(name)]
            colour_of.setdefault(name, VERDICT_COLOURS[_verdict_of(name)])
        if name not in colour_of:
            colour_of[name] = palette(len(names) % palette.N)
        if name not in names:
            names.append(name)
        slot = (row_of[record.worker], name, record.error is not None)
        width = max(record.stop - record.start, 1e-6)
        bars.setdefault(slot, []).append((record.start - t0, width))
    for (row, name, failed), spans in bars.items():
        ax.broken_barh(
            spans,
            (row - 0.4, 0.8),
            facecolors=FAILED_COLOUR if failed else colour_of[name],
            edgecolor="black" if failed else "white",  # back-to-back tasks stay apart
            hatch="xx" if failed else None,
            linewidth=0.5,
        )
        if failed:
            ax.plot([s + w for s, w in spans], [row] * len(spans), "x", color="black", markersize=8)
    ax.set_yticks(range(len(workers)), labels=workers)
    ax.set_ylim(-0.6, max(len(workers), 1) - 0.4)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the first task started")
    failed = sum(1 for r in records if r.error is not None)
    default = f"task stream: {len(records)} tasks" + (f", {failed} failed" if failed else "")
    ax.set_title(title or default)
    handles = [Patch(color=colour_of[n], label=n) for n in names[:MAX_LEGEND]]
    if failed:
        failed_patch = Patch(facecolor=FAILED_COLOUR, edgecolor="black", hatch="xx", label="failed")
        handles.append(failed_patch)
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    return ax


def _verdict_of(label: str):
    return next(v for v, text in VERDICT_LABELS.items() if text == label)
