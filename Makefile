# `make demo` and `make test` work on a fresh machine: they create .venv when missing and install into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.featdiff-installed
OUT ?= featdiff-report

.PHONY: install browser test test-fast demo lint bench docs clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e ".[dev,docs]"
	touch $(STAMP)

install: $(STAMP)

# The report's render test needs headless Chromium: install the Debian package where it is missing and apt
# can (root, as in CI); elsewhere that test is skipped and the rest runs.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
	  || ! command -v apt-get >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] \
	  || (DEBIAN_FRONTEND=noninteractive apt-get update -qq \
	      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium) \
	  || echo "make: could not install chromium; the report render test will be skipped"

test: $(STAMP) browser
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

demo: $(STAMP)
	$(VENV)/bin/featdiff demo --out $(OUT)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests examples benchmarks tools

# The docs site into site/ (open site/index.html); the examples run in their small mode unless
# FEATDIFF_EXAMPLE_SMALL=0. tests/test_site.py builds it too, so `make test` (and CI) fail on a broken page.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

bench: $(STAMP)
	$(PY) benchmarks/bench_demo.py

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache site
