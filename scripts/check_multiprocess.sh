#!/usr/bin/env bash
# Two CPU processes under `accelerate launch`: a smoke target trains with the recipe's global batch
# (each process takes half) and RDI-Net's warm-up epoch (routers without gradients) runs under DDP.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
ACCELERATE_USE_CPU=true uv run accelerate launch --multi_gpu --num_processes 2 --num_machines 1 \
    --mixed_precision no --dynamo_backend no \
    -m reproduce rdinet fig9 --preset smoke --out "$out" 2>&1 | grep -v "it/s\]"
python3 - "$out" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
for run in sorted(out.glob("runs/*/metrics.jsonl")):
    content = json.loads((run.parent / "run.json").read_text())["content"]
    epochs = [json.loads(l) for l in run.read_text().splitlines()]
    print(run.parent.name, "global batch", content["recipe"]["batch_size"], "USW epochs",
          content["method"]["hparams"]["warmup_epochs"], "epochs logged", len(epochs))
PY
