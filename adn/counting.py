"""Counting conventions behind the paper's numbers, to explain where ours differ (README).

Ours are `common.metrics.model_macs` (FlopCounterMode, conv/linear/matmul MACs, attention
counted). The paper's CNN numbers match a ptflops-style count that also charges normalisation,
activation and pooling layers per element; its ViT numbers leave out every
`nn.MultiheadAttention` (projections and attention products).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from common.metrics import counting_attention

from .model import SkipAwareBatchNorm2d

ELEMENTWISE = (nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.MaxPool2d, nn.AdaptiveAvgPool2d)


@torch.no_grad()
def elementwise_ops(model: nn.Module, input_size: tuple[int, int, int]) -> int:
    """Per-image ops a ptflops-style counter adds: 2 per BatchNorm output element, 1 per activation / pooling one.

    A skip-aware BatchNorm is charged once, whichever of its two sets runs.
    """
    twins = {id(m.skip_norm) for m in model.modules() if isinstance(m, SkipAwareBatchNorm2d)}
    total = 0

    def hook(module: nn.Module, inputs, output) -> None:
        nonlocal total
        if isinstance(module, (nn.MaxPool2d, nn.AdaptiveAvgPool2d)):
            total += inputs[0].numel()
        else:
            total += output.numel() * (2 if isinstance(module, nn.BatchNorm2d) else 1)

    hooks = [m.register_forward_hook(hook) for m in model.modules()
             if isinstance(m, ELEMENTWISE) and id(m) not in twins]
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(1, *input_size))
    finally:
        for handle in hooks:
            handle.remove()
        model.train(was_training)
    return total


@torch.no_grad()
def attention_macs(model: nn.Module, input_size: tuple[int, int, int]) -> dict[str, int]:
    """Per-image MACs of a ViT split into all, inside `nn.MultiheadAttention` modules, and its attention products."""
    names = {name for name, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)}
    counter = FlopCounterMode(display=False)
    was_training = model.training
    model.eval()
    try:
        with counting_attention(), counter:
            model(torch.zeros(1, *input_size))
    finally:
        model.train(was_training)
    counts = counter.get_flop_counts()
    inside = [v for k, v in counts.items() if k.split(".", 1)[-1] in names]
    return {"total": counter.get_total_flops() // 2,
            "multihead_attention": sum(sum(v.values()) for v in inside) // 2,
            "attention_products": sum(n for v in inside for op, n in v.items() if "bmm" in str(op)) // 2}
