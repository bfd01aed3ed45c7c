# gridledger — two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast bench lint docs clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: install
	$(VENV)/bin/gridledger demo

test: install
	$(PY) -m pytest -n 2 --dist loadgroup

test-fast: install
	$(PY) -m pytest -n 2 --dist loadgroup -m "not slow and not faults"

bench: install
	$(PY) bench/pf.py
	$(PY) bench/ropf.py
	$(PY) bench/ledger.py
	$(PY) bench/ledger_bft.py --validators 4
	$(PY) bench/admm.py
	$(PY) bench/taps.py

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

docs: install
	$(PY) -m gridledger.demo.reproduction --write

clean:
	rm -rf $(VENV) build dist *.egg-info out .pytest_cache .mypy_cache
