"""RDI-Net losses: the Sample Relation Module's rank loss (Sec. 3.3) and the cost loss (Sec. 3.4).

All vectorised over the batch; the only Python loop runs over the C colour channels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from common.dynamic import rate_loss

COST_READINGS = ("batch", "image")


def cost_loss(paths: torch.Tensor, target: float, reading: str = "batch") -> torch.Tensor:
    """L_cost of Eq. (15) for relaxed decisions `paths` [B, N], in one of two readings.

    Eq. (15) prints Σ_n (v_n − t)² with v_n the relaxed decision of block n, without saying over
    which images. "batch" (default): v_n is the batch mean v̄_n, Σ_n (v̄_n − t)² — an execution rate,
    as the text calls the term, and Adanet's Eq. (8) (`common.dynamic.rate_loss`). "image": every
    image's own v_n, (1/B) Σ_b Σ_n (v_bn − t)², which also pulls each soft decision towards t.
    """
    if reading not in COST_READINGS:
        raise ValueError(f"Unknown cost reading {reading!r}; valid: {', '.join(COST_READINGS)}.")
    if reading == "batch":
        return rate_loss(paths, target)
    return ((paths.float() - target) ** 2).sum(dim=1).mean()


def colour_histogram(images: torch.Tensor, bins: int = 4) -> torch.Tensor:
    """H(X) of Eq. (10): the joint colour histogram of each image, normalised to sum 1.

    `images` [B, C, H, W] with values in [0, 1] (un-normalised pixels). Each channel is cut into
    `bins` equal intervals, so an RGB image has bins³ colour cells (4 → 64 cells); a one-channel
    image gets an intensity histogram of `bins` cells. Returns [B, bins^C].
    """
    if bins < 1:
        raise ValueError(f"Need at least one bin per channel; got {bins}.")
    batch, channels = images.shape[:2]
    levels = (images.detach().float().clamp(0, 1) * bins).long().clamp(max=bins - 1)  # [B, C, H, W]
    cell = torch.zeros_like(levels[:, 0])
    for c in range(channels):
        cell = cell * bins + levels[:, c]
    cell = cell.flatten(1)                                                             # [B, H·W]
    hist = torch.zeros(batch, bins ** channels, device=images.device)
    hist.scatter_add_(1, cell, torch.ones_like(cell, dtype=hist.dtype))
    return hist / cell.shape[1]


def sample_distances(features: torch.Tensor) -> torch.Tensor:
    """D of Eq. (10): D_ij = ‖H(X_i) − H(X_j)‖₂ for features [B, K] → [B, B]."""
    return torch.cdist(features.float(), features.float(), compute_mode="donot_use_mm_for_euclid_dist")


def rank_loss(paths: torch.Tensor, distances: torch.Tensor, margin: float = 0.5, tie_tol: float = 1e-3,
              reduction: str = "mean") -> torch.Tensor:
    """L_rank of Eq. (12) with the triplets of Eq. (11).

    For anchor i, M_i = argsort(D_i) (Eq. 11) lists the other samples from closest to farthest
    (the anchor itself, at distance 0, is M_i1 and is dropped); every two adjacent entries form a
    triplet (i, positive M_ij, negative M_i,j+1), j = 2 … L−1, and contribute
    [‖P_i − P_Mij‖₂ − ‖P_i − P_Mi,j+1‖₂ + φ]₊. Triplets whose two sample distances are about the
    same (D_i,neg − D_i,pos ≤ tie_tol · D_i,neg) are ignored (Sec. 4.1). `reduction`: "sum" is
    Eq. (12) as printed; "mean" (default) divides by the number of triplets kept, so that α
    weighs it against the batch-mean cross-entropy.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"Unknown reduction {reduction!r}; valid: mean, sum.")
    batch = paths.shape[0]
    if batch < 3:
        return paths.sum() * 0
    ranked = distances.detach().float().clone()
    ranked.fill_diagonal_(-1.0)                                  # the anchor sorts first, always
    order = ranked.argsort(dim=1, stable=True)[:, 1:]            # Eq. (11), anchor dropped [B, B−1]
    positive, negative = order[:, :-1], order[:, 1:]             # adjacent pairs [B, B−2]
    d_pos, d_neg = distances.gather(1, positive), distances.gather(1, negative)
    keep = (d_neg - d_pos) > tie_tol * d_neg
    path_distances = _pairwise_l2(paths.float())
    hinge = F.relu(path_distances.gather(1, positive) - path_distances.gather(1, negative) + margin)
    total = (hinge * keep).sum()
    if reduction == "sum":
        return total
    return total / keep.sum().clamp(min=1)


def _pairwise_l2(x: torch.Tensor) -> torch.Tensor:
    """‖x_i − x_j‖₂ [B, B] with a finite gradient where two rows coincide (gradient 0 there)."""
    squared = (x[:, None, :] - x[None, :, :]).pow(2).sum(-1)
    positive = squared > 0
    return torch.where(positive, squared.clamp(min=1e-12).sqrt(), torch.zeros_like(squared))
