#!/usr/bin/env bash
# Train every `mini` run (CPU, resumable), headline targets first, then copy the finished runs into
# weights/mini/ (scripts/collect_runs.py). Run in the background:
#   nohup nice -n 19 bash scripts/train_mini.sh DATA_DIR > mini.log 2>&1 &
# A killed run continues where it stopped on the next call (--resume).
set -uo pipefail
cd "$(dirname "$0")/.."
data=${1:?usage: train_mini.sh CIFAR10_DIR}
export MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=4294967296
targets=("baselines cifar10-resnet" "adanet table1" "compare methods" "rdinet fig9" "adn table1" "dygraph table6" "rdinet fig5"
         "adn table3" "rdinet table2" "rdinet table3" "dygraph table1" "adanet fig3" "adanet fig4" "adanet fig6"
         "adanet fig7" "adanet fig8" "adn fig3a" "adn fig3b" "dygraph fig-edges" "rdinet fig7")
for target in "${targets[@]}"; do
    echo "== $target $(date -u +%H:%M:%S)"
    uv run python -m reproduce $target --preset mini --data-dir "$data" --out results --resume || echo "!! $target failed"
    uv run python scripts/collect_runs.py mini
done
