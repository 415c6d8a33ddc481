"""The target-rate loss of Adanet (Sec. 3.3, Eq. 8–9) and the training method that applies it."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from common.dynamic import decisions as gate_decisions
from common.dynamic import probabilities
from common.dynamic import rate_loss as target_rate_loss  # L_target of Eq. (8), shared with RDI-Net
from common.train import GroupSpec, Method, StepOutput


def imagenet_targets(t: float = 0.6) -> list[float]:
    """Per-layer targets of the 16 blocks of Adanet 50 from the authors' README (1 = left out)."""
    return [1, 1, 0.8, 1, t, t, t, 1, t, t, t, t, t, 1, 0.7, 1]


class AdanetMethod(Method):
    """L_Adanet = L_MC + λ L_target (Eq. 9); gates in their own optimizer group (Sec. 4.1).

    Each training step logs the batch's cross-entropy, target loss, and execution rate of every
    layer (`rate_00`, `rate_01`, …): the training log from which Fig. 6 is drawn. Evaluation
    returns every image's decisions and P(execute) beside its logits.
    """

    def __init__(self, lam: float = 2.0, target: float | Sequence[float] = 0.6, gate_lr: float = 2e-4,
                 gate_gamma: float = 0.4, leave_out_full: bool = False):
        self.lam, self.target, self.leave_out_full = lam, target, leave_out_full
        self.gate_lr, self.gate_gamma = gate_lr, gate_gamma

    def param_groups(self, model: nn.Module) -> list[GroupSpec]:
        """The gates: LR 2e-4, decayed ×0.4 at the network's milestones (Sec. 4.1)."""
        return [GroupSpec("gates", lambda name, param: ".gate." in name, self.gate_lr, gamma=self.gate_gamma)]

    def training_step(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      criterion: nn.Module) -> StepOutput:
        logits = model(images)
        taken = gate_decisions(model)
        ce = criterion(logits, labels)
        target = target_rate_loss(taken, self.target, self.leave_out_full)
        loss = ce + self.lam * target                                            # Eq. (9)
        values = torch.cat([torch.stack([ce.detach().float(), target.detach()]),
                            taken.detach().float().mean(0)]).cpu().tolist()    # one device sync
        logs = {"ce": values[0], "target_loss": values[1],
                **{f"rate_{index:02d}": rate for index, rate in enumerate(values[2:])}}
        return StepOutput(loss, logits, logs)

    def evaluation_step(self, model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = model(images)
        return logits, {"decisions": gate_decisions(model).float(), "probs": probabilities(model).float()}
