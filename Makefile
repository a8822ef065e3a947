# Two commands on a fresh machine with Python 3.11+ and make:
#   make up    run the whole system on its embedded default (SQLite + nats-server)
#   make test  run the test suite, ruff, mypy and the architecture's import contracts
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: up test lint bench clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "caseflow needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

up: $(VENV)/.installed
	$(BIN)/caseflow up

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest

bench: $(VENV)/.installed
	$(BIN)/python -m bench.log
	$(BIN)/python -m bench.e2e --cases 2000

clean:
	rm -rf $(VENV) var
