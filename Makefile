# The two commands: `make demo` and `make test`. Each builds .venv from scratch when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-dask lint bench lab clean

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

# Dask's own test modules, in place from the installed dask, on Dask's scheduler (the
# baseline) and on our sync/threads/processes backends; a table per module and backend,
# and exit 1 if a test that passes on Dask's scheduler fails on ours (tests/dask_suite/).
test-dask: $(STAMP)
	$(PY) -m tests.dask_suite.run $(DASK_SUITE_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# JupyterLab on the tutorials, from the venv (loopback and a token, Jupyter's defaults).
lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/ $$([ "$$(id -u)" = 0 ] && echo --allow-root)

bench: $(STAMP)
	$(PY) -m benchmarks.overhead

clean:
	rm -rf $(VENV) build *.egg-info
