"""Short ResNet-20 runs of the `mini` recipe with one field changed: how the recipe was chosen.

    python benchmarks/recipe_proxy.py --data-dir DIR --epochs 8 --variants batch_size=128 batch_size=64 \
        batch_size=128,label_smoothing=0.1 --out benchmarks/recipe_proxy.json

Each variant is `MINI_RECIPE` with `--epochs` and the given fields replaced (its cosine schedule then
completes in those epochs), trained from the same seed on the full CIFAR-10 and tested on its test
set; the variants run one after another in this process (seconds are wall-clock, not a benchmark).
Runs go to a temporary folder, not to `results/runs`: they are not rows of any table.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.data import build_data  # noqa: E402
from common.hub import HubBackbone  # noqa: E402
from common.reproduction import MINI_RECIPE  # noqa: E402
from common.train import TrainConfig, fit  # noqa: E402


def parse_variant(text: str) -> dict:
    """'batch_size=64,label_smoothing=0.1' → {'batch_size': 64, 'label_smoothing': 0.1} (typed by TrainConfig)."""
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    overrides = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        if name not in fields or not value:
            raise SystemExit(f"bad variant item {item!r}: use FIELD=VALUE with FIELD one of {', '.join(fields)}")
        kind = type(getattr(MINI_RECIPE, name))
        if kind is bool:
            overrides[name] = value.lower() in ("1", "true", "yes")
        elif kind in (int, float, str):
            overrides[name] = kind(value)
        else:
            raise SystemExit(f"{name} ({kind.__name__}) cannot be set from the command line")
    return overrides


def main() -> None:
    """Train each variant, print and write its final test accuracy and time."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True, help="CIFAR-10 in the Hub's parquet layout")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--variants", nargs="+", default=["batch_size=128", "batch_size=64"])
    parser.add_argument("--out", default=None, help="JSON file for the results")
    args = parser.parse_args()
    rows = []
    for text in args.variants:
        config = dataclasses.replace(MINI_RECIPE, epochs=args.epochs, **parse_variant(text))
        torch.manual_seed(config.seed)
        model = HubBackbone("resnet20_cifar", num_classes=10)
        data = build_data("cifar10", args.data_dir, batch_size=config.batch_size)
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as folder:
            history = fit(model, data, config, folder, progress=False).history
        rows.append({"variant": text, "epochs": args.epochs, "test_top1": history[-1]["test_top1"],
                     "train_top1": history[-1]["train_top1"], "seconds": time.perf_counter() - start})
        print(f"{text:40s} top-1 {rows[-1]['test_top1']:.2f}  ({rows[-1]['seconds']:.0f} s)", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"recipe": dataclasses.asdict(MINI_RECIPE), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
