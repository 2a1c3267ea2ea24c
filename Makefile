# phasediff: `make demo` and `make test` are the two commands a fresh machine needs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
# Extra pip arguments for the torch install, e.g. an index that serves the CPU wheel.
TORCH_INDEX_ARGS ?=

.PHONY: setup test demo bench lint format clean

setup: $(STAMP)

# pyproject.toml declares compatible ranges, constraints.txt the exact versions installed here
# and in CI; the stamp depends on both, so a changed range or pin re-installs.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt torch $(TORCH_INDEX_ARGS)
	$(PIP) install --quiet -c constraints.txt -e '.[test,fid]'
	touch $(STAMP)

lint: setup
	$(VENV)/bin/ruff check phasediff tests bench
	$(VENV)/bin/ruff format --check phasediff tests bench

# One pytest worker per core (pytest-xdist; tests/conftest.py gives each worker one torch thread);
# modules stay whole on one worker, so their shared fixtures are built once.
TEST_WORKERS ?= auto
test: setup lint
	$(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist loadscope

demo: setup
	$(VENV)/bin/phasediff analyze mixing --out demo/mixing.png
	$(VENV)/bin/phasediff demo --out demo

bench: setup
	$(PY) bench/run.py --out docs/benchmarks.md

format: setup
	$(VENV)/bin/ruff format phasediff tests bench
	$(VENV)/bin/ruff check --fix phasediff tests bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis demo
