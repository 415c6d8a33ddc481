"""RDI-Net training (Sec. 3.4) as a `common.train.Method`: Uniform Sampling Warm-up, then Eq. (16)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from common.data import dataset_info
from common.dynamic import decisions, gated_blocks, probabilities, skipping
from common.train import Method, StepOutput

from .losses import COST_READINGS, colour_histogram, cost_loss, rank_loss, sample_distances


def uniform_path(x: torch.Tensor) -> torch.Tensor:
    """Eq. (14): execute (1) or skip (0) with probability ½ each, drawn per image."""
    return torch.randint(0, 2, (x.shape[0],), device=x.device)


def set_uniform_sampling(model: nn.Module, on: bool) -> None:
    """Replace (on) or restore (off) every router's decision by a uniform draw (USW)."""
    for block in gated_blocks(model):
        block.override = uniform_path if on else None


class RDIMethod(Method):
    """`warmup_epochs` of USW (L_cls on uniformly sampled paths, Eq. 14), then
    L = L_cls + L_cost + α·L_rank (Eq. 16) with target rate t (Eq. 15) and φ = `margin` (Eq. 12).

    The colour histograms of L_rank (Eq. 10) are taken on pixels, so the model input's
    normalisation is undone: give the `dataset` the inputs were normalised for (its mean/std come
    from `common.data.dataset_info`), or `mean` and `std` both. `cost`: the reading of Eq. (15),
    "batch" (batch-mean rate, default) or "image" (see `rdinet.losses.cost_loss`).
    """

    unused_parameters = True  # the warm-up's uniform draws leave the routers without gradients

    def __init__(self, target: float, alpha: float = 0.2, warmup_epochs: int = 0, margin: float = 0.5,
                 bins: int = 4, *, dataset: str | None = None, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, cost: str = "batch"):
        if not 0.0 <= target <= 1.0:
            raise ValueError(f"Target execution rate t must be in [0, 1]; got {target}.")
        if cost not in COST_READINGS:
            raise ValueError(f"Unknown cost reading {cost!r}; valid: {', '.join(COST_READINGS)}.")
        if dataset is not None and (mean is not None or std is not None):
            raise ValueError(f"Give dataset or mean/std, not both; got dataset={dataset!r}, mean={mean}, std={std}.")
        if dataset is not None:
            info = dataset_info(dataset)  # names the valid datasets if unknown
            mean, std = info.mean, info.std
        if mean is None or std is None or len(mean) != len(std) or not all(s > 0 for s in std):
            raise ValueError(f"The histograms need the input normalisation: give dataset=<name> or mean and std "
                             f"of one length with std > 0; got dataset=None, mean={mean}, std={std}.")
        self.target, self.alpha, self.warmup_epochs = target, alpha, warmup_epochs
        self.margin, self.bins, self.cost = margin, bins, cost
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self._warming_up = warmup_epochs > 0

    def on_epoch_start(self, model: nn.Module, epoch: int) -> None:
        self._warming_up = epoch < self.warmup_epochs
        set_uniform_sampling(model, self._warming_up)

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """Model input back to [0, 1] pixels."""
        mean = torch.tensor(self.mean, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, -1, 1, 1)
        return images.float() * std + mean

    def training_step(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      criterion: nn.Module) -> StepOutput:
        logits = model(images)
        ce = criterion(logits, labels)
        taken = decisions(model).float()
        logs = {"ce": ce.detach(), "exec_rate": taken.detach().mean()}  # tensors: no host sync per step
        if self._warming_up:
            return StepOutput(ce, logits, logs)
        cost = cost_loss(taken, self.target, self.cost)                            # Eq. (15)
        loss = ce + cost
        logs["cost"] = cost.detach()
        if self.alpha:
            hist = colour_histogram(self.pixels(images), self.bins)
            rank = rank_loss(taken, sample_distances(hist), self.margin)
            loss = loss + self.alpha * rank
            logs["rank"] = rank.detach()
        return StepOutput(loss, logits, logs)

    def evaluation_step(self, model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits with real skipping (as deployed) and the routers' own hard decisions (USW's uniform draws are
        switched off here)."""
        blocks = gated_blocks(model)
        overrides = [b.override for b in blocks]
        set_uniform_sampling(model, False)
        try:
            with skipping(model):
                logits = model(images)
        finally:
            for block, override in zip(blocks, overrides):
                block.override = override
        return logits, {"decisions": decisions(model).float(), "probs": probabilities(model).float()}
