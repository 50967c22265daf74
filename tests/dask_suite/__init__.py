"""Dask's own test suites on our backends: a pytest plugin, a runner and a skip list."""
