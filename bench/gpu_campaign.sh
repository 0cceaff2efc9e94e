#!/usr/bin/env bash
# The GPU campaign on the GPU machine: every guided family and its twin, three seeds each, trained at once from the carried
# FER-2013 store (bench/gpu_campaign.py run), the table and the runs' logs written to $OUT.
#
# Prepare on the CPU machine (the project installed, ../shared/data beside it; build/gpu/wheels as
# in bench/gpu.sh):
#   .venv/bin/python bench/gpu_campaign.py prepare --wheels build/gpu/wheels
# It prints the device calls to make, in order: each carries one part of build/campaign, all but the
# last run `true`, back to back while the machine stays warm (30 s); the last runs this script.
# Arguments go to `bench/gpu_campaign.py run` (--minutes 7, --seeds 0,1,2, --recipe, --runs, --max-epochs...).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
PARTS=${PARTS:-build/campaign}
compgen -G "$PARTS/part-*" >/dev/null || { echo "no $PARTS/part-*: run bench/gpu_campaign.py prepare here first" >&2; exit 2; }
if ! "$PYTHON" -c "import zarr, numcodecs, google_crc32c, zstandard" 2>/dev/null; then
    links=()
    for folder in "$PARTS"/part-*/wheels; do [ -d "$folder" ] && links+=(--find-links "$folder"); done
    "$PYTHON" -m pip install --quiet --no-index "${links[@]}" zarr numcodecs google-crc32c zstandard
fi
"$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: bench/gpu_campaign.py run --device cpu runs anywhere')"
RESULTS=${OUT:-build/campaign/results}
mkdir -p "$RESULTS"
PYTHONPATH=. timeout 570 "$PYTHON" bench/gpu_campaign.py run --parts "$PARTS" --out build/campaign/runs "$@" > "$RESULTS/campaign.json"
cp build/campaign/runs/campaign.md "$RESULTS/"
# Each run's log.jsonl, summary.json and output, small, for the docs (checkpoints stay behind).
(cd build/campaign/runs && tar czf - --exclude='*.pt' --exclude='*.png' --exclude='*.csv' .) > "$RESULTS/campaign-runs.tgz"
cat "$RESULTS/campaign.md"
