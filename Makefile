# ctt-broker: one entry point for people and CI.
#   make run    set up and run the sandbox: broker, Microsoft emulator, demo portal, worker
#   make test   set up and run every check: lint, types, unit, API, storage (SQLite and
#               PostgreSQL), faults (a private PostgreSQL the tests crash), contract tests
#   make bench  the benchmark (bench/run.py): ctt-broker against a bare reference, both
#               databases; BENCH_ARGS passes options (make bench BENCH_ARGS="--flows 30")
#   make constraints  the pinned versions (constraints.txt) moved to the newest pyproject allows

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NODE_STAMP := contracts/node_modules/.installed
CHROMIUM ?= /usr/bin/chromium

.PHONY: setup constraints test-setup bench-setup run lint test bench bench-smoke clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt --build-constraint constraints.txt -e '.[dev]'
	touch $(STAMP)

# The pinned versions, refreshed: the newest pyproject.toml allows, installed into a scratch
# venv (nothing left over from this one) and frozen there, header kept; then `make setup`.
PINS := $(VENV)-pins
constraints:
	rm -rf $(PINS)
	$(PYTHON) -m venv $(PINS)
	$(PINS)/bin/python -m pip install --quiet --upgrade pip
	$(PINS)/bin/python -m pip install --quiet -e '.[dev]'
	{ grep '^#' constraints.txt; $(PINS)/bin/python -m pip freeze --all --exclude-editable \
	  | grep -v -e '^ctt-broker==' -e '^pip=='; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf $(PINS)

$(NODE_STAMP): contracts/package.json contracts/package-lock.json
	npm ci --prefix contracts --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

setup: $(STAMP)

# The test tools beyond Python: the spec linter and TypeScript generator (npm), and Debian's
# Chromium for the browser tests (installed with apt when missing and we may; Playwright
# never downloads a browser of its own).
test-setup: setup $(NODE_STAMP) bench-setup
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "note: $(CHROMIUM) missing: browser tests will be skipped (apt-get install chromium)"; fi; }

# The benchmark's load generator: Debian's wrk, installed with apt when missing and we may.
bench-setup: setup
	@command -v wrk >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; \
	  else echo "note: wrk missing: the benchmark cannot run (apt-get install wrk)"; fi; }

run: setup
	$(BIN)/python -m sandbox

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# pytest-xdist: TEST_JOBS worker processes, one more than the CPUs (many tests wait on a
# server process or a browser). TEST_JOBS=0 runs every test in this one process.
# --dist worksteal: a worker that runs out takes tests queued on another, so the run does
# not end on one worker working through a long tail of server tests.
# PYTHONDONTWRITEBYTECODE is cleared for the run: the suite starts about a hundred Python
# processes (workers, servers, CLIs), and without cached bytecode each compiles the project
# and pytest rewrites every test module again (the .pyc files go to ignored __pycache__ dirs).
TEST_JOBS ?= $(shell $(PYTHON) -c 'import os; print(len(os.sched_getaffinity(0)) + 1)')
test: test-setup lint
	PYTHONDONTWRITEBYTECODE= $(BIN)/pytest -q -n $(TEST_JOBS) --dist worksteal

BENCH_ARGS ?=
bench: bench-setup
	$(BIN)/python -m bench.run --json var/bench.json $(BENCH_ARGS)

bench-smoke: bench-setup
	$(BIN)/python -m bench.run --smoke

clean:
	rm -rf $(VENV) $(PINS) var .pytest_cache .mypy_cache .ruff_cache .hypothesis contracts/node_modules artifacts
