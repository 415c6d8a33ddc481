"""Training ADN through `common.train.fit`: Algorithm 1 as a `Method`."""
from __future__ import annotations

import torch
from torch import nn

from common.train import Method, StepOutput

from .losses import adn_loss, joint_ce_loss


class ADNMethod(Method):
    """Algorithm 1: per mini-batch a super-net and a base-net forward, then the loss of Eq. (8).

    `specialize=False` is Table 3's ablation without sub-path specialisation (½·[CE(super) +
    CE(base)]). Algorithm 1 (and the authors' code) call backward on the CE term and on the
    distillation term separately before one optimizer step; `fit` calls backward once on their
    sum, which gives the same gradients (backward is linear in the loss). Evaluation returns the
    super-net's logits and, as extras `logits_<config>`, those of each configuration in
    `eval_configs` ("base" by default; Fig. 3a passes all 2^Ns).
    """

    def __init__(self, alpha: float = 0.5, temperature: float = 1.0, specialize: bool = True,
                 eval_configs: tuple[str, ...] = ("base",)):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1]; got {alpha}.")
        self.alpha, self.temperature, self.specialize = alpha, temperature, specialize
        self.eval_configs = tuple(eval_configs)

    def hparams(self) -> dict:
        """What determines the weights: `eval_configs` only chooses what evaluation reports."""
        return {k: v for k, v in super().hparams().items() if k != "eval_configs"}

    def training_step(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      criterion: nn.Module) -> StepOutput:
        super_logits, super_features = model(images, skip="super", return_features=True)  # Alg. 1, line 5
        base_logits, base_features = model(images, skip="base", return_features=True)     # Alg. 1, line 6
        if self.specialize:
            loss, parts = adn_loss(labels, super_logits, base_logits, super_features, base_features,
                                   self.alpha, self.temperature, criterion)               # Alg. 1, line 7
            with torch.no_grad():
                parts["ce_base"] = criterion(base_logits, labels)
        else:
            loss = joint_ce_loss(labels, super_logits, base_logits, criterion)
            with torch.no_grad():
                parts = {"ce_super": criterion(super_logits, labels), "ce_base": criterion(base_logits, labels)}
        return StepOutput(loss, super_logits, {k: float(v) for k, v in parts.items()})

    def evaluation_step(self, model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        extras = {f"logits_{config}": model(images, skip=config).float() for config in self.eval_configs}
        return model(images, skip="super"), extras
