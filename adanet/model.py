"""Adanet (ConvNet-AIG): residual networks whose gates decide per image which layers run.

Veit & Belongie, *Convolutional Networks with Adaptive Computation Graphs*, arXiv:1711.11503 (2017);
published at ECCV 2018 as *Convolutional Networks with Adaptive Inference Graphs*.

Every residual block of a backbone becomes a `common.dynamic.GatedBlock` whose gate is a `Gate`:

    x_l = x_{l-1} + z(x_{l-1}) · F_l(x_{l-1}),  z ∈ {0, 1}                         Eq. (3)
    z_c = mean over H×W of x_{l-1}                                                 Eq. (4)
    β = W_2 σ(W_1 z),  W_1: C → C/d,  W_2: C/d → 2 (log-probabilities execute, skip) Eq. (5)
    training: forward z = argmax(β + G) (Gumbel-Max, Eq. 6), backward through
              softmax((β + G)/τ) (Eq. 7) — the straight-through Gumbel estimator
    evaluation: z = argmax β (deterministic, default) or the Gumbel sample (`stochastic`)

Gated blocks run in one of `common.dynamic.MODES`: "masked" (training: every branch computed and
multiplied by z), "skip" (inference: a branch runs only on the images whose gate is open — at batch
size 1 a closed gate computes nothing) and "scaled" (the paper's "*" variant: every branch runs,
scaled by its expected execution rate, no gates). The decisions of the last forward are read with
`common.dynamic.decisions(model)` ([B, L], network order).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from common.backbones import block_parts, create_backbone, input_size, residual_stages, spatial_mean
from common.dynamic import GatedBlock, gated_blocks, set_mode, set_rates
from common.hub import HubBackbone, HubModel

# name → (backbone of common.backbones, reduction d of the gate's hidden layer)
ADANETS: dict[str, tuple[str, int]] = {
    "adanet20": ("resnet20_cifar", 2),          # the `mini` preset's depth (not in the paper)
    "adanet110": ("resnet110_cifar", 2),        # Sec. 4.1: d = 2
    "wide_adanet89": ("bottleneck89_cifar", 16),  # Sec. 4.1: 3/4/20/2 bottlenecks at 64…512, d = 16
    "adanet50": ("resnet50", 16),               # Sec. 4.2: d = 16
}
# Table 1's Stochastic Depth row (Huang et al. 2016): name → backbone. Depth 20 is the `mini` preset's.
STOCHASTIC_DEPTHS: dict[str, str] = {"stochastic_depth20": "resnet20_cifar", "stochastic_depth110": "resnet110_cifar"}
# The plain baselines of Tables 1 and 2 (static networks, `common.hub.HubBackbone`).
BASELINES: dict[str, str] = {
    "resnet20": "resnet20_cifar",
    "resnet110": "resnet110_cifar",
    "resnet18": "resnet18",
    "resnet34": "resnet34",
    "resnet50": "resnet50",
}


def gumbel_like(logits: torch.Tensor) -> torch.Tensor:
    """I.i.d. Gumbel(0, 1) noise G = −log(−log U), U ~ Unif(0, 1) (Sec. 3.2)."""
    uniform = torch.rand_like(logits).clamp_(1e-10, 1.0 - 1e-7)
    return -torch.log(-torch.log(uniform))


class Gate(nn.Module):
    """The gating unit of Fig. 2: estimate P(execute) from channel means, then draw z ∈ {0, 1}.

    `batch_norm` adds a BatchNorm after the first layer, as the authors' code does (Eq. 5 has
    none). Both layers keep their biases either way (Eq. 5 has none): `batch_norm=False` is Eq. 5
    plus C/d + 2 biases. The last layer's bias is set to the log-probabilities (log p, log(1 − p))
    with p = `init_rate` and its weights to N(0, 0.001²), so the gates open at ≈ p at the start
    (Sec. 4.1: 85 %; without that bias they would open at 50 %).
    """

    def __init__(self, channels: int, reduction: int, batch_norm: bool = True, init_rate: float = 0.85,
                 tau: float = 1.0):
        super().__init__()
        if reduction < 1 or not 0.0 < init_rate < 1.0 or tau <= 0:
            raise ValueError(f"Need reduction ≥ 1, 0 < init_rate < 1, tau > 0; got {reduction}, {init_rate}, {tau}.")
        hidden = max(channels // reduction, 1)
        self.fc1 = nn.Linear(channels, hidden)                 # W_1 of Eq. (5)
        self.bn = nn.BatchNorm1d(hidden) if batch_norm else nn.Identity()
        self.fc2 = nn.Linear(hidden, 2)                        # W_2 of Eq. (5): (execute, skip)
        nn.init.normal_(self.fc2.weight, std=1e-3)
        with torch.no_grad():
            self.fc2.bias.copy_(torch.tensor([math.log(init_rate), math.log(1.0 - init_rate)]))
        self.tau = tau
        self.stochastic = False  # evaluation: sample like training (True) or argmax (False)
        self._fused: tuple[torch.Tensor, ...] | None = None  # eval-time folded layers, see `_folded`

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """β [B, 2]: log-probabilities (up to a constant) of executing and skipping, Eq. (4)–(5)."""
        z = spatial_mean(x)                                     # Eq. (4)
        if self.training or not isinstance(self.bn, nn.BatchNorm1d):
            return self.fc2(F.relu(self.bn(self.fc1(z))))      # Eq. (5)
        weight_t, bias, _, _ = self._folded(z.dtype)
        return self.fc2(torch.relu(torch.addmm(bias, z, weight_t)))  # Eq. (5), BatchNorm folded into W_1

    def margin(self, x: torch.Tensor) -> torch.Tensor:
        """β_execute − β_skip [B] at evaluation, from one folded row: (W_2[0] − W_2[1]) σ(W_1 z) + b."""
        weight_t, bias, row, offset = self._folded(x.dtype)
        hidden = torch.relu(torch.addmm(bias, spatial_mean(x), weight_t))  # Eqs. (4), (5)
        return torch.addmv(offset, hidden, row)

    def _folded(self, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
        """Eval-time W_1ᵀ, b_1 with BatchNorm folded in, and W_2's execute − skip row and bias, in `dtype`;
        dropped by train()/eval()/loading/moving. Four small ops per gate at batch 1 (no per-call casts)."""
        if self._fused is None or self._fused[0].dtype != dtype:
            weight, bias = self.fc1.weight, self.fc1.bias
            if isinstance(self.bn, nn.BatchNorm1d):
                scale = self.bn.weight / torch.sqrt(self.bn.running_var + self.bn.eps)
                weight, bias = weight * scale[:, None], (bias - self.bn.running_mean) * scale + self.bn.bias
            row, offset = self.fc2.weight[0] - self.fc2.weight[1], self.fc2.bias[0] - self.fc2.bias[1]
            self._fused = tuple(t.detach().to(dtype) for t in (weight.t().contiguous(), bias, row, offset))
        return self._fused

    def train(self, mode: bool = True) -> "Gate":
        self._fused = None
        return super().train(mode)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._fused = None
        super()._load_from_state_dict(*args, **kwargs)

    def _apply(self, fn, recurse: bool = True):
        self._fused = None  # .to(device) / .half(): fold again from the moved tensors
        return super()._apply(fn, recurse)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(decision [B] in {0, 1}, P(execute) [B]); the decision carries the straight-through gradient."""
        if not (self.training or self.stochastic):  # argmax β: β_execute − β_skip > 0
            margin = self.margin(x).float()
            return margin.gt(0).float(), torch.sigmoid(margin)
        beta = self.logits(x).float()
        prob = torch.sigmoid(beta[:, 0] - beta[:, 1])           # softmax(β)[execute]
        noisy = beta + gumbel_like(beta)                          # log α + G, Eq. (6)
        hard = (noisy[:, 0] > noisy[:, 1]).to(beta.dtype)       # argmax, Eq. (6)
        soft = (noisy / self.tau).softmax(dim=1)[:, 0]          # relaxation, Eq. (7)
        # Straight-through: forward value exactly `hard` (soft − soft.detach() is exactly 0),
        # gradient of the softmax relaxation.
        return hard + (soft - soft.detach()), prob


def block_in_channels(block: nn.Module) -> int:
    """Channels of a torchvision BasicBlock / Bottleneck's input (what its gate pools)."""
    return block.conv1.in_channels


class Adanet(nn.Module, HubModel, library_name="dynnets", tags=["dynnets", "adanet"], license="mit"):
    """A backbone of `common.backbones` with a `Gate` on every residual block (Sec. 3)."""

    def __init__(self, backbone: str = "resnet110_cifar", num_classes: int | None = None, reduction: int = 2,
                 gate_batch_norm: bool = True, init_rate: float = 0.85, tau: float = 1.0):
        super().__init__()
        self.backbone = backbone
        self.net = create_backbone(backbone, num_classes)
        for stage in residual_stages(self.net):
            for position, block in enumerate(stage.blocks()):
                gate = Gate(block_in_channels(block), reduction, gate_batch_norm, init_rate, tau)
                stage.replace(position, GatedBlock(block, gate))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if getattr(self, "_is_replica", False):  # nn.DataParallel: the decisions would stay on the replicas
            raise RuntimeError("Adanet cannot run under nn.DataParallel (each replica keeps its own gate "
                               "decisions, lost after the forward): use DistributedDataParallel (accelerate launch).")
        return self.net(x)

    @property
    def input_size(self) -> tuple[int, int, int]:
        """The (C, H, W) input the model is counted and run at."""
        return input_size(self.backbone)

    def set_mode(self, mode: str) -> None:
        """"masked" (training), "skip" (real skipping) or "scaled" (the "*" variant)."""
        set_mode(self, mode)

    def set_stochastic(self, stochastic: bool) -> None:
        """At evaluation, sample the gates with Gumbel noise (True) or take the argmax (False, default)."""
        for block in gated_blocks(self):
            block.gate.stochastic = stochastic

    def set_rates(self, rates: torch.Tensor) -> None:
        """Expected execution rate of every gated block, used by the "scaled" mode."""
        set_rates(self, rates)

    def downsampling(self) -> list[bool]:
        """For every gated block in network order: whether it changes resolution or width."""
        return [block_parts(b.block).shortcut_module is not None for b in gated_blocks(self)]


class DroppedBlock(nn.Module):
    """A residual block that stochastic depth drops for a whole mini-batch with probability 1 − `survival`.

    Training: x_l = post(shortcut(x) + b · F(x)), b ~ Bernoulli(p_l) drawn once per mini-batch.
    Evaluation: x_l = post(shortcut(x) + p_l · F(x)): every block runs, scaled by its survival probability.
    The branch is computed in training either way (one graph for `torch.compile`, as Adanet's masked mode).
    Not `torchvision.ops.StochasticDepth`: that is the inverted form (F / p_l in training, F at test), where
    Huang et al. scale at test time. Not a `common.dynamic.GatedBlock` either: nothing is skipped at test
    time, so evaluation treats the network as static.
    """

    def __init__(self, block: nn.Module, survival: float):
        super().__init__()
        block_parts(block)  # fails early, naming the block type, if it has no residual branch
        self.block, self.survival = block, survival

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = block_parts(self.block)
        # training: b_l ~ Bernoulli(p_l), one draw for the mini-batch; test: the expectation p_l
        scale = torch.bernoulli(torch.full((), self.survival, device=x.device)) if self.training else self.survival
        return parts.post(parts.shortcut(x) + scale * parts.residual(x))


class StochasticDepth(nn.Module, HubModel, library_name="dynnets", tags=["dynnets", "adanet", "stochastic-depth"],
                      license="mit"):
    """Table 1's Stochastic Depth baseline: Huang et al., *Deep Networks with Stochastic Depth*, arXiv:1603.09382.

    Block l of L survives with p_l = 1 − (l / L)(1 − p_L), the linear decay rule with p_L = 0.5 that
    their CIFAR-10 ResNet-110 uses (the row Adanet's Table 1 quotes).
    """

    def __init__(self, backbone: str = "resnet110_cifar", num_classes: int | None = None, last_survival: float = 0.5):
        super().__init__()
        if not 0.0 < last_survival <= 1.0:
            raise ValueError(f"Need 0 < last_survival ≤ 1; got {last_survival}.")
        self.backbone = backbone
        self.net = create_backbone(backbone, num_classes)
        stages = residual_stages(self.net)
        total = sum(len(stage.blocks()) for stage in stages)
        index = 0
        for stage in stages:
            for position, block in enumerate(stage.blocks()):
                index += 1
                stage.replace(position, DroppedBlock(block, 1.0 - index / total * (1.0 - last_survival)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @property
    def input_size(self) -> tuple[int, int, int]:
        """The (C, H, W) input the model is counted and run at."""
        return input_size(self.backbone)

    def survival(self) -> list[float]:
        """p_l of every block in network order."""
        return [m.survival for m in self.modules() if isinstance(m, DroppedBlock)]


def list_models() -> list[str]:
    """Names accepted by `create_model`."""
    return sorted([*ADANETS, *STOCHASTIC_DEPTHS, *BASELINES])


def model_spec(name: str, **kwargs) -> tuple[type[nn.Module], dict]:
    """The class and constructor arguments `create_model(name, **kwargs)` builds."""
    if name in ADANETS:
        backbone, reduction = ADANETS[name]
        return Adanet, {"backbone": backbone, "reduction": reduction, **kwargs}
    if name in STOCHASTIC_DEPTHS:
        return StochasticDepth, {"backbone": STOCHASTIC_DEPTHS[name], **kwargs}
    if name in BASELINES:
        return HubBackbone, {"name": BASELINES[name], **kwargs}
    raise ValueError(f"Unknown model {name!r}. Valid choices: {', '.join(list_models())}.")


def create_model(name: str, pretrained: bool | str = False, num_classes: int | None = None, in_chans: int = 3,
                 **kwargs) -> nn.Module:
    """An Adanet or a plain baseline by name; `pretrained`: True, a tag ("mini"), a weights folder or a Hub id."""
    from common.hub import build_model

    cls, args = model_spec(name, **kwargs)
    return build_model(cls, args, name, pretrained, num_classes, in_chans)
