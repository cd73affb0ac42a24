# streamscope developer commands. `make demo` and `make test` work on a fresh machine with Python 3.11+.
# The Python the virtualenvs are made with: PYTHON=... if given, else the first of PYTHON_CANDIDATES on PATH
# that is 3.11 or newer. Chosen when a recipe first needs it (so `make clean` needs no Python), checked, and
# announced once: `streamscope: using /usr/bin/python3.12 (Python 3.12.3)`. `make which-python` shows it.
PYTHON ?=
PYTHON_CANDIDATES ?= python3.11 python3.12 python3.13 python3.14 python3
VENV ?= .venv
VENV_LOW ?= .venv-low
# Arize Phoenix, the real OTLP receiver of the export tests, in its own virtualenv: its pins are heavy.
VENV_PHOENIX ?= .venv-phoenix
PHOENIX := "arize-phoenix>=20.26,<21"
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
python_ok := import sys; sys.exit(sys.version_info < (3, 11))
# $(call checked_python,NAME): the full path of NAME if it runs and is 3.11+, else nothing
checked_python = $(if $(shell '$(1)' -c '$(python_ok)' >/dev/null 2>&1 && echo ok),$(shell command -v '$(1)'))
# the full path of the first candidate that runs and is 3.11+, else nothing
found_python = $(shell for p in $(PYTHON_CANDIDATES); do \
	command -v "$$p" >/dev/null 2>&1 && "$$p" -c '$(python_ok)' >/dev/null 2>&1 && { command -v "$$p"; break; }; done)
chosen_python = $(strip $(if $(strip $(PYTHON)), \
	$(or $(call checked_python,$(strip $(PYTHON))),$(error streamscope: PYTHON=$(PYTHON) is not Python 3.11+ \
	($(shell command -v '$(strip $(PYTHON))' >/dev/null 2>&1 && { '$(strip $(PYTHON))' --version 2>&1 || :; } || echo not found)))), \
	$(or $(found_python),$(error streamscope: no Python 3.11+ found: none of $(PYTHON_CANDIDATES) on PATH is 3.11 or newer; \
	install one or run make PYTHON=/path/to/python3.11+))))
# Evaluated once, on first use.
BASE_PYTHON = $(eval BASE_PYTHON := $$(chosen_python))$(info streamscope: using $(BASE_PYTHON) \
	($(shell '$(BASE_PYTHON)' --version 2>&1)))$(BASE_PYTHON)
PY := $(VENV)/bin/python
PY_LOW := $(VENV_LOW)/bin/python
# The lowest releases we support, tested alongside the newest.
LOWEST := "pydantic-ai-slim[openai]==2.0.0" "opentelemetry-api==1.45.0" "opentelemetry-sdk==1.45.0" \
          "opentelemetry-instrumentation==0.66b0" "opentelemetry-semantic-conventions==0.66b0" \
          "wrapt==1.17.0" "anyio==4.5.0" "pydantic==2.12.0" \
          "opentelemetry-exporter-otlp-proto-http==1.45.0" "opentelemetry-exporter-otlp-proto-grpc==1.45.0" \
          "opentelemetry-exporter-prometheus==0.66b0" "prometheus-client==0.20.0" "opentelemetry-distro==0.66b0"

.PHONY: which-python demo test bench bench-instructions bench-app mutation lint typecheck unit unit-lowest install install-lowest servers prometheus dashboards clean

$(VENV)/.installed: pyproject.toml
	$(BASE_PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

$(VENV_LOW)/.installed: pyproject.toml
	$(BASE_PYTHON) -m venv $(VENV_LOW)
	$(PY_LOW) -m pip install --quiet --upgrade pip
	$(PY_LOW) -m pip install --quiet -e ".[dev]" $(LOWEST)
	touch $@

$(VENV_PHOENIX)/.installed:
	$(BASE_PYTHON) -m venv $(VENV_PHOENIX)
	$(VENV_PHOENIX)/bin/python -m pip install --quiet --upgrade pip
	$(VENV_PHOENIX)/bin/python -m pip install --quiet $(PHOENIX)
	touch $@

# Which Python the virtualenvs are made with (choose with PYTHON=...).
which-python:
	@: $(BASE_PYTHON)

install: $(VENV)/.installed
install-lowest: $(VENV_LOW)/.installed

# Real servers the integration tests start: Prometheus (Debian's package) and Arize Phoenix.
prometheus:
	@command -v prometheus >/dev/null || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq prometheus >/dev/null; }
	@prometheus --version 2>&1 | head -n 1
servers: prometheus $(VENV_PHOENIX)/.installed

dashboards: install
	$(PY) -m dashboards.generate

demo: install
	$(PY) examples/demo.py

bench: install
	$(PY) benchmarks/bench_streams.py

bench-instructions: install
	$(PY) benchmarks/instructions.py

# A real app's CPU with and without streamscope (exporting to Phoenix); not part of `make test`.
bench-app: install $(VENV_PHOENIX)/.installed
	$(PY) benchmarks/bench_app.py

# Mutation testing, not part of `make test`: mutmut ([tool.mutmut] in pyproject.toml) mutates src/streamscope,
# sets aside the mutants pyright finds wrong (the venv's pyright, hence PATH) and runs, per remaining mutant, the fast
# server-free tests that reach the mutated function. The score and every survivor go to
# benchmarks/results/mutation.md (equivalent ones are listed in benchmarks/mutation_equivalents.toml). mutmut puts
# its mutants' directory on sys.path only if it exists when it starts. A run from scratch takes ~42 minutes on 2
# cores (benchmarks/README.md); results are cached in mutants/, so the next run checks only what changed. Mutants
# listed as equivalent run no test; MUTATION_RUN_EQUIVALENTS=1 make mutation runs them (to check they still survive).
# MUTANTS='streamscope._events.* streamscope._stream.*' (mutmut's name patterns) checks those mutants only.
MUTANTS ?=
mutation: install
	$(PY) -m pip install --quiet -e ".[mutation]"
	mkdir -p mutants/src
	start=$$(date +%s); PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/mutmut run --max-children 2 $(foreach m,$(MUTANTS),'$(m)'); \
	  status=$$?; $(PY) benchmarks/mutation_report.py --seconds $$(( $$(date +%s) - start )) && exit $$status

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/pyright

unit: install servers
	$(PY) -m pytest --cov=streamscope --cov-branch --cov-report=term --cov-fail-under=85

unit-lowest: install-lowest servers
	$(PY_LOW) -m pytest -p no:cacheprovider

test: lint typecheck unit unit-lowest

clean:
	rm -rf $(VENV) $(VENV_LOW) $(VENV_PHOENIX) .pytest_cache .ruff_cache .coverage mutants
