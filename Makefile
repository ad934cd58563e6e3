# Two commands a newcomer needs: `make run` and `make test`. Both install what they need into .venv.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export MUJOCO_GL ?= egl

.PHONY: install run test lint format bench clean gpu-check-prepare gpu-check-dry-run

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (torch 2.13.0's CPU wheel is built for CPython 3.11)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and exactly: a looser spec resolves to the newest CUDA build (GBs).
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/aime up

test: $(STAMP)
	$(BIN)/python -m pytest -q -ra $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python benchmarks/collect_throughput.py

# The GPU check (benchmarks/gpu_check.py) runs on a bare CUDA machine without network that has Python 3.12 with
# torch, h5py, numpy and pytest: these are the wheels of the other modules it imports (pure Python, well under
# 1 MiB together; PyAV is not needed, the check trains with video_clips=0). Carry .whl/ with the working tree.
GPU_WHEELS := tqdm==4.70.1 nvidia-ml-py==13.615.71 redis==8.1.0 httpx==0.28.1 httpcore==1.0.9 h11==0.16.0 \
	anyio==4.16.0 idna==3.20 certifi==2026.10.19.post1 pytest-timeout==2.4.0
gpu-check-prepare: $(STAMP)
	rm -rf .whl && mkdir -p .whl
	$(BIN)/pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		-d .whl $(GPU_WHEELS)
	@du -sh .whl; echo "working tree + .whl: $$(( ($$(git ls-files -z | xargs -0 cat | wc -c) + $$(cat .whl/* | wc -c)) / 1048576 )) MiB (limit 64)"
	@echo "there: python3 benchmarks/gpu_check.py OUT_DIR   (here, no GPU: make gpu-check-dry-run)"

gpu-check-dry-run: $(STAMP)
	$(BIN)/python benchmarks/gpu_check.py test-artifacts/gpu-check-dry-run --dry-run

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
