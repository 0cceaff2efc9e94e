# Every target sets up what it needs: `make demo` and `make test` work on a fresh checkout.
PYTHON ?= python3
VENV ?= .venv
# torch and the torchvision built for it (timm, the backbones of --option backbone=NAME, imports
# torchvision; a torchvision of another torch build fails to import). Override with your own
# pair, e.g. TORCH_SPEC="torch==2.14.1 torchvision==0.29.1 --index-url <your wheel index>".
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
BIN := $(VENV)/bin

# make preprocess DATASET=<name> DATA_ROOT=<dir> [STORE=<path>] [ALIGN=crop] [SIZE=48] [PRIOR=full-frame] ...
# DATASET: affectnet fer2013 ferplus rafdb rafdb-original ckplus folder sample (docs/datasets.md)
# Every store option of fer-preprocess is also a variable: its name in capitals (--detect-min-face
# is DETECT_MIN_FACE=); fer-preprocess reads them from the environment make gives it
# (--make-variables), so a new option needs nothing here. `fer-preprocess --help` lists them.
DATASET ?= folder
DATA_ROOT ?=
STORE ?= stores/$(DATASET).zarr
SALIENCY_MODEL ?=
WORKERS ?=
SCHEDULER ?=
PREPROCESS_ARGS ?=
# pytest arguments, e.g. PYTEST_ARGS="-m 'not slow'" for the fast tests only.
PYTEST_ARGS ?=

.PHONY: install viewer demo preprocess test lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check $(TORCH_SPEC)
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $@

# fer-store view: FiftyOne and a MongoDB for it (the [viewer] extra). fiftyone asks for
# opencv-python-headless, which installs its own cv2 over opencv-contrib's: contrib's files are put
# back (the pipeline needs cv2.saliency).
viewer: $(VENV)/.viewer-installed

$(VENV)/.viewer-installed: $(VENV)/.installed
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[test,viewer]"
	$(BIN)/pip install --quiet --disable-pip-version-check --force-reinstall --no-deps \
		"$$($(BIN)/pip freeze --disable-pip-version-check | grep -i '^opencv-contrib-python-headless==')"
	$(BIN)/python -c "import cv2; cv2.saliency.StaticSaliencySpectralResidual_create()"
	touch $@

demo: install
	$(BIN)/fer-preprocess build/demo.zarr --dataset sample
	$(BIN)/fer-store show build/demo.zarr --out build/demo-contact-sheet.png
	@echo "contact sheet: build/demo-contact-sheet.png"

preprocess: install
	$(BIN)/fer-preprocess "$(STORE)" --dataset $(DATASET) --make-variables \
		$(if $(DATA_ROOT),--root "$(DATA_ROOT)") $(if $(SALIENCY_MODEL),--saliency-model "$(SALIENCY_MODEL)") \
		$(if $(WORKERS),--workers $(WORKERS)) $(if $(SCHEDULER),--scheduler $(SCHEDULER)) $(PREPROCESS_ARGS)

# The viewer's tests need the [viewer] extra; they skip, saying so, where it is missing.
test: install viewer
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# ruff: lint rules and formatting; mypy: types (--strict on pipeline, fer_models, cli); both as configured in
# pyproject.toml (CI runs them before the tests).
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install
	$(BIN)/python bench/preprocess.py
	$(BIN)/python bench/datasets.py
	$(BIN)/python bench/guidance.py
	$(BIN)/python bench/loader.py
	$(BIN)/python bench/predict.py
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[test,engines]"
	$(BIN)/python bench/read_engines.py
	$(BIN)/python bench/zstd_level.py
	$(BIN)/python bench/tensor_codecs.py
	$(BIN)/python bench/shard_write.py
	$(BIN)/python bench/damaged_stores.py

clean:
	rm -rf build .pytest_cache
