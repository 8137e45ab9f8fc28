# The two set-up commands of the README: `make quick` (install + main job), `make test`.
PYTHON ?= python3
SUITE ?= ablations/quick.yaml
# A CPU torch is installed only where there is no GPU and no torch yet. Where PyPI's default
# torch is a CUDA build, point TORCH_INDEX at a CPU wheel index to get a small CPU build.
TORCH_VERSION ?= 2.13.0
TORCH_INDEX ?=

.PHONY: install quick test test-fast lint

install:
	@if ! $(PYTHON) -c "import torch" >/dev/null 2>&1 && ! command -v nvidia-smi >/dev/null 2>&1; then \
		echo "no GPU and no torch: installing torch==$(TORCH_VERSION) (CPU)"; \
		$(PYTHON) -m pip install -q "torch==$(TORCH_VERSION)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)); \
	fi
	$(PYTHON) -m pip install -q -e ".[test]"
	$(PYTHON) -m lstm_harness.models.compiled_loop --build

quick: install
	$(PYTHON) -m lstm_harness run $(SUITE)

test: install
	$(PYTHON) -m pytest -q

# the inner loop: everything but the tests marked slow (Ray end to end, clusters, faults)
test-fast:
	$(PYTHON) -m pytest -q -m "not slow"

lint:
	$(PYTHON) -m ruff check .
