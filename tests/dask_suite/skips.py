"""Dask tests skipped under our backends, each with its reason.

Only tests that check a Dask internal (how ``dask.local`` builds its state, which
thread pool object Dask keeps, ...) rather than the scheduler contract (answers,
errors, callbacks, options) belong here.  Keys are node-id prefixes relative to the
installed ``dask`` package (``tests/test_threaded.py::test_x`` matches every
parametrisation of ``test_x``).
"""

from __future__ import annotations

_DEFAULT_SET = (
    "asserts that no default scheduler is configured; standing in for Dask's default "
    "means configuring one (dask.config 'scheduler')"
)

SKIPS: dict[str, str] = {
    # -- the stand-in itself ----------------------------------------------------------
    "tests/test_base.py::test_get_scheduler": _DEFAULT_SET,
    "tests/test_base.py::test_compute_array_bag": _DEFAULT_SET
    + " (Dask refuses collections with different default schedulers only without one)",
    "tests/test_base.py::test_persist_array_bag": _DEFAULT_SET
    + " (Dask refuses collections with different default schedulers only without one)",
    # -- dask.local internals ---------------------------------------------------------
    "tests/test_local.py::test_cache_options": (
        "cache= hands dask.local its internal result dict to fill; our backends keep "
        "results in their own state (the keyword is accepted and ignored)"
    ),
    "tests/test_local.py::test_ordering": (
        "asserts the order dask.order picks among independent tasks (last key first); "
        "ours runs them in argument order, by design (graph.py: depth-first post-order)"
    ),
    "tests/test_local.py::test_complex_ordering": (
        "asserts that tasks run exactly in dask.order's order; ours follows its own "
        "memory-friendly order (graph.py), which may break ties differently"
    ),
    "tests/test_local.py::test_detect_malformed_graph": (
        "matches Dask's wording 'Missing dependency'; ours raises GraphError (a "
        "ValueError too) naming the key, the missing key and the fix"
    ),
    # -- dask.multiprocessing's own pool ----------------------------------------------
    "tests/test_multiprocessing.py::test_process_initializer": (
        "initializer= runs in the processes dask.multiprocessing starts for each compute; "
        "our worker pool is shared and reused across computes (accepted and ignored)"
    ),
    "tests/test_multiprocessing.py::test_custom_context_used_python3_posix": (
        "checks that dask.multiprocessing builds its pool with the configured "
        "'multiprocessing.context'; our pool is our own (spawned workers)"
    ),
}


# Skipped only when the named backend stands in for Dask's default scheduler (and, for
# crashes, also under Dask's own scheduler of that kind as the default: "dask-processes").
SKIPS_BY_BACKEND: dict[str, dict[str, str]] = {
    "processes": {
        "array/tests/test_array_core.py::test_memmap": (
            "crashes the test process (segfault) on any process-based default, Dask's own "
            "'processes' included: store() cannot write into the caller's memmap from "
            "another process, the assertion fails, the test's finally closes the mmap and "
            "pytest's failure report then reads it"
        ),
    },
    "sync": {
        "bag/tests/test_bag.py::test_temporary_directory": (
            "asserts partd files that exist only while the configured ProcessPoolExecutor's "
            "workers hold them: Dask's default for bags runs on that pool, while our sync "
            "backend (standing in for the default) runs in the calling thread and ignores "
            "pools; it passes on our threads and processes, which use the pool"
        ),
    },
}


def reason_for(nodeid: str, backend: str | None = None, skips: dict | None = None) -> str | None:
    """The skip reason for a test's node id under ``backend``, or None."""
    marker = "dask/"
    at = nodeid.rfind(marker)
    rel = nodeid[at + len(marker) :] if at >= 0 else nodeid
    if skips is None:
        skips = {**SKIPS, **SKIPS_BY_BACKEND.get(backend or "", {})}
    for prefix, reason in skips.items():
        if rel == prefix or rel.startswith(prefix + "[") or rel.startswith(prefix + "::"):
            return reason
    return None
