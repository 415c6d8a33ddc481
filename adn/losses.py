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


def kl_distill(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """D_KL(softmax(teacher/T) ‖ softmax(student/T)) · T², mean over the batch; the teacher is detached."""
    return F.kl_div(F.log_softmax(student.float() / temperature, dim=1),
                    F.log_softmax(teacher.detach().float() / temperature, dim=1),
                    reduction="batchmean", log_target=True) * temperature ** 2


def adn_loss(labels: torch.Tensor, super_logits: torch.Tensor, base_logits: torch.Tensor,
             super_features: Sequence[torch.Tensor], base_features: Sequence[torch.Tensor],
             alpha: float = 0.5, temperature: float = 1.0,
             criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. (8): α·CE(y, ŷ_super) + (1−α)·{Σ_s D_KL(h^s_super ‖ h^s_base) + D_KL(ŷ_super ‖ ŷ_base)}.

    The KL over a feature map h^s (the paper leaves its form open) follows the authors' code: the
    stage output is globally average-pooled to a [B, C] vector and turned into a distribution by a
    softmax over channels at temperature T. The super-net is the teacher: detached in every KL term,
    so the distillation reaches the shared weights only through the base-net. The base-net has no
    CE term. Returns the loss and its parts (CE, feature KL summed over stages, logit KL).
    """
    if len(super_features) != len(base_features):
        raise ValueError(f"{len(super_features)} super-net features vs {len(base_features)} base-net features.")
    ce = criterion(super_logits, labels)
    feature_kl = sum((kl_distill(pooled(b), pooled(s), temperature)
                      for s, b in zip(super_features, base_features)), torch.zeros((), device=ce.device))
    logit_kl = kl_distill(base_logits, super_logits, temperature)
    loss = alpha * ce + (1 - alpha) * (feature_kl + logit_kl)  # Eq. (8)
    return loss, {"ce_super": ce.detach(), "kl_features": feature_kl.detach(), "kl_logits": logit_kl.detach()}


def joint_ce_loss(labels: torch.Tensor, super_logits: torch.Tensor, base_logits: torch.Tensor,
                  criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy) -> torch.Tensor:
    """Table 3 without sub-path specialisation: ½·{CE(y, ŷ_super) + CE(y, ŷ_base)} (Sec. 4.2)."""
    return 0.5 * (criterion(super_logits, labels) + criterion(base_logits, labels))
