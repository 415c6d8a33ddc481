"""Measure any trained model of the four papers: test accuracy, MACs per image under real skipping,
and CPU/GPU latency against its static backbone.

    python -m reproduce eval MODEL --weights DIR_OR_HUB_ID [--data-dir DIR] [--out DIR]

MODEL is `PAPER/NAME` (a name of that paper's `create_model`, e.g. `adanet/adanet20`), a dotted class
(`adanet.model.Adanet`), or `auto` for a run folder written by `common.runs` (its run.json names the
class). Every model is measured the way it is deployed: gated networks (Adanet, RDI-Net) and DY-Graph
really skip (`skip` mode); an ADN network is measured as its super-net and its base-net; a static one
as it is. MACs per image: gated networks from their decisions (`common.dynamic.expected_macs_of`,
equal to counting a skipped execution at batch 1), other dynamic ones counted at batch 1 image by
image, static ones counted once. This module also serves `python -m reproduce compare`.
"""
from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from common.backbones import list_backbones
from common.data import DataBundle
from common.dynamic import UNDECIDED, expected_macs_of, gated_blocks, undecided
from common.dynamic import decisions as gate_decisions
from common.dynamic import probabilities as gate_probabilities
from common.dynamic import set_mode as set_gate_mode
from common.hub import HubBackbone, WeightsError, weights_folder
from common.metrics import alternating_latency, count_macs, model_macs, topk_correct
from common.train import _BAR_INTERVAL, PRECISIONS

PACKAGES = ("adanet", "rdinet", "dygraph", "adn")
LATENCY_BATCHES = (1, 64)
COUNTED_IMAGES = 1000  # images counted one by one for dynamic networks without a decision profile


def load_model(model: str, weights: str) -> nn.Module:
    """A trained model from MODEL (`PAPER/NAME`, a dotted class, or `auto`) and a weights folder or Hub id."""
    if model == "auto":
        record = Path(weights) / "run.json"
        if not record.is_file():
            raise WeightsError(f"MODEL auto needs a run folder with run.json; {weights} has none: give "
                               f"PAPER/NAME (e.g. adanet/adanet20) or a dotted class instead.")
        model = json.loads(record.read_text())["class"]
    if "/" in model:
        paper, name = model.split("/", 1)
        if paper == "baselines":
            return HubBackbone.from_pretrained(weights)
        if paper not in PACKAGES:
            raise WeightsError(f"Unknown paper {paper!r} in MODEL {model!r}. Valid: baselines, {', '.join(PACKAGES)}.")
        package = importlib.import_module(paper)
        if name not in package.list_models():
            raise WeightsError(f"Unknown model {name!r} in MODEL {model!r}. Valid for {paper}: "
                               f"{', '.join(package.list_models())}.")
        return package.create_model(name, pretrained=weights)
    module, _, name = model.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        owners = [f"{paper}/{model}" for paper in PACKAGES if model in importlib.import_module(paper).list_models()]
        owners += [f"baselines/{model}"] if model in list_backbones() else []
        hint = f"did you mean {' or '.join(owners)}?" if owners else "give PAPER/NAME (e.g. adanet/adanet20) or auto."
        raise WeightsError(f"MODEL {model!r} is neither PAPER/NAME nor an importable class (module.Class): "
                           f"{hint}") from None
    return cls.from_pretrained(weights)


def trained_precision(weights: str | Path) -> str:
    """"bf16" or "fp32": the precision the recipe of a run folder or Hub id trained and evaluated it in (its
    run.json); "fp32" for weights without one."""
    record = weights_folder(weights) / "run.json"
    if not record.is_file():
        return "fp32"
    return json.loads(record.read_text())["content"]["recipe"].get("precision", "fp32")


@dataclass
class Mode:
    """One way to run a model at inference: a label and how to switch the model into it."""
    label: str
    enter: Callable[[], None] = lambda: None
    leave: Callable[[], None] = lambda: None


def inference_modes(model: nn.Module, sample_gates: int | None = None) -> list[Mode]:
    """How each kind of model is deployed: real skipping, or ADN's super- and base-net. `sample_gates`
    (a seed) adds real skipping with Gumbel-sampled gates, as in training (Adanet only)."""
    if sample_gates is not None and not hasattr(model, "set_stochastic"):
        raise WeightsError(f"--sample-gates: {type(model).__name__} has no sampled gates at test time; "
                           f"only Adanet models (adanet/...) do.")
    if gated_blocks(model):
        modes = [Mode("skip", lambda: set_gate_mode(model, "skip"), lambda: set_gate_mode(model, "masked"))]
        if sample_gates is not None:
            def sampled() -> None:
                set_gate_mode(model, "skip")
                model.set_stochastic(True)
                torch.manual_seed(sample_gates)  # every pass over the test set draws the same gates

            def argmax() -> None:
                model.set_stochastic(False)
                set_gate_mode(model, "masked")
            modes.append(Mode(f"skip, sampled gates (seed {sample_gates})", sampled, argmax))
        return modes
    if type(model).__name__ == "DYGraphNet":
        from dygraph import set_mode
        return [Mode("skip", lambda: set_mode(model, "skip"), lambda: set_mode(model, "masked"))]
    if hasattr(model, "set_skip"):
        return [Mode(config, lambda c=config: model.set_skip(c), lambda: model.set_skip(None))
                for config in ("super", "base")]
    return [Mode("static")]


def static_backbone(model: nn.Module, num_classes: int) -> nn.Module:
    """The plain backbone a dynamic model is built on (for the latency ratio); a static model is its own."""
    config = getattr(model, "_hub_mixin_config", {}) or {}
    name = config.get("backbone") or config.get("name")
    if name is None:
        raise WeightsError(f"{type(model).__name__} names no backbone in its config; cannot time it against one.")
    return HubBackbone(name, num_classes).eval()


@dataclass
class Measurement:
    """What `measure` finds for one inference mode."""
    mode: str
    top1: float
    macs: torch.Tensor               # [N] MACs per image (float64)
    backbone_macs: int
    precision: str = "fp32"          # "bf16": every number measured under bf16 autocast
    latency_ms: dict[int, float] = field(default_factory=dict)
    backbone_latency_ms: dict[int, float] = field(default_factory=dict)
    block_rates: list[float] = field(default_factory=list)      # gated networks: each block's executed share
    block_undecided: list[float] = field(default_factory=list)  # and its share of images with P(execute) in UNDECIDED

    def summary(self) -> dict:
        """JSON-ready numbers."""
        return {"mode": self.mode, "precision": self.precision, "top1": self.top1, "macs_mean": float(self.macs.mean()),
                "macs_std": float(self.macs.std()) if len(self.macs) > 1 else 0.0, "images_counted": len(self.macs),
                "macs_fraction": float(self.macs.mean()) / self.backbone_macs, "backbone_macs": self.backbone_macs,
                "latency_ms": self.latency_ms, "backbone_latency_ms": self.backbone_latency_ms,
                "latency_ratio": {b: self.latency_ms[b] / self.backbone_latency_ms[b] for b in self.latency_ms},
                "block_rates": self.block_rates, "block_undecided": self.block_undecided}


@torch.no_grad()
def _accuracy_and_macs(model: nn.Module, data: DataBundle, size: tuple[int, int, int], progress: bool
                       ) -> tuple[float, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Top-1 over the test set in the current mode; for gated networks also the per-image MACs and the
    decisions and P(execute) [N, L]."""
    correct, seen, taken, probs = 0, 0, [], []
    gated = bool(gated_blocks(model))
    for images, labels in tqdm(data.test_loader, desc="accuracy", leave=False, disable=not progress,
                               mininterval=_BAR_INTERVAL, delay=3.0):  # a bar only past a few seconds
        logits = model(data.preprocess(images, train=False))
        correct += topk_correct(logits, labels, (1,))[1]  # as training counts it: bf16 logits can tie, argmax breaks ties otherwise
        seen += len(labels)
        if gated:
            taken.append(gate_decisions(model).float())
            probs.append(gate_probabilities(model).float())
    if not gated:
        return 100.0 * correct / seen, None, None, None
    taken = torch.cat(taken)
    return 100.0 * correct / seen, expected_macs_of(model, size, taken).per_image, taken, torch.cat(probs)


@torch.no_grad()
def _counted_macs(model: nn.Module, data: DataBundle, limit: int, progress: bool) -> torch.Tensor:
    """MACs of each of the first `limit` test images, counted one at a time (real skipping)."""
    values = []
    for images, _ in data.test_loader:
        for image in images:
            values.append(count_macs(model, data.preprocess(image[None], train=False)))
            if len(values) >= limit:
                return torch.tensor(values, dtype=torch.float64)
    return torch.tensor(values, dtype=torch.float64)


def measure(model: nn.Module, data: DataBundle, latency: bool = True, rounds: int = 3, repeats: int = 10,
            progress: bool = True, counted_images: int = COUNTED_IMAGES, precision: str = "fp32",
            sample_gates: int | None = None) -> list[Measurement]:
    """Accuracy, MACs per image and latency vs the static backbone, for each inference mode of `model`, in
    `precision` ("bf16": under bf16 autocast, as `common.train.evaluate` runs a bf16 recipe's test set);
    `sample_gates`: a seed for an extra mode with sampled gates (`inference_modes`)."""
    if precision not in PRECISIONS or precision == "auto":  # a recipe's "auto" is resolved by trained_precision
        raise ValueError(f"Unknown precision {precision!r} to measure in; valid: bf16, fp32.")
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        return _measure(model, data, latency, rounds, repeats, progress, counted_images, precision, sample_gates)


def _measure(model: nn.Module, data: DataBundle, latency: bool, rounds: int, repeats: int, progress: bool,
             counted_images: int, precision: str, sample_gates: int | None) -> list[Measurement]:
    model = model.cpu().eval()
    size = data.input_size
    backbone = static_backbone(model, data.num_classes)
    backbone_macs = model_macs(backbone, size)
    results = []
    for mode in inference_modes(model, sample_gates):
        mode.enter()
        try:
            top1, macs, taken, probs = _accuracy_and_macs(model, data, size, progress)
            if macs is None:
                dynamic = type(model).__name__ == "DYGraphNet"
                macs = (_counted_macs(model, data, counted_images, progress) if dynamic
                        else torch.tensor([float(model_macs(model, size))], dtype=torch.float64))
            per_block = {} if taken is None else {"block_rates": taken.mean(0).tolist(),
                                                  "block_undecided": undecided(probs).mean(0).tolist()}
            results.append(Measurement(mode.label, top1, macs, backbone_macs, precision=precision, **per_block))
        finally:
            mode.leave()
    if latency:
        for batch in LATENCY_BATCHES:
            inputs = torch.randn(batch, *size)
            modes = {result.mode: mode for mode, result in zip(inference_modes(model, sample_gates), results)}
            variants = {"backbone": lambda: backbone(inputs), **{name: lambda: model(inputs) for name in modes}}
            try:
                timing = alternating_latency(variants, rounds, repeats, warmup=2,
                                             setups={name: mode.enter for name, mode in modes.items()})
            finally:
                for mode in modes.values():
                    mode.leave()
            for result in results:
                result.latency_ms[batch] = timing[result.mode]["median_ms"]
                result.backbone_latency_ms[batch] = timing["backbone"]["median_ms"]
    return results


def plot_macs_histogram(measurements: list[Measurement], title: str, path: Path) -> None:
    """Distribution of MACs per image, one histogram per inference mode."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for m in measurements:
        ax.hist((m.macs / 1e6).numpy(), bins=30, alpha=0.6, label=f"{m.mode} (mean {float(m.macs.mean()) / 1e6:.2f} M)")
    ax.axvline(measurements[0].backbone_macs / 1e6, color="k", linestyle="--", linewidth=1, label="static backbone")
    ax.set(xlabel="MACs per image (M)", ylabel="images", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(measurements: list[Measurement], title: str) -> str:
    """One row per inference mode: accuracy, MACs per image, latency against the static backbone."""
    lines = [f"### {title}", "", "| mode | Top-1 (%) | MACs/image (M) | × backbone MACs | "
             + " | ".join(f"batch {b} (ms) | × backbone" for b in LATENCY_BATCHES) + " |",
             "|---|---|---|---|" + "---|---|" * len(LATENCY_BATCHES)]
    for m in measurements:
        s = m.summary()
        latency = " | ".join(f"{m.latency_ms[b]:.2f} | {s['latency_ratio'][b]:.2f}" if b in m.latency_ms else "— | —"
                             for b in LATENCY_BATCHES)
        lines.append(f"| {m.mode} | {m.top1:.2f} | {s['macs_mean'] / 1e6:.2f} ± {s['macs_std'] / 1e6:.2f} | "
                     f"{s['macs_fraction']:.3f} | {latency} |")
    for m in measurements:
        if m.block_rates:
            lines += ["", f"Per gated block, in network order ({m.mode}): executed share "
                      + " ".join(f"{r:.2f}" for r in m.block_rates) + f"; share of images whose P(execute) lies in "
                      f"({UNDECIDED[0]}, {UNDECIDED[1]}) " + " ".join(f"{u:.2f}" for u in m.block_undecided) + "."]
    backbone = measurements[0]
    lines += ["", f"Precision: {backbone.precision}" + (" (bf16 autocast, as the run's recipe trained and evaluated it)"
                                                       if backbone.precision == "bf16" else "") + "."]
    if backbone.backbone_latency_ms:
        lines += ["", "Static backbone: " + ", ".join(f"batch {b} {backbone.backbone_latency_ms[b]:.2f} ms"
                                                     for b in LATENCY_BATCHES)
                  + f", {backbone.backbone_macs / 1e6:.2f} M MACs. Latency: medians of alternating rounds on "
                    f"this machine's CPU ({torch.get_num_threads()} threads)."]
    return "\n".join(lines) + "\n"
