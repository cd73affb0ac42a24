# streamscope developer commands. `make demo` and `make test` work on a fresh machine with Python 3.11+.
PYTHON ?= python3.11
VENV ?= .venv
VENV_LOW ?= .venv-low
PY := $(VENV)/bin/python
PY_LOW := $(VENV_LOW)/bin/python
# The lowest releases we support, tested alongside the newest.
LOWEST := "pydantic-ai-slim[openai]==2.0.0" "opentelemetry-api==1.45.0" "opentelemetry-sdk==1.45.0" \
          "opentelemetry-instrumentation==0.66b0" "opentelemetry-semantic-conventions==0.66b0" \
          "wrapt==1.17.0" "anyio==4.5.0" "pydantic==2.12.0"

.PHONY: demo test bench lint typecheck unit unit-lowest install install-lowest clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

$(VENV_LOW)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV_LOW)
	$(PY_LOW) -m pip install --quiet --upgrade pip
	$(PY_LOW) -m pip install --quiet -e ".[dev]" $(LOWEST)
	touch $@

install: $(VENV)/.installed
install-lowest: $(VENV_LOW)/.installed

demo: install
	$(PY) examples/demo.py

bench: install
	$(PY) benchmarks/bench_streams.py

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/pyright

unit: install
	$(PY) -m pytest --cov=streamscope --cov-branch --cov-report=term --cov-fail-under=85

unit-lowest: install-lowest
	$(PY_LOW) -m pytest -p no:cacheprovider

test: lint typecheck unit unit-lowest

clean:
	rm -rf $(VENV) $(VENV_LOW) .pytest_cache .ruff_cache .coverage
