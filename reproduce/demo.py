"""The one-minute demo: the shipped `mini` models measured on the packaged CIFAR-10 test sample.

    python -m reproduce demo [--all] [--weights DIR] [--out DIR]

No training and no download: the run folders under weights/mini (Hub layout, committed with the
repository) that the cross-paper comparison names, i.e. the ResNet-20 and each method's headline model
(`--all`: every shipped run, ablations included; another --weights folder: every run in it), are
loaded by `reproduce.evaluation.load_model` and measured by `measure`, the code behind
`python -m reproduce eval`: top-1 on the 1,000-image sample, MACs per image under real skipping, and
CPU latency at batch 1 and 64 against its static ResNet-20. The static ResNet-20 comes first; the
rest follow in folder order. Accuracy on the sample is not the test-set number in the results files.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from common.reproduction import REPO_ROOT, WEIGHTS_DIR

from .evaluation import LATENCY_BATCHES, Measurement, load_model, measure, trained_precision


BASELINE_TARGET = "baselines-cifar10-resnet-mini"  # the plain ResNet-20 every paper's mini rows compare with
COMPARISON = REPO_ROOT / "results" / "compare-methods-mini.json"  # names the headline run of every method


def _requested_by(folder: Path) -> dict:
    """The row and results target a run was trained for (its run.json), e.g. {"row": "Adanet 20", …}."""
    return json.loads((folder / "run.json").read_text()).get("requested_by", {})


def shipped_runs(weights: Path) -> list[Path]:
    """Run folders with weights under `weights`: the baseline ResNet-20 first, then folder order."""
    folders = sorted(p.parent for p in weights.glob("*/model.safetensors"))
    return sorted(folders, key=lambda p: _requested_by(p).get("target") != BASELINE_TARGET)


def demo_runs(weights: Path, every: bool = False) -> list[Path]:
    """The runs the demo measures: of the shipped mini weights, those the cross-paper comparison names (all of
    them with `every`); of any other folder, every run."""
    folders = shipped_runs(weights)
    if every or Path(weights).resolve() != (WEIGHTS_DIR / "mini").resolve() or not COMPARISON.exists():
        return folders
    named = {run["folder"] for run in json.loads(COMPARISON.read_text())["runs"].values()}
    return [folder for folder in folders if folder.name in named]


def _row(folder: Path) -> str:
    """The run's row, and the results target that asked for it where that is not the baseline table."""
    requested = _requested_by(folder)
    row, target = requested.get("row") or folder.name, requested.get("target")
    return row if target in (None, BASELINE_TARGET) else f"{row} [{target}]"


def table(results: list[tuple[str, Measurement]]) -> str:
    """One Markdown row per model and inference mode."""
    lines = ["| model | mode | precision | top-1 on sample (%) | MACs/image (M) | × ResNet-20 MACs | "
             + " | ".join(f"batch {b} (ms) | × static" for b in LATENCY_BATCHES) + " |",
             "|---|---|---|---|---|---|" + "---|---|" * len(LATENCY_BATCHES)]
    for row, m in results:
        s = m.summary()
        latency = " | ".join(f"{m.latency_ms[b]:.2f} | {s['latency_ratio'][b]:.2f}" for b in LATENCY_BATCHES)
        lines.append(f"| {row} | {m.mode} | {m.precision} | {m.top1:.1f} | {s['macs_mean'] / 1e6:.2f} | "
                     f"{s['macs_fraction']:.3f} | {latency} |")
    return "\n".join(lines) + "\n"


def run_demo(weights: Path, rounds: int = 3, repeats: int = 5, every: bool = False) -> list[tuple[str, Measurement]]:
    """Measure the demo's runs on the packaged sample (accuracy, MACs, latency vs the static backbone)."""
    from common.data import build_data

    folders = demo_runs(weights, every)
    if not folders:
        raise FileNotFoundError(f"no trained runs under {weights}: train them with scripts/train_mini.sh, "
                                f"or point --weights at a folder of run folders")
    data = build_data("cifar10-sample")
    results = []
    for folder in folders:
        model, row = load_model("auto", str(folder)), _row(folder)
        for m in measure(model, data, rounds=rounds, repeats=repeats, counted_images=100, progress=False,
                         precision=trained_precision(folder)):
            results.append((row, m))
        print(f"measured {row} ({folder.name})", flush=True)
    return results


def main(argv: list[str], parser_class: type[argparse.ArgumentParser]) -> int:
    """`python -m reproduce demo`: print and write the table of every shipped mini model."""
    from common.train import atomic_write_text

    parser = parser_class(prog="python -m reproduce demo",
                          description="Measure the shipped mini models on the packaged CIFAR-10 sample.")
    parser.add_argument("--weights", default=str(WEIGHTS_DIR / "mini"), help="a folder of run folders (default: weights/mini)")
    parser.add_argument("--all", action="store_true", help="every shipped run, not only the headline models")
    parser.add_argument("--out", default="results/demo", help="folder for demo.md and demo.json")
    args = parser.parse_args(argv)
    results = run_demo(Path(args.weights), every=args.all)
    markdown = table(results)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(markdown, out / "demo.md")
    atomic_write_text(json.dumps([{"row": row, **m.summary()} for row, m in results], indent=2) + "\n",
                      out / "demo.json")
    print(markdown)
    print(f"wrote {out / 'demo.md'} and demo.json")
    return 0
