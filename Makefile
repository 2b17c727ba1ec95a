# dcomp: set up, test, benchmark. `make install && make test` on a fresh machine.
PY      := .venv/bin/python
PIP     := .venv/bin/pip
DATA    ?= ../shared/data
KODAK   ?= $(DATA)/kodak

.PHONY: install test test-slow bench-lossless bench-memory train-mlp clean

# torch first, pinned to the CPU build on disk: letting pip resolve torch would pull CUDA wheels.
install:
	python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev,bench]'

test:
	$(PY) -m pytest -q

test-slow:
	$(PY) -m pytest -q -m slow

# Kodak lossless table (mlp through the CLI, its linear ablation, classical codecs) + synthetic images.
bench-lossless:
	$(PY) -m dcomp.bench.lossless --dataset $(KODAK) --json results/lossless-kodak.json

# 4000x3000 round trip through the CLI, peak memory.
bench-memory:
	$(PY) -m dcomp.bench.lossless --memory $(DATA)/photos-train/001.png --json results/memory.json

train-mlp:
	.venv/bin/dcomp train mlp --data $(DATA)/photos-train --out weights/mlp.npz --steps 12000

clean:
	rm -rf .venv build *.egg-info .pytest_cache results
