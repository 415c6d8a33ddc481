"""The training objective of ADN (Sec. 3.3, Algorithm 1, Eq. 8) and Table 3's ablation."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F


def pooled(h: torch.Tensor) -> torch.Tensor:
    """A stage output as one vector per image: global average over space [B,C,H,W] or tokens [B,N,D]."""
    if h.ndim == 4:
        return h.mean(dim=(2, 3))
    if h.ndim == 3:
        return h.mean(dim=1)
    if h.ndim == 2:
        return h
    raise ValueError(f"Cannot pool a feature of shape {tuple(h.shape)}; expected [B,C,H,W], [B,N,D] or [B,C].")


def kl_distill(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0,
               topk: int | None = None) -> torch.Tensor:
    """D_KL(softmax(teacher/T) ‖ softmax(student/T)) · T², mean over the batch; the teacher is detached.

    With `topk`, both distributions are taken over each image's k largest teacher entries only.
    """
    teacher = teacher.detach()
    if topk is not None and topk < teacher.shape[1]:
        index = teacher.topk(topk, dim=1).indices
        student, teacher = student.gather(1, index), teacher.gather(1, index)
    return F.kl_div(F.log_softmax(student.float() / temperature, dim=1),
                    F.log_softmax(teacher.float() / temperature, dim=1),
                    reduction="batchmean", log_target=True) * temperature ** 2


def distillation(super_logits: torch.Tensor, base_logits: torch.Tensor, super_features: Sequence[torch.Tensor],
                 base_features: Sequence[torch.Tensor], temperature: float = 1.0, topk_classes: int | None = None,
                 feature_stages: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. (8)'s regularisation term as (Σ_s D_KL(h^s_super ‖ h^s_base), D_KL(ŷ_super ‖ ŷ_base)).

    The KL over a feature map h^s (the paper leaves its form open) is the authors' code's: the
    stage output is globally average-pooled to a [B, C] vector (already pooled ones pass as they
    are) and turned into a distribution by a softmax over channels at temperature T. The super-net
    is the teacher: detached in every term. `feature_stages` (1-based; None: all Ns, Eq. 8) picks
    the stages whose features are distilled; `topk_classes` (None: all, Eq. 8) restricts the logit
    term to the teacher's top-k classes of each image.
    """
    if len(super_features) != len(base_features):
        raise ValueError(f"{len(super_features)} super-net features vs {len(base_features)} base-net features.")
    stages = range(1, len(super_features) + 1)
    feature_stages = stages if feature_stages is None else feature_stages
    if set(feature_stages) - set(stages):
        raise ValueError(f"feature_stages {tuple(feature_stages)} must lie in 1..{len(stages)} (None: all stages).")
    if topk_classes is not None and topk_classes < 1:
        raise ValueError(f"topk_classes must be a positive number of classes or None (all); got {topk_classes}.")
    feature_kl = sum((kl_distill(pooled(base_features[s - 1]), pooled(super_features[s - 1]), temperature)
                      for s in feature_stages), torch.zeros((), device=base_logits.device))
    logit_kl = kl_distill(base_logits, super_logits, temperature, topk_classes)
    return feature_kl, logit_kl


def adn_loss(labels: torch.Tensor, super_logits: torch.Tensor, base_logits: torch.Tensor,
             super_features: Sequence[torch.Tensor], base_features: Sequence[torch.Tensor],
             alpha: float = 0.5, temperature: float = 1.0,
             criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
             topk_classes: int | None = None, feature_stages: Sequence[int] | None = None,
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. (8): α·CE(y, ŷ_super) + (1−α)·{Σ_s D_KL(h^s_super ‖ h^s_base) + D_KL(ŷ_super ‖ ŷ_base)}.

    The distillation term is `distillation`'s (teacher detached, so it reaches the shared weights
    only through the base-net); the base-net has no CE term. Returns the loss and its parts (CE,
    feature KL summed over stages, logit KL).
    """
    ce = criterion(super_logits, labels)
    feature_kl, logit_kl = distillation(super_logits, base_logits, super_features, base_features, temperature,
                                        topk_classes, feature_stages)
    loss = alpha * ce + (1 - alpha) * (feature_kl + logit_kl)  # Eq. (8)
    return loss, {"ce_super": ce.detach(), "kl_features": feature_kl.detach(), "kl_logits": logit_kl.detach()}


def joint_ce_loss(labels: torch.Tensor, super_logits: torch.Tensor, base_logits: torch.Tensor,
                  criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy) -> torch.Tensor:
    """Table 3 without sub-path specialisation: ½·{CE(y, ŷ_super) + CE(y, ŷ_base)} (Sec. 4.2)."""
    return 0.5 * (criterion(super_logits, labels) + criterion(base_logits, labels))
