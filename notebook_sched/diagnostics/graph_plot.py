"""Drawing a task graph: ``Delayed.visualize()`` and :func:`visualize`.

With the ``graphviz`` package and its ``dot`` program installed, the graph is a
``graphviz.Digraph`` (a notebook shows it as SVG; ``filename=`` renders it to a file),
drawn as Dask draws graphs: a circle per task, a box per piece of data, arrows from
inputs to the tasks that read them.  Without graphviz, matplotlib draws the same
graph in layers (inputs on the left, each task one column right of its deepest input);
``filename=`` saves the figure.

Only what the requested keys need is drawn (the graph is compiled and culled first,
so a bad graph fails here as it would at compute).  Tasks are labelled with their
prefix (``key_split``); graphs of more than ``LABEL_LIMIT`` nodes go unlabelled.
Delayed objects reach this module through ``delayed.set_visualizer`` (registered by
``diagnostics.install``): drawing lives above the delayed layer.
"""

from __future__ import annotations

import shutil
from typing import Any

from ..graph import VALUE, compile_graph, flatten_keys, key_split, to_mapping

__all__ = ["visualize"]

LABEL_LIMIT = 60


def _compiled(obj: Any):
    graph = to_mapping(obj)
    keys = obj.__dask_keys__() if hasattr(obj, "__dask_keys__") else list(graph)
    return compile_graph(graph, flatten_keys(keys if isinstance(keys, list) else [keys]))


def _has_graphviz() -> bool:
    try:
        import graphviz  # noqa: F401
    except ImportError:
        return False
    return shutil.which("dot") is not None


def visualize(obj: Any, filename: str | None = None, *, engine: str = "auto", ax: Any = None):
    """Draw the graph of ``obj`` (a Delayed, a collection or a graph mapping).

    ``engine``: ``"auto"`` (graphviz when installed, else matplotlib), ``"graphviz"``
    or ``"matplotlib"``.  Returns the ``graphviz.Digraph`` or the matplotlib Axes.
    """
    if engine not in ("auto", "graphviz", "matplotlib"):
        raise ValueError(f"engine must be 'auto', 'graphviz' or 'matplotlib'; got {engine!r}")
    compiled = _compiled(obj)
    if engine == "graphviz" or (engine == "auto" and ax is None and _has_graphviz()):
        return _graphviz(compiled, filename)
    return _matplotlib(compiled, filename, ax)


def _graphviz(compiled, filename: str | None):
    import graphviz

    dot = graphviz.Digraph(graph_attr={"rankdir": "BT"})
    labelled = len(compiled.keys) <= LABEL_LIMIT
    for i, key in enumerate(compiled.keys):
        data = compiled.specs[i][0] == VALUE
        dot.node(str(i), key_split(key) if labelled else "", shape="box" if data else "circle")
        for dep in compiled.deps[i]:
            dot.edge(str(dep), str(i))
    if filename is not None:
        stem, _, fmt = filename.rpartition(".")
        dot.render(stem or filename, format=fmt or "png", cleanup=True)
    return dot


def _layers(compiled) -> list[int]:
    order = sorted(range(len(compiled.keys)), key=compiled.priority.__getitem__)
    depth = [0] * len(compiled.keys)
    for i in order:  # inputs run (and so come) before the tasks that read them
        depth[i] = 1 + max((depth[d] for d in compiled.deps[i]), default=-1)
    return depth


def _matplotlib(compiled, filename: str | None, ax: Any):
    from matplotlib.collections import LineCollection

    depth = _layers(compiled)
    rows: dict[int, int] = {}
    for d in depth:
        rows[d] = rows.get(d, 0) + 1
    tallest = max(rows.values(), default=1)
    placed: dict[int, int] = {}
    where = []
    for d in depth:  # each layer centred, top to bottom
        where.append((d, (tallest - rows[d]) / 2 + placed.get(d, 0)))
        placed[d] = placed.get(d, 0) + 1
    made_here = ax is None
    if made_here:
        import matplotlib.pyplot as plt

        width = min(14, 2 + 1.2 * (max(depth, default=0) + 1))
        _, ax = plt.subplots(figsize=(width, min(10, 1 + 0.5 * max(rows.values(), default=1))))
    edges = [(dep, i) for i in range(len(compiled.keys)) for dep in compiled.deps[i]]
    if len(compiled.keys) <= LABEL_LIMIT:  # arrows, bent a little so none hides behind a node
        for dep, i in edges:
            ax.annotate(
                "",
                where[i],
                xytext=where[dep],
                arrowprops={
                    "arrowstyle": "-|>",
                    "color": "#888",
                    "shrinkA": 9,
                    "shrinkB": 9,
                    "connectionstyle": "arc3,rad=0.15",
                },
                zorder=1,
            )
    else:
        segments = [[where[dep], where[i]] for dep, i in edges]
        ax.add_collection(LineCollection(segments, colors="#999", linewidths=0.6, zorder=1))
    for data, marker in ((False, "o"), (True, "s")):
        points = [p for i, p in enumerate(where) if (compiled.specs[i][0] == VALUE) == data]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.scatter(xs, ys, s=220, marker=marker, c="#9ecae1", edgecolors="#3182bd", zorder=2)
    if len(compiled.keys) <= LABEL_LIMIT:
        for key, (x, y) in zip(compiled.keys, where, strict=True):
            ax.annotate(
                key_split(key),
                (x, y),
                xytext=(0, 11),
                textcoords="offset points",
                ha="center",
                fontsize="small",
            )
    ax.set_axis_off()
    ax.margins(0.15)
    data = sum(1 for spec in compiled.specs if spec[0] == VALUE)
    ax.set_title(
        f"{len(compiled.keys) - data} tasks, {data} data; inputs on the left", fontsize="small"
    )
    ax.invert_yaxis()
    ax.autoscale_view()
    if filename is not None:
        ax.figure.savefig(filename, bbox_inches="tight")
    if made_here:
        try:  # a cell ending in .visualize() shows the figure, not an <Axes: ...> line
            ax._ipython_display_ = _display_nothing
        except AttributeError:
            pass
    return ax


def _display_nothing() -> None:
    """The notebook display of an Axes this module made (its figure shows by itself)."""
