# The two commands: `make demo` and `make test`. Each builds .venv from scratch when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-dask test-scale fuzz lint bench bench-auto bench-cache bench-jobs bench-memory lab clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m notebook_sched demo

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest

# The property tests of tests/test_graph_properties.py with 3,000 random graphs per
# backend instead of make test's bounded few hundred (about a minute or two).
fuzz: $(STAMP)
	NOTEBOOK_SCHED_FUZZ=1 $(PY) -m pytest tests/test_graph_properties.py -q -p no:randomly

# The scale tests at the size the issues name: million-task chains on every backend
# (make test runs them at 100,000 tasks, which already proves no recursion; a few minutes).
test-scale: $(STAMP)
	NOTEBOOK_SCHED_SCALE=1 $(PY) -m pytest -q tests/test_deep_graphs.py \
		tests/test_auto.py tests/test_engine_state.py tests/test_cache_fingerprint.py -k "long or million"

# Dask's own test modules, in place from the installed dask, on Dask's scheduler (the
# baseline) and on our sync/threads/processes backends; a table per module and backend,
# and exit 1 if a test that passes on Dask's scheduler fails on ours (tests/dask_suite/).
test-dask: $(STAMP)
	$(PY) -m tests.dask_suite.run $(DASK_SUITE_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# JupyterLab on the tutorials, from the venv (loopback and a token, Jupyter's defaults).
# Trusting them lets JupyterLab draw their saved widgets (picker, bars) before a run.
lab: $(STAMP)
	$(VENV)/bin/jupyter trust notebooks/[0-9][0-9]-*.ipynb
	$(VENV)/bin/jupyter lab notebooks/ $$([ "$$(id -u)" = 0 ] && echo --allow-root)

bench: $(STAMP)
	$(PY) -m benchmarks.overhead

# Which scheduler? Four workloads x five backends, the advisor's verdicts and predictions.
bench-auto: $(STAMP)
	$(PY) -m benchmarks.choosing

# Peak memory (process + workers) and time of sync/threads/processes/auto against Dask's,
# eleven workloads, a fresh process each (benchmarks/memory_table.py; sized for about ten
# minutes on 2 shared cores; BENCH_MEMORY_ARGS=--full for issue 22's sizes: 31 minutes).
bench-memory: $(STAMP)
	$(PY) -m benchmarks.memory_table $(BENCH_MEMORY_ARGS)

# The result cache: hit overhead, cache=False, an edited notebook pipeline (in the
# session and after a restart, from disk), loading a 100 MB array from the disk tier.
bench-cache: $(STAMP)
	$(PY) -m benchmarks.cache

# Background jobs: submit latency, two jobs sharing the pool, a foreground compute beside one.
bench-jobs: $(STAMP)
	$(PY) -m benchmarks.jobs

clean:
	rm -rf $(VENV) build *.egg-info
