# Everything runs from .venv; `make setup` is idempotent and cheap the second time.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help setup run manifest test lint train-data train train-refine tune-gain train-hint-head evaluate bench gpu-check gpu-wheels gpu-pack gpu-session clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)  ## create .venv and install the project (idempotent)

run: setup  ## colorize the bundled sample archive (jobs/demo.toml), then status and audit
	@# a demo made by an earlier version is refused as another job (exit 2): the demo starts over
	$(BIN)/colorize run jobs/demo.toml || { [ $$? -eq 2 ] && echo "make run: the demo starts over" \
	  && $(BIN)/colorize run jobs/demo.toml --restart; }
	$(BIN)/colorize status out/demo
	$(BIN)/colorize audit out/demo
	@echo "colorized images: out/demo/images/   results: out/demo/results/   report: out/demo/audit.html"

manifest: setup  ## rescan the bundled samples into manifests/demo.parquet
	$(BIN)/colorize scan pipeline/samples -o manifests/demo.parquet --shard-size 4 --relative --fresh

# Three test processes on two cores: much of the suite's time is spent waiting on clusters,
# workers, CLIs and browsers (slowed answers), which a third fills (2026-12-04, with OpenMP
# waiting passively in the suite: -n 2 586 s, -n 3 533 s; one process took 12 minutes). Runs
# about records go to a warm cluster per process (tests/conftest.py warm): -n 3 568 -> 434 s
# (a clean clone's CI: 507 s).
# worksteal: an idle process takes tests from another's queue (dealing whole files out left one
# idle). --durations: the slowest tests named in every CI log, where the next trim starts.
TEST_PROCS ?= 3
test: setup  ## the import contract (the client never imports torch), then the test suite
	$(BIN)/lint-imports
	$(BIN)/pytest -q -n $(TEST_PROCS) --dist worksteal --durations=12

lint: setup  ## ruff
	$(BIN)/ruff check pipeline tests

# Where the fetch tool put the GitHub snapshots (owner+name/repo), see ../shared/data/SOURCES.md.
MIRROR ?= /work/.mirror
DEBIAN_PHOTOS ?= data/debian-photos
# kphotoalbum's demo photos: independent evaluation only, never trained on (jobs/fetch_kphotoalbum.sh).
KPHOTOALBUM ?= data/kphotoalbum
# Prokudin-Gorsky's three-colour plates, aligned (jobs/fetch_historical.sh): historical scenes with
# their true colour; evaluation only, never trained on. Needs the three snapshots it names fetched.
HISTORICAL ?= data/historical
TUTORIAL_WEIGHTS ?= $(MIRROR)/geniscori+Image-Colorization/repo
TUTORIAL_COMMIT := 4f2c9408ed53eeff584da780ac18ba5b2f35ddf4

train-data: setup  ## build data/train (photos, cache, manifest.csv) from the snapshots and Debian
	test -d $(DEBIAN_PHOTOS) || sh jobs/fetch_train_photos.sh $(DEBIAN_PHOTOS)
	test -f data/tutorial-init.pth || git --git-dir=$(TUTORIAL_WEIGHTS) show \
	    $(TUTORIAL_COMMIT):checkpoints/model_random-epoch-16-losses-0.003.pth > data/tutorial-init.pth
	$(BIN)/python -m pipeline.model.traindata --mirror $(MIRROR) --debian $(DEBIAN_PHOTOS) --out data/train

train: setup  ## retrain the shipped weights (jobs/train.toml) into out/train; resumes after a stop
	$(BIN)/colorize train jobs/train.toml --resume

train-refine: setup  ## third stage (jobs/train-refine.toml): out/train/best.pt -> out/refine; resumes
	$(BIN)/colorize train jobs/train-refine.toml --resume

tune-gain: setup  ## choose the chroma gain of out/refine/best.pt on the validation split -> the shipped weights
	$(BIN)/colorize tune-gain out/refine/best.pt data/train --out pipeline/weights/colorizer.pt

train-hint-head: setup  ## the hint head over the shipped net's features (~4 h on 2 cores) -> pipeline/weights/hint_head.pt
	test -f out/cpu-pack-192.npz || $(BIN)/python -m pipeline.model.gputrain pack data/train out/cpu-pack-192.npz --side 192 --max-mb 400
	test -f out/hinthead/small.npy || $(BIN)/python -m pipeline.model.train_hinthead extract out/cpu-pack-192.npz out/hinthead
	mkdir -p out/hinthead2 && ln -sf ../hinthead/feats.npy ../hinthead/small.npy ../hinthead/meta.json out/hinthead2/
	$(BIN)/python -m pipeline.model.train_hinthead train out/hinthead2 --attend --minutes 45 --lr 1e-3
	$(BIN)/python -m pipeline.model.train_hinthead train out/hinthead2 --minutes 15 --lr 3e-4
	$(BIN)/python -m pipeline.model.train_hinthead train out/hinthead2 --minutes 15 --lr 1e-4
	# then on a second view of the photos too: each squeezed whole to 256 px, as the engine sees them
	test -f out/cpu-pack-256w.npz || $(BIN)/python -m pipeline.model.gputrain pack data/train out/cpu-pack-256w.npz --side 256 --max-mb 700 --whole
	test -f out/hinthead256/small.npy || $(BIN)/python -m pipeline.model.train_hinthead extract out/cpu-pack-256w.npz out/hinthead256
	mkdir -p out/hinthead3 && ln -sf ../hinthead/feats.npy ../hinthead/small.npy ../hinthead/meta.json out/hinthead3/
	$(BIN)/python -m pipeline.model.train_hinthead train out/hinthead3 --also out/hinthead256 --init out/hinthead2/best.pt --minutes 60 --lr 3e-4 --decay
	# then the head grows a branch of its own (a copy of the net's layer2 and decoder conv) trained with the hints
	test -f out/hintbranch/small.npy || $(BIN)/python -m pipeline.model.train_hinthead extract out/cpu-pack-192.npz out/hintbranch --low
	test -f out/hintbranch256/small.npy || $(BIN)/python -m pipeline.model.train_hinthead extract out/cpu-pack-256w.npz out/hintbranch256 --low
	$(BIN)/python -m pipeline.model.train_hinthead train out/hintbranch --also out/hintbranch256 --init out/hinthead3/best.pt --branch --minutes 75 --lr 3e-4 --decay
	$(BIN)/python -m pipeline.model.train_hinthead export out/hintbranch

evaluate: setup  ## score the shipped weights: evaluation split, wheels, kphotoalbum, historical plates
	$(BIN)/pip install -q -e '.[eval]'
	test ! -f data/train/manifest.csv || $(BIN)/colorize evaluate data/train --out out/eval-collection
	$(BIN)/colorize evaluate wheels --out out/eval
	test -d $(KPHOTOALBUM) || sh jobs/fetch_kphotoalbum.sh $(KPHOTOALBUM)
	$(BIN)/colorize evaluate $(KPHOTOALBUM) --out out/eval-kphotoalbum
	test -d $(HISTORICAL) || sh jobs/fetch_historical.sh $(MIRROR) data/historical-plates $(HISTORICAL)
	$(BIN)/colorize evaluate $(HISTORICAL) --out out/eval-historical
	$(BIN)/colorize evaluate $(HISTORICAL) --film ortho --out out/eval-historical-ortho

bench: setup  ## throughput benchmark; appends to BENCHMARKS.md
	$(BIN)/colorize bench --count 200 --width 1600 --height 1200 --append BENCHMARKS.md
	$(BIN)/colorize bench --plan 1000000 --append BENCHMARKS.md

gpu-check: setup  ## on a GPU machine: gpu tests, cuda bench, thread sweep, byte identity (here: dry run)
	bash jobs/gpu_check.sh

GPU_PACK ?= out/gpu-pack.npz
gpu-pack: setup  ## the training split as one <= 28 MiB file for a lent GPU (needs make train-data)
	$(BIN)/python -m pipeline.model.gputrain pack data/train $(GPU_PACK)

gpu-session: setup  ## on a GPU machine: gpu-check, then training on the pack (here: the dry run)
	PACK=$(GPU_PACK) bash jobs/gpu_session.sh

# What the lent GPU machines' image lacks (it has torch, numpy, pillow, scikit-image, pyarrow,
# tifffile, tqdm, fsspec, psutil...), as Python 3.12 wheels to carry there in .whl/.
GPU_WHEELS := dask==2026.7.1 distributed==2026.7.1 imagecodecs==2026.3.6 tornado partd locket zict tblib
gpu-wheels:  ## download the wheels a GPU machine needs for gpu-check into .whl/
	grep -qx '/.whl/' .git/info/exclude || echo /.whl/ >> .git/info/exclude
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	    -d .whl $(GPU_WHEELS)

clean:  ## remove what make run and make evaluate wrote (keeps .venv, training runs, and any job of yours under out/)
	rm -rf out/demo out/eval out/eval-* build *.egg-info
