# Two commands do all the set-up on a fresh machine:
#   make demo   - explain the bundled sample photos with the embedded EfficientNet-Lite0 (writes demo_out/)
#   make test   - lint, type-check and run the whole test suite (what CI runs)
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint fast bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch/torchvision pinned to the builds available offline on the dev/CI machines
	$(BIN)/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/python -m pip install -q -e ".[dev,fit,hf,keras,keras-jax,serve,compare,onnx,ray]"
	# the browser test of camloc serve drives Debian's chromium (best effort: it skips without it)
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -q chromium) || true
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/camloc explain src/camloc/assets/coffee.jpg src/camloc/assets/cat.jpg --out demo_out
	@echo "wrote demo_out/ (overlays, top-5 panels, results.jsonl, manifest.json)"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy src

test: lint
	$(BIN)/python -m pytest -n 2 -q

fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q -m "not slow"

clean:
	rm -rf $(VENV) demo_out .pytest_cache .ruff_cache .mypy_cache
