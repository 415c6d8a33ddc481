"""The target-rate loss of Adanet (Sec. 3.3, Eq. 8–9) and the training method that applies it, as the
paper prints it (`variant="paper"`, default) or as the authors' code runs it (`variant="code"`)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from common.dynamic import decisions as gate_decisions
from common.dynamic import probabilities, skipping
from common.dynamic import rate_loss as target_rate_loss  # L_target of Eq. (8), shared with RDI-Net
from common.train import GroupSpec, Method, StepOutput


VARIANTS = ("paper", "code")


def imagenet_targets(t: float = 0.6) -> list[float]:
    """Per-layer targets of the 16 blocks of Adanet 50 from the authors' README (1 = left out)."""
    return [1, 1, 0.8, 1, t, t, t, 1, t, t, t, t, t, 1, 0.7, 1]


def is_gate(name: str, param: nn.Parameter) -> bool:
    """Whether a parameter belongs to a gate (W_1, its BatchNorm, W_2 of Eq. 5)."""
    return ".gate." in name


class AdanetMethod(Method):
    """L_Adanet = L_MC + λ L_target (Eq. 9), as the paper prints it or as the authors' code runs it.

    `variant="paper"` (default): L_target = Σ_l (z̄_l − t_l)² (Eq. 8) and the gates in their own
    optimizer group at `gate_lr` = 2e-4, ×`gate_gamma` = 0.4 at the network's milestones (Sec. 4.1, 4.2).
    `variant="code"`: the authors' code — L_target divided by the number L of gated layers (layers
    left out with `leave_out_full` still count in L) and the gates trained at the network's LR and
    schedule (their `--lrfact 1`), so they stay in the default group. See README, "Paper or code".

    Each training step logs the batch's cross-entropy, target loss, and execution rate of every
    layer (`rate_00`, `rate_01`, …): the training log from which Fig. 6 is drawn. Evaluation
    returns every image's decisions and P(execute) beside its logits.
    """

    def __init__(self, lam: float = 2.0, target: float | Sequence[float] = 0.6, gate_lr: float | None = None,
                 gate_gamma: float | None = None, leave_out_full: bool = False, variant: str = "paper"):
        if variant not in VARIANTS:
            raise ValueError(f"Unknown Adanet variant {variant!r}; valid: {', '.join(VARIANTS)}.")
        if variant == "code" and (gate_lr is not None or gate_gamma is not None):
            raise ValueError(f"variant='code' trains the gates at the network's LR and schedule; got "
                             f"gate_lr={gate_lr}, gate_gamma={gate_gamma}: leave both None or use variant='paper'.")
        self.lam, self.target, self.leave_out_full, self.variant = lam, target, leave_out_full, variant
        self.gate_lr = 2e-4 if variant == "paper" and gate_lr is None else gate_lr        # Sec. 4.1
        self.gate_gamma = 0.4 if variant == "paper" and gate_gamma is None else gate_gamma

    def param_groups(self, model: nn.Module) -> list[GroupSpec]:
        """"paper": the gates at 2e-4, ×0.4 at the milestones (Sec. 4.1); "code": none (network's LR)."""
        if self.variant == "code":
            return []
        return [GroupSpec("gates", is_gate, self.gate_lr, gamma=self.gate_gamma)]

    def rate_term(self, taken: torch.Tensor) -> torch.Tensor:
        """L_target of [B, L] decisions: Eq. (8) ("paper") or Eq. (8) / L ("code")."""
        loss = target_rate_loss(taken, self.target, self.leave_out_full)
        return loss / taken.shape[1] if self.variant == "code" else loss

    def training_step(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      criterion: nn.Module) -> StepOutput:
        logits = model(images)
        taken = gate_decisions(model)
        ce = criterion(logits, labels)
        target = self.rate_term(taken)
        loss = ce + self.lam * target                                            # Eq. (9)
        values = torch.cat([torch.stack([ce.detach().float(), target.detach()]),
                            taken.detach().float().mean(0)]).cpu().tolist()    # one device sync
        logs = {"ce": values[0], "target_loss": values[1],
                **{f"rate_{index:02d}": rate for index, rate in enumerate(values[2:])}}
        return StepOutput(loss, logits, logs)

    def evaluation_step(self, model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits with real skipping (as deployed), the gates' decisions and P(execute)."""
        with skipping(model):
            logits = model(images)
        return logits, {"decisions": gate_decisions(model).float(), "probs": probabilities(model).float()}
