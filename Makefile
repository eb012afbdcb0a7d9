# Two commands set everything up: `make demo` and `make test`.
# The virtualenv is rebuilt only when pyproject.toml changes (the stamp file records the install).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
# make test runs one pytest-xdist worker per core, at most 4 (each worker computes on one thread;
# tests/conftest.py); tests of one xdist_group (a costly module fixture) share a worker. JOBS=0: one process.
JOBS ?= $(shell $(PYTHON) -c "import os; print(min(4, len(os.sched_getaffinity(0))))")

.PHONY: demo test lint bench clean help

help:
	@echo "make demo   create .venv, install vtl, run the embedded demo (no download)"
	@echo "make test   create .venv, install vtl with test extras, run the test suite"
	@echo "make lint   ruff over the package, tests and scripts; the import layers (lint-imports)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/vtl demo

test: lint
	$(BIN)/python -m pytest -n $(JOBS) --dist loadgroup $(PYTEST_ARGS)

# The layering contracts live in pyproject.toml ([tool.importlinter]).
lint: $(STAMP)
	$(BIN)/ruff check pipeline tests scripts
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) demo_out .pytest_cache .ruff_cache
