"""Gated residual blocks with real skipping — the machinery Adanet and RDI-Net share.

A `GatedBlock` wraps a torchvision residual block and a gate (any module mapping the block's input
to `(decision, prob)`: decision [B] in {0, 1}, possibly with a straight-through gradient, and
prob [B] = P(execute)). Its output is

    x_out = post(shortcut(x) + z · residual(x))            (Adanet Eq. 3, RDI-Net Eq. 9)

in one of three modes:
- "masked": compute every residual, multiply by z (training; gradients reach the gate); with
            `mix="output"` a soft z blends whole outputs instead, z·post(s + F) + (1 − z)·post(s)
            (RDI-Net Eq. 9); both are the same for z ∈ {0, 1};
- "skip":   compute the residual only on the images whose z = 1 and scatter them back; at batch
            size 1 a closed gate costs no residual MACs at all (inference);
- "scaled": compute every residual, scale by the block's expected execution rate (Adanet "*").

The decisions of the last forward are kept on each block (`last_decision`, `last_prob`) and read
in network order by `decisions(model)` / `probabilities(model)`: the one way losses and metrics of
the gated papers see them.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Callable

import torch
from torch import nn

from .backbones import block_parts
from .metrics import ExpectedMacs, count_macs, expected_macs

MODES = ("masked", "skip", "scaled")
MIXES = ("residual", "output")


class GatedBlock(nn.Module):
    """A residual block whose branch is executed or skipped per image by `gate`."""

    def __init__(self, block: nn.Module, gate: nn.Module, mix: str = "residual"):
        super().__init__()
        block_parts(block)  # fails early, naming the block type, if it cannot be gated
        if mix not in MIXES:
            raise ValueError(f"Unknown mix {mix!r}; valid: {', '.join(MIXES)}.")
        self.block, self.gate, self.mix = block, gate, mix
        self.mode = "masked"
        self.register_buffer("rate", torch.ones(()))  # expected execution rate, for "scaled"
        self.override: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.last_decision: torch.Tensor | None = None
        self.last_prob: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = block_parts(self.block)
        if self.mode == "scaled":
            return parts.post(parts.shortcut(x) + self.rate * parts.residual(x))
        decision, prob = self.gate(x)
        if self.override is not None:
            decision = self.override(x).to(x.dtype)
        # Plain attributes, set past nn.Module.__setattr__'s parameter/buffer bookkeeping (µs at batch 1).
        object.__setattr__(self, "last_decision", decision)
        object.__setattr__(self, "last_prob", prob)
        if self.mode == "masked":
            shortcut = parts.shortcut(x)
            v = decision.view(-1, 1, 1, 1).to(x.dtype)
            if self.mix == "output":  # RDI-Net Eq. (9): v·F(x) + (1 − v)·x = x + v·(F(x) − x), soft v in training
                executed = parts.post(shortcut + parts.residual(x))
                skipped = _post_copy(parts, shortcut).to(executed.dtype)
                v = v.to(executed.dtype)
                if torch.compiler.is_compiling():  # Inductor fuses Eq. (9) as written into one pass; its lerp
                    return v * executed + (1 - v) * skipped  # kernels made an RDI-Net-20 step 1.9× slower
                return torch.lerp(skipped, executed, v)  # eager: one fused pass
            return parts.post(torch.addcmul(shortcut, v, parts.residual(x)))  # Adanet Eq. (3), one fused pass
        if self.mode != "skip":
            raise ValueError(f"Unknown gating mode {self.mode!r}; valid: {', '.join(MODES)}.")
        return self._skip(x, parts, decision)

    def _skip(self, x: torch.Tensor, parts, decision: torch.Tensor) -> torch.Tensor:
        """Eq. (3) computing the branch only on the images whose z = 1: one host read per block."""
        if x.shape[0] == 1:  # batch 1: run the whole block or only its shortcut
            if decision.item() > 0.5:
                return _executed(parts, x)
            return _post_copy(parts, parts.shortcut(x))
        executed = (decision > 0.5).nonzero().squeeze(1)
        count = executed.numel()
        if count == x.shape[0]:
            return _executed(parts, x)
        shortcut = parts.shortcut(x)
        out = _post_copy(parts, shortcut)  # the skipped rows: post(shortcut); never written into x
        if count == 0:
            return out
        selected = x.index_select(0, executed)
        branch = parts.residual(selected)
        branch += selected if parts.shortcut_module is None else shortcut.index_select(0, executed)
        # The executed rows: post(shortcut + F), written over the skipped value (index_put_: 1.2× faster
        # than index_copy_ on CIFAR block shapes here).
        out[executed] = parts.post(branch).to(out.dtype)
        return out


def _executed(parts, x: torch.Tensor) -> torch.Tensor:
    """post(shortcut(x) + F(x)), adding into F's fresh output as torchvision's blocks do."""
    out = parts.residual(x)
    out += parts.shortcut(x)
    return parts.post(out)


def _post_copy(parts, shortcut: torch.Tensor) -> torch.Tensor:
    """post(shortcut) without writing into `shortcut` (torchvision's ReLU is in place; it may be x)."""
    if isinstance(parts.post, nn.ReLU):
        return torch.relu(shortcut)
    return parts.post(shortcut.clone())


def gated_blocks(model: nn.Module) -> list[GatedBlock]:
    """The model's gated blocks in network order."""
    return [m for m in model.modules() if isinstance(m, GatedBlock)]


def set_mode(model: nn.Module, mode: str) -> None:
    """Put every gated block in "masked", "skip" or "scaled" mode."""
    if mode not in MODES:
        raise ValueError(f"Unknown gating mode {mode!r}; valid: {', '.join(MODES)}.")
    for block in gated_blocks(model):
        block.mode = mode


@contextmanager
def skipping(model: nn.Module) -> Iterator[None]:
    """Within the `with` body, gated blocks in "masked" (training) mode run in "skip" mode (real skipping).

    Evaluating this way computes what deployment (and `python -m reproduce eval`) computes: in bf16 a
    block run on a subset of the batch can round a borderline image differently from the masked batch.
    """
    blocks = [block for block in gated_blocks(model) if block.mode == "masked"]
    for block in blocks:
        block.mode = "skip"
    try:
        yield
    finally:
        for block in blocks:
            block.mode = "masked"


def decisions(model: nn.Module) -> torch.Tensor:
    """[B, L] execute (1) / skip (0) decisions of the last forward, in network order."""
    return torch.stack([b.last_decision for b in gated_blocks(model)], dim=1)


def probabilities(model: nn.Module) -> torch.Tensor:
    """[B, L] P(execute) of the last forward, in network order."""
    return torch.stack([b.last_prob for b in gated_blocks(model)], dim=1)


# A diagnostic (ours, no paper's): a gate whose P(execute) lies in this open interval is "undecided". There
# the decision sampled in training and the argmax taken at test time often disagree.
UNDECIDED = (0.2, 0.8)


def undecided(probs: torch.Tensor) -> torch.Tensor:
    """1.0 where P(execute) in `probs` lies inside UNDECIDED, else 0.0 (same shape)."""
    return ((probs > UNDECIDED[0]) & (probs < UNDECIDED[1])).float()


def set_rates(model: nn.Module, rates: torch.Tensor) -> None:
    """Store each block's expected execution rate (used by the "scaled" mode)."""
    blocks = gated_blocks(model)
    if len(rates) != len(blocks):
        raise ValueError(f"Got {len(rates)} rates for {len(blocks)} gated blocks.")
    for block, rate in zip(blocks, rates):
        block.rate.fill_(float(rate))


def rate_loss(decisions: torch.Tensor, target: float | Sequence[float] = 0.6,
              leave_out_full: bool = False) -> torch.Tensor:
    """Σ_l (z̄_l − t_l)², z̄_l the batch mean of layer l's decision: Adanet Eq. (8), RDI-Net Eq. (15).

    `decisions` is [B, L]; `target` one rate for every layer or one per layer. With
    `leave_out_full`, layers whose target is 1 are left out (the Adanet authors' ImageNet set-up).
    """
    rates = decisions.float().mean(dim=0)
    targets = torch.as_tensor(target, dtype=rates.dtype, device=rates.device)
    if targets.numel() not in (1, rates.numel()):
        raise ValueError(f"Got {targets.numel()} targets for {rates.numel()} gated layers.")
    terms = (rates - targets.reshape(-1).expand_as(rates)) ** 2
    if leave_out_full:
        terms = terms * (targets.reshape(-1).expand_as(rates) < 1).to(terms.dtype)
    return terms.sum()


@torch.no_grad()
def macs_profile(model: nn.Module, input_size: tuple[int, int, int]) -> tuple[int, int, torch.Tensor]:
    """(always-executed MACs, gate MACs, [L] residual-branch MACs) per image, counted at batch size 1."""
    blocks = gated_blocks(model)
    inputs: dict[int, torch.Tensor] = {}
    hooks = [b.register_forward_pre_hook(lambda m, args, i=i: inputs.__setitem__(i, args[0]))
             for i, b in enumerate(blocks)]
    modes = [b.mode for b in blocks]
    was_training = model.training
    model.eval()
    set_mode(model, "masked")
    device = next(model.parameters()).device
    try:
        total = count_macs(model, torch.zeros(1, *input_size, device=device))
        branch = torch.tensor([count_macs(block_parts(b.block).residual, inputs[i]) for i, b in enumerate(blocks)])
        overhead = sum(count_macs(b.gate, inputs[i]) for i, b in enumerate(blocks))
    finally:
        for hook in hooks:
            hook.remove()
        for block, mode in zip(blocks, modes):
            block.mode = mode
        model.train(was_training)
    return total - overhead - int(branch.sum()), overhead, branch


def expected_macs_of(model: nn.Module, input_size: tuple[int, int, int], decisions_: torch.Tensor) -> ExpectedMacs:
    """Expected MACs of a gated model given its [N, L] decisions over a dataset."""
    always, overhead, branch = macs_profile(model, input_size)
    return expected_macs(always, overhead, branch, decisions_)
