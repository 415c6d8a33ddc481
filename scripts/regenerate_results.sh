#!/usr/bin/env bash
# Regenerate every committed smoke result at HEAD from fresh runs: each target at --seed 0 into
# results/ (and its paper README block), and at --seed 1 into results/seed1/ — the twin that
# tests/test_results.py compares to find cells that depend on training. Run on a clean tree.
#   bash scripts/regenerate_results.sh                                  # every target (about an hour)
#   bash scripts/regenerate_results.sh rdinet/fig5 adn/table3           # only these (e.g. what
#                                                                       # scripts/check_results.py found stale)
set -euo pipefail
cd "$(dirname "$0")/.."
export MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=4294967296
rm -rf results/seed1/runs
# fresh smoke runs (the mini runs under results/runs are kept: they are long and resumable)
grep -l '"target": "[a-z]*-[a-z0-9-]*-smoke"' results/runs/*/run.json 2>/dev/null | xargs -r -n1 dirname | xargs -r rm -rf || true
if [ $# -gt 0 ]; then
    targets=$(printf '%s\n' "$@" | tr '/' ' ')
else  # `list` prints a header and, under each target, an indented line of presets: keep the target lines
    targets=$(uv run python -m reproduce list | awk '$1 ~ /^(baselines|adanet|rdinet|dygraph|adn|compare)$/ {print $1, $2}')
fi
echo "$targets" | while read -r paper target; do
    for seed in 0 1; do
        out=results; [ "$seed" = 1 ] && out=results/seed1
        start=$(date +%s)
        uv run python -m reproduce "$paper" "$target" --preset smoke --seed "$seed" --out "$out" > /dev/null
        echo "$paper $target seed $seed: $(( $(date +%s) - start )) s"
    done
done
for paper in baselines adanet rdinet dygraph adn; do
    uv run python -m reproduce readme "$paper"
done
