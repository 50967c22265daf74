"""Benchmarks: our schedulers against Dask's on the same graphs.

``python -m benchmarks.overhead`` (``make bench``) prints the whole report: per-task
overhead, a 1,000,000-task chain, parallel speed-up and peak memory, each with its
target and PASS/FAIL.  Modules:

``workloads.py``  graph builders (plain dicts, importable task functions)
``backends.py``   the registry of (ours, Dask) backend pairs; add new backends here
``overhead.py``   the harness and its command line
``parallel.py``   speed-up of threads/processes over sync on real work
``memory.py``     peak RSS of a tree reduction, one fresh process per measurement
``cache_hashing.py``  the result cache's fingerprints: argument hashing GB/s against
                  ``dask.base.tokenize``, and µs per task beside a sync no-op run
``report.py``     timing, tables and the PASS/FAIL tally
"""
