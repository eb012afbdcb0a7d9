# Two commands set everything up: `make demo` and `make test`.
# The virtualenv is rebuilt only when pyproject.toml changes (the stamp file records the install).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

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
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The layering contracts live in pyproject.toml ([tool.importlinter]).
lint: $(STAMP)
	$(BIN)/ruff check pipeline tests scripts
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) demo_out .pytest_cache .ruff_cache
