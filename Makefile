# tokenfleet — developer entry points. `make test` is what CI runs (via .ci/run).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
TRITON_VENV := .venv-triton
STAMP := $(VENV)/.installed

.PHONY: install triton-venv lint imports typecheck crds crds-check unit bench bench-smoke e2e test \
        cluster-build cluster-up cluster-down dev dev-prereqs clean promtool image objstore-build

## install: create .venv with the project and everything its tests need
install: $(STAMP)
$(STAMP): pyproject.toml
	@echo ">> creating $(VENV) and installing tokenfleet[dev]"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps 'blast-lite==1.1.1'  # battery ageing (see pyproject)
	@touch $@

## triton-venv: a separate venv for tritonserver (the nvidia-pytriton wheel pins numpy<2)
triton-venv: $(TRITON_VENV)/.installed
$(TRITON_VENV)/.installed:
	@echo ">> creating $(TRITON_VENV) with nvidia-pytriton (real tritonserver, CPU)"
	$(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/pip install --quiet --upgrade pip
	$(TRITON_VENV)/bin/pip install --quiet 'nvidia-pytriton==0.7.0' 'numpy<2'
	@touch $@

lint: install imports
	$(BIN)/ruff check operator tests e2e bench
	$(BIN)/ruff format --check operator tests e2e bench

## imports: the import layers (import-linter contracts in pyproject.toml; see ARCHITECTURE.md)
imports: install
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

crds: install
	$(BIN)/tokenfleet crds

crds-check: install
	$(BIN)/tokenfleet crds --check

unit: install triton-venv
	$(BIN)/pytest tests

bench: install
	$(PY) bench/placement.py --json

bench-smoke: install
	$(PY) bench/placement.py --json --smoke

## cluster-build: build the local control plane (kube-apiserver & co. from Go modules, kwok, helm, etcd)
cluster-build:
	e2e/cluster/build.sh

## objstore-build: the S3-compatible object store for the tests — SeaweedFS's `weed`
## built from its Go module (e2e/objstore/build.sh; pinned in e2e/objstore/weed/go.mod) into
## $(OBJSTORE_BIN_DIR) (default .bin/); rebuilt only when the pin changes
OBJSTORE_BIN_DIR ?= .bin
objstore-build:
	OBJSTORE_BIN_DIR=$(OBJSTORE_BIN_DIR) e2e/objstore/build.sh

cluster-up: dev-prereqs install cluster-build
	$(PY) -m e2e.cluster.fleet up

cluster-down: install
	$(PY) -m e2e.cluster.fleet down

e2e: install triton-venv cluster-build promtool image objstore-build
	$(BIN)/pytest e2e

test: lint typecheck crds-check unit bench-smoke e2e

## promtool: Prometheus' rule checker, for the chart's alerts (`promtool check/test rules` in
## e2e/test_chart_observability.py): the static binary out of Debian's `prometheus` package,
## extracted into .bin/ (nothing installed system-wide, no server started; seconds, where
## `go install` of promtool takes 15-40 min cold on 2 cores)
promtool: .bin/promtool
.bin/promtool:
	mkdir -p .bin
	tmp="$$(mktemp -d)" && cd "$$tmp" && \
	  { apt-get download prometheus 2>/dev/null || { apt-get update -qq && apt-get download prometheus; }; } && \
	  dpkg-deb -x prometheus_*.deb x && install -m 0755 x/usr/bin/promtool "$(abspath .bin)/promtool" && \
	  rm -rf "$$tmp"
	.bin/promtool --version | head -1

## image: the operator image, built without a daemon or a registry (image/build.sh): a Debian
## root from debootstrap, then buildah (vfs, chroot isolation) adds the locked dependencies and
## the wheel as separate layers, smoke-runs `tokenfleet --version` and writes the OCI archive
## .cache/image/tokenfleet.oci.tar (cached: only what changed is rebuilt). Needs root and Debian's
## debootstrap + buildah (.ci/run installs them); e2e/test_image.py checks the result.
image: install
	PYTHON=$(abspath $(PY)) image/build.sh

## dev: the local fleet — control plane, simulated racks and cars, real tritonservers, a tank
## simulator, an example job, the OpenAI-compatible gateway on 127.0.0.1:8088 and the operator
## in the foreground (Ctrl-C to stop); with the object store (SeaweedFS, objstore-build), the
## batch dispatcher and a sample InferenceBatch
## dev-prereqs first: a missing etcd/openssl/go is installed or named in the first second
dev: dev-prereqs install triton-venv cluster-build objstore-build
	$(PY) -m e2e.dev

dev-prereqs:
	@e2e/cluster/prereqs.sh

clean:
	rm -rf $(VENV) $(TRITON_VENV) .cluster .mypy_cache .ruff_cache .pytest_cache
