# Two commands do all the set-up on a fresh machine:
#   make demo   - install into .venv and run `shadowproxy demo` (nothing else needs to run)
#   make test   - install test tools and services, start them when down, run lint + tests
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint unit faults bench services install install-test wheel-check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e '.[demo]'

install-test: $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'

demo: install
	$(BIN)/shadowproxy demo $(DEMO_ARGS)

services:
	bash scripts/services.sh

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Two pytest workers: the tests are isolated (free ports, per-test tables, key prefixes and
# Redis databases), and one process left one core of a 2-core machine mostly idle. The fault
# suite runs after them, alone: it holds the primary to a 2 s deadline and relays its bytes in
# threads of the pytest process. Beside another worker, CI saw that deadline missed (16
# requests at once, a 504 each) with no bug to explain it; alone, never.
TEST_WORKERS ?= 2

test: install-test services lint
	$(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal --ignore-glob='tests/faults/*'
	$(MAKE) faults FAULTS_ARGS=
	$(MAKE) wheel-check

# The wheel a user installs, non-editable, in a fresh venv: --version, check-config, demo.
wheel-check: install-test services
	bash scripts/wheel-check.sh

unit: install-test
	$(BIN)/pytest tests/unit

# The fault suite (docs/faults.md): locally with no arguments, or against a deployment, e.g.
#   make faults FAULTS_ARGS="--proxy-url http://10.0.0.5:8080 --admin-url http://10.0.0.5:9090 ..."
faults: install-test
	$(if $(findstring --proxy-url,$(FAULTS_ARGS)),,bash scripts/services.sh)
	$(BIN)/pytest tests/faults $(FAULTS_ARGS)

# store_proxy.py shadows to dynalite (npm, installed once into the git-ignored .bench-cache/)
# when node and npm are on PATH, else to moto; BENCH_ARGS="--dynamodb moto" forces moto.
bench: install-test
	$(BIN)/python tests/benchmarks/http_proxy.py
	$(BIN)/python tests/benchmarks/store_proxy.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
