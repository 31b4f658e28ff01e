# Two commands on a fresh machine (nothing installed but Python 3.10+):
#   make demo   the Hessian spectrum of a shipped checkpoint, figure and results beside it
#   make test   the whole test suite
# Both first create .venv if it is missing: PyTorch 2.13.0 first (pinned: an unpinned torch, or a package
# that pulls a newer one, downloads another build), then this project with its test extra.
#
# Which PyTorch build: pip's `torch==2.13.0`, i.e. on Linux from PyPI the CUDA build (a GPU machine needs
# nothing more; `--device auto` then runs on it), and the CPU build where pip's find-links offer it. For a
# particular CUDA or the CPU-only build from PyTorch's own index:
#   make demo TORCH_INDEX=https://download.pytorch.org/whl/cu126
#   make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu

PYTHON ?= python3
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
VENV := .venv
BIN := $(VENV)/bin
READY := $(VENV)/.ready

.PHONY: demo test install

install: $(READY)

$(READY): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[test]' $(TORCH)
	touch $(READY)

demo: $(READY)
	$(BIN)/landscape spectrum sample_checkpoints/mlp_digits.pt --trace --density --overwrite

test: $(READY)
	$(BIN)/python -m pytest
