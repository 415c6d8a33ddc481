#!/usr/bin/env bash
# Train every `mini` run (CPU, resumable), headline targets first, then copy the finished runs into
# weights/mini/ (scripts/collect_runs.py). Run in the background:
#   nohup nice -n 19 bash scripts/train_mini.sh DATA_DIR [LANES] > mini.log 2>&1 &
# LANES (1 or 2; default 2 on a CPU with 2 or more cores) trains that many targets side by side, each with
# --threads cores/LANES: on a 2-core CPU two one-thread runs trained 1.34× the images/s of one two-thread
# run (README). A run resumes only with the thread count it started with, so keep LANES between calls.
# Stop: pkill -TERM -f "bash scripts/train_mini.sh"; pkill -TERM -f "python -m reproduce" (the scripts first,
# or a lane starts its next target; SIGINT does not reach background jobs). Each run keeps its last epoch.
# A killed run continues where it stopped on the next call (--resume); two lanes never train the same
# run (the run layer locks it: a lane that needs a run the other is training waits for it). A target whose
# results/<paper>-<target>-mini.json exists is skipped: delete that file to run it again.
set -uo pipefail
cd "$(dirname "$0")/.."
data=${1:?usage: train_mini.sh CIFAR10_DIR [LANES]}
cores=$(nproc)
lanes=${2:-$((cores < 2 ? 1 : 2))}
case "$lanes" in 1|2) ;; *) echo "train_mini.sh: LANES is 1 or 2, not '$lanes'" >&2; exit 2 ;; esac
threads=$((cores / lanes > 0 ? cores / lanes : 1))
export MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=4294967296
# The headline rows first in both lanes (ADN-20 in one, DY-Graph-20 and static α in the other), then the
# ablations. `compare methods` follows ADN-20 in lane 1: it needs every headline row, and a lane that
# reaches a run the other is training waits for it, so it goes where the wait is shortest (it trains a
# DY-Graph row itself if lane 2 has not started it), then the DY-Graph targets that only reuse its runs, so that
# lane 2 goes on with RDI-Net's runs. A target trains its runs one after another, and a lane that reaches a run
# the other lane is training waits for it, so the RDI-Net targets are split between the lanes (fig7's sweep in
# lane 1), or one lane would idle for days. `compare methods` times models while the other lane trains:
# rerun it on an idle machine for its latency columns (its accuracy and MACs do not change).
lane1=("baselines cifar10-resnet" "adanet table1" "adn fig3a" "compare methods" "dygraph table1"
       "dygraph fig-edges" "adn fig3b" "adn table1" "adanet fig3" "adanet fig4" "adanet fig6" "adanet fig7"
       "adanet fig8" "adn table3" "rdinet fig7")
lane2=("dygraph table6" "rdinet fig9" "rdinet fig5" "rdinet table2" "rdinet table3")

run_lane() {
    for target in "$@"; do
        written="results/${target// /-}-mini.json"
        if [ -f "$written" ]; then  # its runs are finished: rerunning would only rewrite provenance (and timings)
            echo "== $target: $written exists, skipped (delete it to rerun the target)"
            continue
        fi
        echo "== $target $(date -u +%H:%M:%S) (--threads $threads)"
        uv run python -m reproduce $target --preset mini --data-dir "$data" --out results --resume \
            --threads "$threads" || echo "!! $target failed"
        flock results/.collect.lock uv run python scripts/collect_runs.py mini
    done
}

if [ "$lanes" -ge 2 ]; then
    run_lane "${lane1[@]}" > mini-lane1.log 2>&1 &
    run_lane "${lane2[@]}" > mini-lane2.log 2>&1 &
    echo "two lanes: mini-lane1.log, mini-lane2.log"
    wait
else
    run_lane "${lane1[@]:0:3}" "${lane2[@]:0:1}" "${lane1[@]:3}" "${lane2[@]:1}"  # headline targets first
fi
