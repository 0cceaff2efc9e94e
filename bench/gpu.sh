#!/usr/bin/env bash
# The GPU check: does the GPU wait on the store? One short run of bench/gpu.py (JSON on stdout).
#
# Prepare on the CPU machine (the project installed, ../shared/data beside it):
#   .venv/bin/python bench/gpu.py --build build/gpu/store.zarr --images 1536 --size 112
#   .venv/bin/pip download --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#       --platform manylinux_2_28_x86_64 --dest build/gpu/wheels zarr==3.1.6 numcodecs google-crc32c zstandard
# (numpy's wheel can go where the GPU machine has numpy: 16 MB less of the 64 MiB a call carries),
# then run this on the GPU machine with build/gpu/store.zarr and build/gpu/wheels carried beside
# the checkout (the ninth session ran `bash bench/gpu.sh --epochs 5`: docs/benchmarks.md). Reading a store
# needs only torch, zarr, numcodecs, google-crc32c and zstandard (no dlib, no OpenCV); missing ones are
# installed from build/gpu/wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c "import zarr, numcodecs, google_crc32c, zstandard" 2>/dev/null; then
    "$PYTHON" -m pip install --quiet --no-index --find-links build/gpu/wheels zarr numcodecs google-crc32c zstandard
fi
"$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: bench/gpu.sh is for a GPU machine (bench/gpu.py --device cpu runs anywhere)')"
[ -d build/gpu/store.zarr ] || { echo "no build/gpu/store.zarr: build it on the CPU machine first (see the top of this script)" >&2; exit 2; }
PYTHONPATH=. exec timeout 420 "$PYTHON" bench/gpu.py --store build/gpu/store.zarr "$@"
