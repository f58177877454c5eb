# Accord — one Makefile for the whole suite. `make help` lists the targets.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PROTOS := $(shell find protos -name '*.proto')
GEN    := gen
PYTEST_ARGS ?=
# make test's workers (pytest-xdist; each file's tests stay on one worker): a test mostly waits on
# the processes, servers and databases it starts, so more workers than cores still pays.
TEST_WORKERS ?= 3

.DEFAULT_GOAL := help
.PHONY: help install gen run run-cluster test-deps test test-cluster test-fast lint bench clean distclean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(PY) tools/write_pth.py
	touch $(STAMP)

install: $(STAMP) gen ## create the virtualenv and install everything (pinned)

$(GEN)/.stamp: $(STAMP) $(PROTOS)
	rm -rf $(GEN) && mkdir -p $(GEN)
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=$(GEN) --grpc_python_out=$(GEN) \
		--plugin=protoc-gen-mypy=$(VENV)/bin/protoc-gen-mypy --plugin=protoc-gen-mypy_grpc=$(VENV)/bin/protoc-gen-mypy_grpc \
		--mypy_out=$(GEN) --mypy_grpc_out=$(GEN) $(PROTOS)
	$(PY) tools/write_pth.py --init $(GEN)
	touch $@

gen: $(GEN)/.stamp ## generate the protobuf/gRPC code into gen/ (never committed)

run: install ## bring the whole suite up on the embedded default (NATS + SQLite under var/)
	$(PY) -m accord_kit.devrun

run-cluster: install ## the production topology on loopback: 3 NATS nodes (R=3), PostgreSQL, active+standby services, 2 gateways
	$(PY) -m accord_kit.clusterrun

test-deps: ## make sure PostgreSQL, Chromium, Prometheus, Alertmanager and docker-compose are there for the tests (installs them as root)
	bash tools/test_deps.sh

test: install test-deps ## run the whole test suite (real NATS, SQLite, PostgreSQL, processes)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-cluster: install test-deps ## only the fault run on make run-cluster's topology (also part of make test)
	$(PY) -m pytest tests/test_cluster_faults.py -s $(PYTEST_ARGS)

test-fast: install test-deps ## the suite without the slow end-to-end and fault-injection tests
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not slow" $(PYTEST_ARGS)

lint: install ## ruff and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: install ## benchmarks (outside the test suite); figures go in the README
	$(PY) -m bench

clean: ## remove generated code and caches (keeps var/ data and the virtualenv)
	rm -rf $(GEN) .pytest_cache .mypy_cache .ruff_cache

distclean: clean ## also remove the virtualenv and all local data under var/
	rm -rf $(VENV) var
