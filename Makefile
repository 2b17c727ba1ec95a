# dcomp: set up, test, benchmark. `make install && make test` on a fresh machine.
PY      := .venv/bin/python
PIP     := .venv/bin/pip
DATA    ?= ../shared/data
KODAK   ?= $(DATA)/kodak

.PHONY: install test test-slow fuzz bench-lossless bench-memory bench-ablation bench-lossy-kodak bench-lossy-cifar10 bench-memory-lossy bench-gan-kodak bench-gan-cifar10 train-mlp train-cnn-ae train-cnn-ae-ft train-gan-ae train-gan-ae-dc bench-rnn-kodak bench-rnn-cifar10 bench-rnn-bits bench-memory-rnn train-cnn-rnn-ae clean bench-batch

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

# 20000 crafted files through every decoder (CRCs recomputed; tests/test_fuzz.py), DCOMP_FUZZ_SEED=N for others.
fuzz:
	DCOMP_FUZZ_N=20000 $(PY) -m pytest -q tests/test_fuzz.py -k fuzz_mutated

# Kodak lossless table (mlp through the CLI, its linear ablation, classical codecs) + synthetic images.
bench-lossless:
	$(PY) -m dcomp.bench.lossless --dataset $(KODAK) --json results/lossless-kodak.json

# 4000x3000 round trip through the CLI, peak memory.
bench-memory:
	$(PY) -m dcomp.bench.lossless --memory $(DATA)/photos-train/001.png --json results/memory.json

# Lossy methods against the classical codecs (and CompressAI's published curves on Kodak):
# tables, BD-rates, plots and per-image timings in results/.
bench-lossy-kodak:
	.venv/bin/dcomp bench --dataset $(KODAK) --methods cnn-ae,cnn-ae-ft --codecs jpeg,jpeg2000,webp,avif \
		--out results/bench-kodak-lossy

bench-lossy-cifar10:
	.venv/bin/dcomp bench --dataset cifar10 --data-dir $(DATA)/cifar10-subset --methods cnn-ae,cnn-ae-ft \
		--codecs jpeg,jpeg2000,webp,avif --out results/bench-cifar10-lossy

# The GAN decoders against cnn-ae-ft at the same bits: the two lowest qualities on Kodak (with
# side-by-side sheets against JPEG and WebP), every quality on CIFAR-10; then image by image.
bench-gan-kodak:
	.venv/bin/dcomp bench --dataset $(KODAK) --methods cnn-ae-ft,gan-ae,gan-ae-dc --qualities 1,2 \
		--codecs jpeg,webp --save-crops results/bench-kodak-gan/crops --crop-bpp 0.14 --jobs 2 \
		--out results/bench-kodak-gan --force
	$(PY) -m dcomp.bench.compare results/bench-kodak-gan --json results/bench-kodak-gan/compare.json

bench-gan-cifar10:
	.venv/bin/dcomp bench --dataset cifar10 --data-dir $(DATA)/cifar10-subset --methods cnn-ae-ft,gan-ae,gan-ae-dc \
		--codecs webp --jobs 2 --out results/bench-cifar10-gan --force
	$(PY) -m dcomp.bench.compare results/bench-cifar10-gan --json results/bench-cifar10-gan/compare.json

# cnn-rnn-ae, all 16 iterations, against cnn-ae-ft and the classical codecs (BD-rates on PSNR
# and MS-SSIM; per-quality encode and decode times), then a 4000x3000 photo at 16 iterations.
bench-rnn-kodak:
	.venv/bin/dcomp bench --dataset $(KODAK) --methods cnn-rnn-ae,cnn-ae-ft --codecs jpeg,jpeg2000,webp,avif \
		--out results/bench-kodak-rnn --force

bench-rnn-cifar10:
	.venv/bin/dcomp bench --dataset cifar10 --data-dir $(DATA)/cifar10-subset --methods cnn-rnn-ae,cnn-ae-ft \
		--codecs jpeg,webp --jobs 2 --out results/bench-cifar10-rnn --force

# What the binary model saves per iteration (raw decisions, a memoryless coder, coded) and the
# time of a 16-iteration round trip per Kodak image, in-process.
bench-rnn-bits:
	$(PY) -m dcomp.bench.progressive --dataset $(KODAK) --json results/rnn-bits-kodak.json

bench-memory-rnn:
	$(PY) -m dcomp.bench.memory --photo $(DATA)/photos-train/001.png -m cnn-rnn-ae -q 16 --json results/memory-rnn.json

# The backbone's ablation: untrained / trained transform x context-free / context tables, each
# with tables refitted on training photos, coded with cnn-ae-ft's encoder; BD-rate vs JPEG 2000.
bench-ablation:
	$(PY) -m dcomp.bench.ablation --dataset $(KODAK) --weights weights/cnn-ae-ft.npz \
		--train $(DATA)/photos-train $(DATA)/photos-train-extra --images 6 --json results/ablation-kodak.json

# 4000x3000 lossy round trip through the CLI (tiled transforms), peak memory of each step.
bench-memory-lossy:
	$(PY) -m dcomp.bench.memory --photo $(DATA)/photos-train/001.png -m cnn-ae-ft -q 4 --json results/memory-lossy.json

train-mlp:
	.venv/bin/dcomp train mlp --data $(DATA)/photos-train --out weights/mlp.npz --steps 12000 --force

# The committed lossy weights: pre-training, then fine-tuning (add --resume to continue either).
# The wavelet backbone (dcomp/lifting.py): tables fitted to the untrained transform first (the
# curve's step 0 is that classical floor), then the whole model, then cnn-ae-ft fine-tuned from it.
train-cnn-ae:
	.venv/bin/dcomp train cnn-ae --data $(DATA)/photos-train --extra $(DATA)/photos-train-extra \
		--cifar $(DATA)/cifar10-subset --minutes 55 --crop 256 --batch 4 --threads 1 --out weights/cnn-ae.npz --force

train-cnn-ae-ft:
	.venv/bin/dcomp train cnn-ae-ft --data $(DATA)/photos-train --extra $(DATA)/photos-train-extra \
		--init weights/cnn-ae.npz --minutes 25 --crop 384 --batch 2 --threads 1 --out weights/cnn-ae-ft.npz --force

# Schedule and binary priors from the block-transform cnn-ae-ft (retired as cnn-ae-ft's backbone,
# kept in weights/legacy), then the recurrent decoder (--resume continues it).
train-cnn-rnn-ae:
	.venv/bin/dcomp train cnn-rnn-ae --data $(DATA)/photos-train --extra $(DATA)/photos-train-extra \
		--init weights/legacy/cnn-ae-ft.e938af17.npz --minutes 55 --out weights/cnn-rnn-ae.npz --force

# The GAN decoders, fine-tuned from the committed cnn-ae-ft (rerun both when it changes).
# gan-ae: 12 minutes, then 33 more from where it stopped (the committed weights: 4,747 steps).
train-gan-ae:
	.venv/bin/dcomp train gan-ae --data $(DATA)/photos-train --init weights/cnn-ae-ft.npz --minutes 12 \
		--out weights/gan-ae.npz --force
	.venv/bin/dcomp train gan-ae --data $(DATA)/photos-train --init weights/cnn-ae-ft.npz --minutes 33 \
		--out weights/gan-ae.npz --resume

train-gan-ae-dc:
	.venv/bin/dcomp train gan-ae-dc --data $(DATA)/photos-train --init weights/cnn-ae-ft.npz --minutes 12 \
		--out weights/gan-ae-dc.npz --force

clean:
	rm -rf .venv build *.egg-info .pytest_cache results

# Batch compression on a local Dask cluster (dcomp batch): mlp and cnn-ae, 1 worker against 2 (one
# torch and one BLAS thread each), on 200 CIFAR-10 test images and the 24 Kodak images, then one
# worker killed half-way through a run and the rerun timed; table on stdout, results/batch-throughput.json.
bench-batch:
	$(PY) -m dcomp.batch.throughput --kodak $(KODAK) --cifar $(DATA)/cifar10-subset --json results/batch-throughput.json
