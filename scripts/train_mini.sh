#!/usr/bin/env bash
# Train every `mini` run (CPU, resumable), headline targets first, and copy each target's finished runs
# into weights/mini/ (scripts/collect_runs.py) once its results are written. Run in the background:
#   nohup nice -n 19 bash scripts/train_mini.sh DATA_DIR [LANES] > mini.log 2>&1 &
# LANES (default 2 on a CPU with 2 or more cores) `reproduce campaign` processes share the target list,
# each with --threads cores/LANES: on a 2-core CPU two one-thread runs trained 1.34× the images/s of one
# two-thread run (README). A run resumes only with the thread count it started with, so keep LANES
# between calls. A lane that reaches a run the other is training goes on with that target's later rows,
# then puts the target at the back of its queue, so the lanes train different runs until only busy ones
# are left.
# A target whose results/<paper>-<target>-mini.json exists is skipped: delete that file to run it again.
# Stop: `bash scripts/stop_mini.sh` (SIGINT does not reach background jobs). Each run keeps its last epoch
# and continues there on the next call. results/runs is not committed: stop_mini.sh parks the unshipped
# runs in weights/mini-in-progress/ (scripts/park_runs.py save); commit that folder, and this script
# restores them first, so another clone continues them.
# `compare methods` times models while the other lane trains: rerun it on an idle machine for its
# latency columns (its accuracy and MACs do not change).
set -uo pipefail
cd "$(dirname "$0")/.."
data=${1:?usage: train_mini.sh CIFAR10_DIR [LANES]}
cores=$(nproc)
lanes=${2:-$((cores < 2 ? 1 : 2))}
case "$lanes" in ''|*[!0-9]*|0) echo "train_mini.sh: LANES is a whole number ≥ 1, not '$lanes'" >&2; exit 2 ;; esac
command -v uv > /dev/null || { echo "train_mini.sh: uv is not on PATH; install it first (pip install uv)" >&2; exit 2; }
threads=$((cores / lanes > 0 ? cores / lanes : 1))
export MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=4294967296
# Headline rows first (RDI-Net's Fig. 5 sweep among them), then the ablations.
targets=(baselines/cifar10-resnet adanet/table1 adn/fig3a dygraph/table6 compare/methods rdinet/fig9
         rdinet/fig5 dygraph/table1 dygraph/fig-edges adn/fig3b adn/table1 adanet/fig3 adanet/fig4 adanet/fig6
         adanet/fig7 adanet/fig8 adn/table3 rdinet/table2 rdinet/table3 rdinet/fig7)

uv run python scripts/park_runs.py restore || exit 1
for lane in $(seq 1 "$lanes"); do
    uv run python -m reproduce campaign --preset mini --data-dir "$data" --out results --threads "$threads" \
        --skip-written --then "flock results/.collect.lock python scripts/collect_runs.py mini" \
        --targets "${targets[@]}" > "mini-lane$lane.log" 2>&1 &
done
echo "$lanes lane(s): mini-lane1.log …"
wait
