"""The workloads of the memory table (``memory_table.py``), where Dask users meet memory trouble.

Array workloads after the coiled benchmarks (``test_array.py``), in two sizes: the
default is scaled down so the whole table runs in minutes on 2 cores, keeping each
workload's *shape* (its grid of chunks, hence its graph); ``full`` is the size of
issue 22's measurements where it names one.

* ``anomaly``: ``x - x.mean(axis=0)`` reduced over rows (each block is needed by a
  column mean and again after it: the order decides how many stay alive);
* ``double-diff``: ``a[1:, 1:] - b[:-1, :-1]`` of two arrays (misaligned chunks);
* ``vorticity``: ``dx * pad_rechunk(u) - dy * pad_rechunk(v)`` (a wrap pad merged
  back into the last chunk, as xgcm does), in 2-D;
* ``dot``: ``(a @ a.T).sum()``; ``tree-reduction``: ``x.sum()``;
* ``rechunk``: row slabs to column slabs (all-to-all), then a sum;
* ``map-overlap``: a depth-1 ``map_overlap`` with reflecting boundaries, then a sum;
* ``groupby`` and ``set-index``: a ``dask.datasets.timeseries`` frame (task shuffle);
* ``no-op``: a binary tree of ~``2 * leaves`` no-op tasks (``workloads.tree_reduction``);
* ``fan-in``: ``n`` no-op tasks read by one ``sum`` task (``workloads.independent``).

Each builder returns ``(kind, thing, expected)``: kind ``"collection"`` (a Dask
collection, run with ``compute``) or ``"graph"`` (a dict graph and its key, run with a
get function); ``expected`` checks the answer where it is cheap to know (else None).
Task functions are module-level so both schedulers pickle them by reference.
"""

from __future__ import annotations

from typing import Any

from .workloads import independent, tree_reduction

__all__ = ["WORKLOADS", "build", "array_workloads"]

# name -> (default size, full size); a size is what the builder reads.
SIZES: dict[str, tuple[Any, Any]] = {
    "anomaly": ((3000, 150), (20000, 1000)),
    "double-diff": ((3200, 200), (20000, 1000)),
    "vorticity": ((3200, 200), (8000, 500)),
    "dot": ((1200, 150), (8000, 1000)),
    "tree-reduction": ((3200, 200), (20000, 1000)),
    "rechunk": ((3200, 100), (20000, 500)),
    "map-overlap": ((3200, 200), (16000, 1000)),
    "groupby": (10, 60),  # days of one-second rows
    "set-index": (5, 30),
    "no-op": (1 << 15, 1 << 19),  # leaves: ~65,000 / ~1,050,000 tasks
    "fan-in": (50_000, 200_000),
}
WORKLOADS = tuple(SIZES)


def array_workloads() -> tuple[str, ...]:
    """The workloads whose results are large buffers (traced for live bytes)."""
    return WORKLOADS[:9]


def _random(shape, chunks, seed):
    import dask.array as da

    return da.random.RandomState(seed).random(shape, chunks=chunks)


def shift(block):
    """The map_overlap kernel (module level: pickled by reference)."""
    return block * 0.5 + 1.0


def frame_rows(part) -> int:
    return len(part)


def _pad_rechunk(arr):
    import dask.array as da

    padded = da.pad(arr, ((0, 1), (0, 0)), mode="wrap")
    rows = list(padded.chunks[0])
    rows[-2:] = [rows[-2] + rows[-1]]  # merge the one-row chunk back in
    return padded.rechunk((tuple(rows), padded.chunks[1]))


def _timeseries(days: int):
    import dask.datasets
    import pandas as pd

    end = pd.Timestamp("2000-01-01") + pd.Timedelta(days=days)
    return dask.datasets.timeseries(start="2000-01-01", end=end, freq="1s", seed=42)


def build(name: str, full: bool = False) -> tuple[str, Any, Any]:
    """``(kind, collection or (graph, key), expected)`` for workload ``name``."""
    if name not in SIZES:
        raise ValueError(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}")
    size = SIZES[name][1 if full else 0]
    if name in ("no-op", "fan-in"):
        work = tree_reduction(size) if name == "no-op" else independent(size)
        return "graph", (work.graph, work.key), work.expected
    if name in ("groupby", "set-index"):
        df = _timeseries(size)
        if name == "groupby":
            return "collection", df.groupby("name").agg({"x": "sum", "y": "mean"}), None
        rows = df.set_index("id").map_partitions(frame_rows, meta=(None, "i8")).sum()
        return "collection", rows, size * 86400
    n, chunk = size
    x = _random((n, n), chunk, 0)
    if name == "anomaly":
        result = (x - x.mean(axis=0)).mean(axis=1)
    elif name == "double-diff":
        result = (x[1:, 1:] - _random((n, n), chunk, 1)[:-1, :-1]).sum()
    elif name == "vorticity":
        padded = _pad_rechunk(x).chunks
        dx, dy = _random((n + 1, n), padded, 2), _random((n + 1, n), padded, 3)
        v = _random((n, n), chunk, 1)
        result = (dx * _pad_rechunk(x) - dy * _pad_rechunk(v)).sum()
    elif name == "dot":
        result = (x @ x.T).sum()
    elif name == "tree-reduction":
        result = x.sum()
    elif name == "rechunk":
        rows = _random((n, n), (chunk, n), 0)
        result = rows.rechunk((n, chunk)).sum()
    else:  # map-overlap
        result = x.map_overlap(shift, depth=1, boundary="reflect").sum()
    return "collection", result, None
