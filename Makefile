# `make demo` and `make test` work on a fresh machine: they create .venv when missing and install into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.featdiff-installed
OUT ?= featdiff-report

.PHONY: install test test-fast demo lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

demo: $(STAMP)
	$(VENV)/bin/featdiff demo --out $(OUT)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests examples benchmarks

bench: $(STAMP)
	$(PY) benchmarks/bench_demo.py

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
