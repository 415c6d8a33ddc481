"""Training ADN through `common.train.fit`: Algorithm 1 as a `Method`."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from common.train import Method, StepOutput

from .losses import distillation, pooled


class ADNMethod(Method):
    """Algorithm 1: per mini-batch a super-net and a base-net forward, trained with the loss of Eq. (8).

    Algorithm 1 calls backward once, on the sum, after both forwards; like the authors' code, we
    backpropagate the super-net's part α·CE before the base-net runs, then the distillation part:
    the same gradients (backward is linear in the loss), but the two graphs are never alive together.
    `topk_classes` and `feature_stages` (1-based; None: all, as Eq. 8) narrow the distillation: the
    authors' README command distils the logits over the teacher's top 500 classes and no features
    (`topk_classes=500, feature_stages=()`; their `--fpn` flag adds stages 1–3: `(1, 2, 3)`).
    `specialize=False` is Table 3's ablation, ½·[CE(super) + CE(base)], also one backward per
    sub-network. Evaluation returns the super-net's logits and, as extras `logits_<config>`, those of
    each configuration in `eval_configs` ("base" by default; Fig. 3a passes all 2^Ns).
    """

    # Each of the two backward passes leaves some weights without gradient (the super-net's own, then
    # the base-net's twins): DDP has to look for them.
    unused_parameters = True

    def __init__(self, alpha: float = 0.5, temperature: float = 1.0, specialize: bool = True,
                 topk_classes: int | None = None, feature_stages: Sequence[int] | None = None,
                 eval_configs: tuple[str, ...] = ("base",)):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1]; got {alpha}.")
        if topk_classes is not None and topk_classes < 1:
            raise ValueError(f"topk_classes must be a positive number of classes or None (all); got {topk_classes}.")
        if feature_stages is not None and any(s < 1 for s in feature_stages):
            raise ValueError(f"feature_stages {tuple(feature_stages)} must be 1-based stage numbers or None (all).")
        self.alpha, self.temperature, self.specialize = alpha, temperature, specialize
        self.topk_classes = topk_classes
        self.feature_stages = None if feature_stages is None else tuple(feature_stages)
        self.eval_configs = tuple(eval_configs)

    def hparams(self) -> dict:
        """What determines the weights: `eval_configs` only chooses what evaluation reports."""
        return {k: v for k, v in super().hparams().items() if k != "eval_configs"}

    def training_step(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      criterion: nn.Module) -> StepOutput:
        if not self.specialize:
            return self._joint_ce_step(model, images, labels, criterion)
        super_logits, super_features = model(images, skip="super", return_features=True)  # Alg. 1, line 5
        ce = criterion(super_logits, labels)
        self.backward(self.alpha * ce)                                    # Eq. (8), α·CE(y, ŷ_super)
        teacher_logits = super_logits.detach()
        teacher_features = [pooled(h).detach() for h in super_features]  # all the teacher keeps alive
        del super_features
        base_logits, base_features = model(images, skip="base", return_features=True)     # Alg. 1, line 6
        feature_kl, logit_kl = distillation(teacher_logits, base_logits, teacher_features, base_features,
                                            self.temperature, self.topk_classes, self.feature_stages)
        self.backward((1 - self.alpha) * (feature_kl + logit_kl))         # Eq. (8), (1−α)·{Σ_s KL + KL}
        loss = self.alpha * ce.detach() + (1 - self.alpha) * (feature_kl + logit_kl).detach()
        with torch.no_grad():
            ce_base = criterion(base_logits, labels)
        logs = {"ce_super": ce, "ce_base": ce_base, "kl_features": feature_kl, "kl_logits": logit_kl}
        return StepOutput(loss, teacher_logits, {k: v.detach() for k, v in logs.items()}, backward_done=True)

    def _joint_ce_step(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                       criterion: nn.Module) -> StepOutput:
        """Table 3 without specialisation: ½·CE(y, ŷ_super) + ½·CE(y, ŷ_base) (Sec. 4.2), one backward each."""
        super_logits = model(images, skip="super")
        ce_super = criterion(super_logits, labels)
        self.backward(0.5 * ce_super)
        base_logits = model(images, skip="base")
        ce_base = criterion(base_logits, labels)
        self.backward(0.5 * ce_base)
        loss = 0.5 * (ce_super.detach() + ce_base.detach())
        logs = {"ce_super": ce_super.detach(), "ce_base": ce_base.detach()}
        return StepOutput(loss, super_logits.detach(), logs, backward_done=True)

    def evaluation_step(self, model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        extras = {f"logits_{config}": model(images, skip=config).float() for config in self.eval_configs}
        return model(images, skip="super"), extras
