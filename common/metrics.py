"""Accuracy, parameter and MAC counts, expected MACs of dynamic models, latency.

MACs follow one convention: `torch.utils.flop_counter.FlopCounterMode` FLOPs / 2 (one multiply-add = 1
MAC, torchvision's `_ops` convention), with attention counted: the MHA fast path is disabled and
scaled-dot-product attention runs on the math kernel, whose matmuls the counter sees.
"""
from __future__ import annotations

import contextlib
import statistics
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[int, int]:
    """Number of samples whose label is among the top-k logits, for each k."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hits = top == labels[:, None]
    return {k: int(hits[:, :k].any(dim=1).sum()) for k in ks}


def accuracy(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[int, float]:
    """Top-k accuracy in percent."""
    return {k: 100.0 * v / len(labels) for k, v in topk_correct(logits, labels, ks).items()}


def count_params(model: nn.Module) -> int:
    """All trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@contextlib.contextmanager
def counting_attention() -> Iterator[None]:
    """Make attention visible to FlopCounterMode: no MHA fast path, math SDPA kernel."""
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)


_COUNTING = [False]


def counting() -> bool:
    """Whether `counted` is counting the current call: code with a faster path that FlopCounterMode cannot see
    (an elementwise product for a matmul) takes its counted one while this is True."""
    return _COUNTING[0]


def counted(fn: Callable[..., object], *inputs: object) -> tuple[object, int]:
    """(output, MACs) of one call `fn(*inputs)` (a module or any callable): FLOPs / 2, attention counted."""
    counter = FlopCounterMode(display=False)
    before, _COUNTING[0] = _COUNTING[0], True
    try:
        with torch.no_grad(), counting_attention(), counter:
            output = fn(*inputs)
    finally:
        _COUNTING[0] = before
    return output, counter.get_total_flops() // 2


def count_macs(fn: Callable[..., object], *inputs: object) -> int:
    """MACs of one call `fn(*inputs)` (a module or any callable): FLOPs / 2, attention counted."""
    return counted(fn, *inputs)[1]


def model_macs(model: nn.Module, input_size: tuple[int, int, int], batch_size: int = 1) -> int:
    """MACs per image of a model in eval mode at the given (C, H, W)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        macs = count_macs(model, torch.zeros(batch_size, *input_size, device=device))
    finally:
        model.train(was_training)
    return macs // batch_size


@dataclass
class ExpectedMacs:
    """Per-image MACs of a dynamic model over a dataset: mean and the per-image values."""
    mean: float
    per_image: torch.Tensor          # [N] MACs of each image
    always: int                      # executed for every image (stem, shortcuts, head)
    overhead: int                    # gates / routers
    block_macs: torch.Tensor         # [L] MACs of each skippable branch
    rates: torch.Tensor              # [L] execution rate of each branch over the dataset

    def summary(self) -> dict[str, float]:
        """Mean, std, min, max and quartiles of the per-image MACs."""
        values = self.per_image.double()
        quartiles = torch.quantile(values, torch.tensor([0.25, 0.5, 0.75], dtype=torch.double))
        return {"mean": float(values.mean()), "std": float(values.std()) if len(values) > 1 else 0.0,
                "min": float(values.min()), "max": float(values.max()),
                "q25": float(quartiles[0]), "median": float(quartiles[1]), "q75": float(quartiles[2])}


def expected_macs(always: int, overhead: int, block_macs: torch.Tensor, decisions: torch.Tensor) -> ExpectedMacs:
    """Expected MACs = always-executed + gate/router MACs + Σ_l z_il · block MACs_l.

    `decisions` is [N, L] with 1 where image i executed skippable branch l; the mean over images
    equals always + overhead + Σ_l rate_l · MACs_l.
    """
    decisions = decisions.double()
    per_image = always + overhead + decisions @ block_macs.double()
    return ExpectedMacs(float(per_image.mean()), per_image, always, overhead,
                        block_macs, decisions.mean(dim=0))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def alternating_latency(variants: Mapping[str, Callable[[], object]], rounds: int = 3, repeats: int = 10,
                        warmup: int = 1, setups: Mapping[str, Callable[[], None]] | None = None,
                        device: torch.device | None = None, interleave: bool = False) -> dict[str, dict]:
    """Milliseconds per call of each variant, timed in alternating rounds (every variant once per round, after
    its `setups` entry and `warmup` untimed calls), so that a change in the machine's load hits all alike.

    `interleave=True` (for calls of seconds, such as training steps, where the machine's speed drifts within a
    round): a round runs every variant once per repeat, in reversed order every other repeat, so that the
    i-th calls of two variants ran seconds apart (`paired_ratio`). Each call is timed by
    `torch.utils.benchmark.Timer.timeit(1)` (synchronises CUDA, torch's current threads; it runs the call
    twice untimed right before the timed run) and kept in order
    (`calls_ms`); a variant's `median_ms` is the median over rounds of its round medians, `min_ms`/`max_ms`
    its fastest/slowest call. Calls run under `torch.no_grad` unless they enable gradients themselves.
    """
    from torch.utils.benchmark import Timer

    setups = setups or {}
    names = list(variants)
    timers = {name: Timer("call()", globals={"call": call}, num_threads=torch.get_num_threads())
              for name, call in variants.items()}
    round_medians: dict[str, list[float]] = {name: [] for name in names}
    every: dict[str, list[float]] = {name: [] for name in names}

    def prepare(name: str) -> None:
        if name in setups:
            setups[name]()
        for _ in range(warmup):
            variants[name]()
        if device is not None:
            _sync(device)

    for _ in range(rounds):
        times: dict[str, list[float]] = {name: [] for name in names}
        if interleave:
            for name in names:
                prepare(name)
            for repeat in range(repeats):
                for name in names if repeat % 2 == 0 else reversed(names):
                    times[name].append(timers[name].timeit(1).median)
        else:
            for name in names:
                prepare(name)
                times[name] = [timers[name].timeit(1).median for _ in range(repeats)]
        for name in names:
            round_medians[name].append(statistics.median(times[name]))
            every[name] += times[name]
    return {name: {"median_ms": 1000 * statistics.median(medians), "min_ms": 1000 * min(every[name]),
                   "max_ms": 1000 * max(every[name]), "calls_ms": [1000 * t for t in every[name]],
                   "round_medians_ms": [1000 * m for m in medians], "rounds": rounds, "repeats": repeats,
                   "torch_threads": torch.get_num_threads()}
            for name, medians in round_medians.items()}


def paired_ratio(times: Sequence[float], reference: Sequence[float]) -> float:
    """The median over calls of each call's ratio to the reference's call in the same slot (`interleave=True`):
    a slow moment of the machine slows both sides of a ratio alike."""
    if len(times) != len(reference) or not times:
        raise ValueError(f"paired_ratio needs two equally long, non-empty series; got {len(times)} and {len(reference)}.")
    return statistics.median(t / r for t, r in zip(times, reference))


@torch.no_grad()
def measure_latency(model: nn.Module, inputs: torch.Tensor, warmup: int = 5, repeats: int = 20) -> dict[str, float]:
    """Median forward time at the batch size of `inputs`: warm-up, then `repeats` timings
    (one round of `alternating_latency`, the project's one timer)."""
    model.eval()
    timing = alternating_latency({"model": lambda: model(inputs)}, rounds=1, repeats=repeats, warmup=warmup,
                                 device=inputs.device)["model"]
    median = timing["median_ms"] / 1000
    return {"batch_size": inputs.shape[0], "median_ms": timing["median_ms"], "min_ms": timing["min_ms"],
            "max_ms": timing["max_ms"], "images_per_s": inputs.shape[0] / median, "repeats": repeats, "device": str(inputs.device)}
