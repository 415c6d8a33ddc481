#!/usr/bin/env bash
# The one command a lent GPU machine runs (the device tool's `run`, 10 minutes a call): measure the
# loop, run the `short` campaign for the rest of the call, and pack results + weights into $OUT.
#
#   Here, once:  cp -r CIFAR10_DIR .data/cifar10   (a CIFAR-10 folder in the Hub's parquet layout; .data is git-ignored, name it in `carry`)
#                python3 -m pip download ... -d .whl datasets pyarrow ...   (see the device README)
#   Each call:   run(command="bash scripts/gpu_campaign.sh 7", carry=[".data", ".whl", "results/runs"])
#
# Finished and unfinished runs come back in $OUT/runs.tar (checkpoints of unfinished runs included, in
# bf16 when the whole would not fit), so the next call continues them (unpack into results/runs).
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-7}
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:-$PWD}
out=${OUT:-/tmp/out}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/device.txt" || true
python3 benchmarks/train_step.py --models resnet110 adanet110 rdinet110 dygraph110 adn110 --settings bf16+channels_last \
    --rounds 3 --steps 10 --out "$out/train_step.json" 2>&1 | tail -8 || true
python3 -m reproduce campaign --preset short --data-dir .data/cifar10 --budget-minutes "$minutes" --out results \
    2>&1 | grep -v "it/s" | tee "$out/campaign.log" | tail -40
tar -cf "$out/results.tar" results/*.json results/*.md results/*.png 2>/dev/null || true
tar -cf "$out/runs.tar" --exclude='*.lock' results/runs
if [ "$(stat -c %s "$out/runs.tar")" -gt 60000000 ]; then  # too big to come back: finished weights only
    tar -cf "$out/runs.tar" --exclude='checkpoint.pt' --exclude='*.lock' results/runs
fi
ls -la "$out"
