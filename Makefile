# optiserve — the two commands a newcomer needs are `make demo` and `make test`.
# Heavy things are cached under ~/.cache/optiserve: the virtualenv (re-synced when the
# dependency files change), pip's cache, the Kubernetes control-plane binaries and TensorRT's
# libraries (hack/tensorrt/install.sh).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= $(shell command -v python3.11 || command -v python3)
CACHE ?= $(HOME)/.cache/optiserve
DEPS_HASH := $(shell cat pyproject.toml .ci/constraints.txt | sha256sum | cut -c1-12)
VENV ?= $(CACHE)/venv
PY := $(VENV)/bin/python
EXTRAS := operator,optimizer,serve,models,dev
export PIP_CACHE_DIR ?= $(HOME)/.cache/pip
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help venv tensorrt images images-deps lint typecheck test test-fast test-triton bench-triton crd manifests demo cluster clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(VENV)/.installed-$(DEPS_HASH):
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip setuptools wheel
	$(PY) -m pip install -q -c .ci/constraints.txt -e ".[$(EXTRAS)]"
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(VENV)/.installed-$(DEPS_HASH) ## create (or re-sync) the cached virtualenv with every extra
	@# An editable install points at one checkout; re-point it when this is another one.
	@$(PY) -c 'import optiserve, pathlib, sys; sys.exit(pathlib.Path(optiserve.__file__).resolve().is_relative_to(pathlib.Path.cwd().resolve()) is False)' \
		|| $(PY) -m pip install -q --no-deps -e .
	@echo "venv: $(VENV)"

tensorrt: venv ## TensorRT 11 in the venv: NVIDIA's libraries (Maven Central) + bindings (PyPI), cached
	bash hack/tensorrt/install.sh --venv $(VENV)

images: ## build the operator and optimizer images (buildah, no Docker), OCI archives + SBOMs, cached
	bash hack/images/build.sh

images-deps: ## regenerate hack/images/deps/ (the images' dependency lists) from pyproject.toml + constraints
	python3 hack/images/deps.py

lint: venv ## ruff, the layering contracts (the operator never imports torch), dead code (vulture)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/vulture

typecheck: venv ## mypy --strict
	$(VENV)/bin/mypy src testing tests $(wildcard operator/optiserve_operator optimizer/optiserve_optimizer benchmarks examples)

crd: venv ## regenerate crds/ (and the chart's and config/'s copies) from the API models
	$(VENV)/bin/optiserve crd > crds/optiserve.io_optimizedmodels.yaml
	cp crds/optiserve.io_optimizedmodels.yaml charts/optiserve/crds/
	cp crds/optiserve.io_optimizedmodels.yaml config/crd/

manifests: venv ## regenerate config/ (kubectl apply -k) from the Helm chart
	$(PY) -m tests.chart.config_manifests

test-fast: venv ## unit tests only (seconds)
	$(PY) -m pytest -m "not models and not triton and not cluster and not e2e and not gpu and not s3 and not images" -q

test-triton: venv ## the real local tritonserver (python backend + onnxruntime)
	$(PY) -m pytest -m triton -q tests/triton

bench-triton: venv ## batching off/on, cache hit/miss on this CPU -> benchmarks/results/triton.md
	$(PY) benchmarks/triton_bench.py

test: lint typecheck tensorrt ## everything CI runs: lint, types, unit, models, triton, cluster, e2e
	$(PY) -m pytest -q

demo: venv ## optimize the digits CNN, serve it on a local Triton, load it, print a report
	$(VENV)/bin/optiserve validate examples/*.yaml
	$(PY) examples/demo.py $(DEMO_ARGS)

cluster: venv ## a local control plane for you (CRD installed, pods really run); Ctrl-C stops it
	bash hack/cluster/build.sh
	$(PY) -m optiserve_testing $(CLUSTER_ARGS)

clean: ## remove build outputs (keeps ~/.cache)
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
