# Sluice: `make run` starts the whole stack, `make test` runs the whole suite.
# Both install what they need first (`make setup`): a venv, the project, redis-server;
# `make test` also installs Debian's chromium for the browser tests.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
BENCH_STAMP := $(VENV)/.bench-stamp
PYTEST_ARGS ?=

.PHONY: setup run test test-distributed test-ha test-cluster check bench clean redis-server chromium

setup: $(STAMP) redis-server

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing Debian's redis-server"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }

# Debian's Chromium for the browser tests (Playwright drives it; no browser download).
chromium:
	@test -x /usr/bin/chromium || { \
	  echo "installing Debian's chromium"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

run: setup
	$(PY) -m deploy.run

test: setup chromium
	$(PY) -m pytest $(PYTEST_ARGS)

# Fault tests across hosts made of network namespaces (root; skipped with the reason otherwise)
# and the Sentinel failover tests. Both are also part of `make test`.
test-distributed: setup
	$(PY) -m pytest tests/distributed -q

test-ha: setup
	$(PY) -m pytest tests/ha -q

# The message store on a local Redis Cluster (3 primaries + 3 replicas): pipeline, resume,
# cancel, delete, a primary failover inside the cluster. Also part of `make test`.
test-cluster: setup
	$(PY) -m pytest tests/cluster -q

check: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	touch $(BENCH_STAMP)

# SLUICE_BENCH_QUICK=1 for a short run; results in bench/results/ (see bench/README.md).
bench: setup $(BENCH_STAMP)
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
