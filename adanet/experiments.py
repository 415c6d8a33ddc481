"""The machinery behind Adanet's tables and figures: training rows once, gate statistics, counting,
FGSM with JPEG, the real-skipping benchmark and the plots. `tables.py` holds the numbers and targets.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from common.data import DataBundle, normalize
from common.dynamic import decisions as gate_decisions
from common.dynamic import gated_blocks, macs_profile, probabilities, set_mode
from common.metrics import ExpectedMacs, alternating_latency, count_macs, expected_macs, model_macs
from common.train import Method, evaluate

from .model import Adanet

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
ANIMALS = (2, 3, 4, 5, 6, 7)   # CIFAR-10 animal classes; the rest are vehicles


_PROFILES: dict[tuple[str, tuple[int, int, int]], tuple[int, int, torch.Tensor]] = {}


def gate_profile(model: nn.Module, size: tuple[int, int, int]) -> tuple[int, int, torch.Tensor]:
    """(always-executed MACs, gate MACs, [L] branch MACs) per image (`common.dynamic.macs_profile`), cached.

    The counts depend on the architecture alone, so an `Adanet`'s are kept per configuration.
    """
    key = None
    if isinstance(model, Adanet):
        key = (json.dumps(model._hub_mixin_config, sort_keys=True), tuple(size))
        if key in _PROFILES:
            always, overhead, branch = _PROFILES[key]
            return always, overhead, branch.clone()
    profile = macs_profile(model, size)  # counts in eval mode
    if key is not None:
        _PROFILES[key] = profile
    return profile[0], profile[1], profile[2].clone()


def expected_macs_over(model: nn.Module, size: tuple[int, int, int], taken: torch.Tensor) -> ExpectedMacs:
    """Expected MACs per image given the [N, L] decisions taken over a dataset (`common.metrics.expected_macs`)."""
    always, overhead, branch = gate_profile(model, size)
    return expected_macs(always, overhead, branch, taken)


def macs_at_rates(model: nn.Module, size: tuple[int, int, int], rates: torch.Tensor) -> float:
    """always + gates + Σ_l rate_l · MACs_l: the expected MACs at given execution rates."""
    always, overhead, branch = gate_profile(model, size)
    return float(always + overhead + (rates.double() * branch.double()).sum())


@torch.no_grad()
def execution_probabilities(model: nn.Module, data: DataBundle, max_images: int) -> torch.Tensor:
    """Mean P(execute) of every gate over (up to `max_images`) un-augmented training images.

    This is the expected execution rate the "*" variant scales each layer by (Sec. 4.1).
    """
    device = next(model.parameters()).device
    model.eval()
    set_mode(model, "masked")
    total, seen = None, 0
    for images, _ in data.train_loader:
        probs = probabilities(_forward(model, data.preprocess(images.to(device), train=False)))
        total = probs.sum(0) if total is None else total + probs.sum(0)
        seen += len(probs)
        if seen >= max_images:
            break
    return (total / seen).cpu()


def _forward(model: nn.Module, inputs: torch.Tensor) -> nn.Module:
    model(inputs)
    return model


def evaluate_mode(model: nn.Module, data: DataBundle, mode: str, method: Method,
                  bf16: bool | None = None) -> dict[str, torch.Tensor]:
    """Logits, labels (and the method's extras) over the test set with the gates in `mode` (bf16 autocast
    when `bf16`, as `common.train.evaluate`)."""
    set_mode(model, mode)
    try:
        return evaluate(model, data, method, bf16=bf16)
    finally:
        set_mode(model, "masked")


def error(evaluation: dict[str, torch.Tensor], k: int = 1) -> float:
    """Top-k error in percent."""
    top = evaluation["logits"].topk(k, dim=1).indices
    return 100.0 * (1.0 - float((top == evaluation["labels"][:, None]).any(1).float().mean()))


def scaled_macs(model: Adanet) -> int:
    """MACs per image of the "*" variant: every layer executed, no gates."""
    set_mode(model, "scaled")
    try:
        return model_macs(model, model.input_size)
    finally:
        set_mode(model, "masked")


# ---------------------------------------------------------------- adversarial attack (Sec. 4.3)

def fgsm_direction(model: nn.Module, pixels: torch.Tensor, labels: torch.Tensor, dataset: str) -> torch.Tensor:
    """sign(∇_x CE(f(x), y)) at the clean images x ∈ [0, 1] (Goodfellow et al.'s FGSM, one step)."""
    model.eval()
    x = pixels.clone().requires_grad_(True)
    loss = F.cross_entropy(model(normalize(x * 255.0, dataset)), labels)
    (grad,) = torch.autograd.grad(loss, x)
    return grad.sign()


def fgsm(pixels: torch.Tensor, direction: torch.Tensor, eps: float) -> torch.Tensor:
    """x_adv = clip(x + ε · sign(∇_x L), 0, 1), ε in pixel units of [0, 1]."""
    return (pixels + eps * direction).clamp(0.0, 1.0)


def jpeg(pixels: torch.Tensor, quality: int = 75) -> torch.Tensor:
    """JPEG-compress and decode every image (the defence of Guo et al., quality 75); [0, 1] in and out."""
    as_bytes = (pixels * 255.0).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    decoded = []
    for image in as_bytes:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
        decoded.append(np.asarray(Image.open(buffer).convert("RGB")))
    return torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2).to(pixels.device).float() / 255.0


def test_pixels(data: DataBundle) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole (limited) test set as [0, 1] floats and labels."""
    images, labels = zip(*data.test_loader)
    return torch.cat(images).float() / 255.0, torch.cat(labels)


@torch.no_grad()
def predict(model: nn.Module, pixels: torch.Tensor, dataset: str, batch_size: int = 500
            ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Predicted classes and, for a gated model, [N, L] decisions."""
    model.eval()
    device = next(model.parameters()).device
    preds, taken = [], []
    for start in range(0, len(pixels), batch_size):
        batch = pixels[start:start + batch_size].to(device)
        preds.append(model(normalize(batch * 255.0, dataset)).argmax(1).cpu())
        if gated_blocks(model):
            taken.append(gate_decisions(model).cpu())
    return torch.cat(preds), (torch.cat(taken) if taken else None)


def attack_direction(model: nn.Module, pixels: torch.Tensor, labels: torch.Tensor, dataset: str,
                     batch_size: int = 250) -> torch.Tensor:
    """FGSM directions of a whole set, in batches (the gates in masked mode, deterministic)."""
    device = next(model.parameters()).device
    set_mode(model, "masked")
    return torch.cat([fgsm_direction(model, pixels[s:s + batch_size].to(device), labels[s:s + batch_size].to(device),
                                     dataset).cpu() for s in range(0, len(pixels), batch_size)])


# ---------------------------------------------------------------- real-skipping benchmark

def forced_pattern(batch: int, layers: int, rate: float, seed: int = 0) -> torch.Tensor:
    """[batch, layers] 0/1: every image executes exactly round(rate · layers) layers, chosen at random."""
    generator = torch.Generator().manual_seed(seed)
    keep = round(rate * layers)
    pattern = torch.zeros(batch, layers)
    for row in pattern:
        row[torch.randperm(layers, generator=generator)[:keep]] = 1.0
    return pattern


def force_decisions(model: nn.Module, pattern: torch.Tensor | None) -> None:
    """Make every gated block take `pattern[:, l]` (None: back to the gates' own decisions)."""
    for index, block in enumerate(gated_blocks(model)):
        block.override = None if pattern is None else (lambda x, column=pattern[:, index]: column[:x.shape[0]])


def latency_benchmark(baseline: nn.Module, adanet: Adanet, rate: float, batch_sizes: tuple[int, ...],
                      device: torch.device, repeats: int, warmup: int, rounds: int = 3) -> dict:
    """Median forward time of the baseline and of the Adanet (skip and masked) with forced decisions.

    The three are timed in alternating rounds by `common.metrics.alternating_latency`.
    """
    baseline, adanet = baseline.to(device).eval(), adanet.to(device).eval()
    layers = len(gated_blocks(adanet))
    results: dict = {"baseline": {}, "skip": {}, "masked": {}}
    for batch in batch_sizes:
        inputs = torch.randn(batch, *adanet.input_size, device=device)
        force_decisions(adanet, forced_pattern(batch, layers, rate).to(device))
        try:
            timing = alternating_latency(
                {"baseline": lambda: baseline(inputs), "skip": lambda: adanet(inputs), "masked": lambda: adanet(inputs)},
                rounds, repeats, warmup, setups={mode: lambda m=mode: set_mode(adanet, m) for mode in ("skip", "masked")},
                device=device)
        finally:
            force_decisions(adanet, None)
            set_mode(adanet, "masked")
        for name, result in timing.items():
            results[name][batch] = {**result, "batch_size": batch, "device": str(device)}
    return results


def forced_macs(adanet: Adanet, rate: float) -> tuple[int, float]:
    """(MACs counted at batch size 1 in skip mode with the forced pattern, expected MACs of that pattern)."""
    pattern = forced_pattern(1, len(gated_blocks(adanet)), rate)
    force_decisions(adanet, pattern)
    set_mode(adanet, "skip")
    try:
        counted = count_macs(adanet.eval(), torch.zeros(1, *adanet.input_size))
    finally:
        force_decisions(adanet, None)
        set_mode(adanet, "masked")
    return counted, expected_macs_over(adanet, adanet.input_size, pattern).mean


# ---------------------------------------------------------------- figures

@dataclass
class Panel:
    title: str
    matrix: torch.Tensor          # [classes, layers] execution rates
    downsampling: list[bool]


def rates_by_class(taken: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    """[classes, L] execution rate of every layer over the images of every class."""
    return torch.stack([taken[labels == c].float().mean(0) if (labels == c).any()
                        else torch.full((taken.shape[1],), float("nan")) for c in range(classes)])


def plot_heatmaps(panels: list[Panel], path: Path, class_names: tuple[str, ...]) -> None:
    """Fig. 3: execution rate per layer (x) and class (y), one panel per model."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 1, figsize=(12, 2.6 * len(panels)), squeeze=False)
    for ax, panel in zip(axes[:, 0], panels):
        image = ax.imshow(panel.matrix.numpy(), aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0)
        ax.set_yticks(range(len(class_names)), class_names, fontsize=7)
        ax.set_xlabel("residual layer")
        ax.set_title(panel.title, fontsize=9, pad=14)
        for layer, down in enumerate(panel.downsampling):
            if down:
                ax.text(layer, -0.9, "▼", ha="center", va="bottom", fontsize=6, color="red", clip_on=False)
        fig.colorbar(image, ax=ax, fraction=0.02, pad=0.01, label="execution rate")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_histograms(series: dict[str, dict[str, torch.Tensor]], path: Path) -> None:
    """Fig. 4: distribution of the number of executed layers per image, by group."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(series), figsize=(5.5 * len(series), 3.4), squeeze=False)
    for ax, (title, groups) in zip(axes[0], series.items()):
        upper = int(max(int(v.max()) for v in groups.values())) + 1
        bins = torch.arange(0, upper + 1).float() - 0.5
        for name, counts in groups.items():
            ax.hist(counts.numpy(), bins=bins.numpy(), density=True, alpha=0.5,
                    label=f"{name} (mean {counts.float().mean():.2f})")
        ax.set_xlabel("executed layers per image")
        ax.set_ylabel("fraction of images")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_trajectories(series: dict[str, tuple[torch.Tensor, list[bool]]], path: Path, target: float = 0.6) -> None:
    """Fig. 6: execution rate of every layer per training epoch; downsampling layers in red."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(series), figsize=(5.5 * len(series), 3.4), squeeze=False)
    for ax, (title, (rates, downsampling)) in zip(axes[0], series.items()):
        epochs = torch.arange(1, rates.shape[0] + 1)
        for layer in range(rates.shape[1]):
            ax.plot(epochs.numpy(), rates[:, layer].numpy(), marker="o" if len(epochs) < 5 else None,
                    color="tab:red" if downsampling[layer] else "tab:blue", alpha=0.9 if downsampling[layer] else 0.35,
                    linewidth=1.4 if downsampling[layer] else 0.8)
        ax.axhline(target, color="gray", linestyle="--", linewidth=0.8, label=f"target t = {target}")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=7, loc="lower left")
        ax.set_xlabel("epoch")
        ax.set_ylabel("execution rate (training batches)")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{title} (red: downsampling layers)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_attack(eps: list[float], curves: dict[str, list[float]], path: Path) -> None:
    """Fig. 7: top-1 accuracy against FGSM strength ε, with and without JPEG-75."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, values in curves.items():
        ax.plot(eps, values, marker="o", linestyle="--" if "JPEG" in name else "-", label=name)
    ax.set_xlabel("ε (pixel scale [0, 1])")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_rates_before_after(before: torch.Tensor, after: torch.Tensor, title: str, path: Path) -> None:
    """Fig. 8: execution rate of every layer before and after the attack."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = torch.arange(len(before)).numpy()
    fig, ax = plt.subplots(figsize=(10, 3.2))
    ax.bar(layers - 0.2, before.numpy(), width=0.4, label="clean")
    ax.bar(layers + 0.2, after.numpy(), width=0.4, label="after FGSM")
    ax.set_xlabel("residual layer")
    ax.set_ylabel("execution rate")
    ax.set_ylim(0, 1.05)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
