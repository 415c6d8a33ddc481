"""RDI-Net: relational routers on gated ResNet blocks (Wang et al., ICCV 2021, Sec. 3.1–3.2).

Every residual block F_n becomes a `common.dynamic.GatedBlock` whose gate is a `RelationalRouter`:

    ŝ_n = GAP(x_n)                                    Eq. (5)
    s̃_n = g(FC(ŝ_n; w⁰_n))            w⁰_n: C_n → d   Eq. (6)
    S_n = (s_{n−k}, …, s_{n−1}, s̃_n)  k = min(r, n)   (truncated at the start of the network)
    s_n = g(A · S_n · w¹_n)[k, :]      w¹_n: d × d     Eq. (7)  — A causal, see `relation_matrix`
    v_n = softmax((FC(s_n; w²_n) + G) / τ)[1]          Eq. (8)  — relaxed at training, argmax at test
    x_{n+1} = v_n F_n(x_n) + (1 − v_n) x_n             Eq. (9)

g is ReLU. s_n is written to a `RouterMemory` shared by all routers of a model (cleared by the
model at the start of every forward), from which later routers read it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common.backbones import create_backbone, input_size, residual_stages, spatial_mean
from common.dynamic import GatedBlock
from common.hub import HubModel

RELATIONS = ("fixed", "auto")


def relation_matrix(position: int, r: int, gamma: float) -> torch.Tensor:
    """The router-wise relation graph of router `position` (0-based), causal form of Eq. (4).

    Size (k+1)×(k+1) with k = min(r, position): rows/columns are the routers n−k … n. Entry
    [i, j] = γ^(i−j) for i ≥ j, else 0 — Eq. (4) as printed, transposed (see README: with the
    printed upper-triangular A, row r of Eq. (7) would hold only A[r, r] = 1 and the preceding
    routers would have no effect). The current router's row is the last: it weights the router m
    steps back by γ^m.
    """
    if r < 0 or not 0.0 <= gamma <= 1.0:
        raise ValueError(f"Need r ≥ 0 and γ in [0, 1]; got r={r}, γ={gamma}.")
    k = min(r, position)
    steps = torch.arange(k + 1)
    diff = steps[:, None] - steps[None, :]
    return torch.where(diff >= 0, torch.tensor(float(gamma)) ** diff.clamp(min=0).double(),
                       torch.zeros((), dtype=torch.double)).float()


class RouterMemory:
    """Router features s_n of the current forward, by router index (not a module: no parameters).

    The model clears it at the start of each forward; router n writes slot n and reads the slots
    of its k preceding routers. Because slots are indexed, calling one router alone after a full
    forward (as `common.dynamic.macs_profile` does) reads the same preceding features again.
    """

    def __init__(self):
        self.features: dict[int, torch.Tensor] = {}

    def clear(self) -> None:
        """Forget the features of the last forward."""
        self.features = {}

    def write(self, index: int, feature: torch.Tensor) -> None:
        """Keep router `index`'s input features for the routers after it."""
        self.features[index] = feature

    def read(self, index: int, batch: int) -> torch.Tensor:
        """Router `index`'s features of this forward (batch `batch`), or one line saying why they are missing."""
        feature = self.features.get(index)
        if feature is None or feature.shape[0] != batch:
            raise RuntimeError(
                f"Router {index + 1}'s features of this forward are missing (have routers "
                f"{sorted(i + 1 for i in self.features)}, batch {batch}): call the whole model, or run "
                f"a full forward on the same batch before calling one router alone.")
        return feature


class RelationalRouter(nn.Module):
    """The relational router of block `index` (Sec. 3.2, Fig. 3): `router(x) -> (v [B], P(execute) [B])`.

    `relation="fixed"`: current-row weights γ^m for the router m steps back (Eq. 4, causal).
    `relation="auto"`: Table 3's "Auto" — weight of router n−m = cosine similarity of s̃_n and
    s_{n−m}, per image (the current router's own weight stays 1). r = 0 (or γ = 0) is the vanilla
    short-range router: s_n = g(s̃_n w¹_n).
    """

    def __init__(self, channels: int, index: int, memory: RouterMemory, d: int = 256, r: int = 2,
                 gamma: float = 0.5, relation: str = "fixed", tau: float = 1.0):
        super().__init__()
        if relation not in RELATIONS:
            raise ValueError(f"Unknown relation {relation!r}; valid: {', '.join(RELATIONS)}.")
        if tau <= 0:
            raise ValueError(f"Gumbel-softmax temperature τ must be > 0; got {tau}.")
        self.index, self.r, self.gamma, self.relation, self.tau = index, r, gamma, relation, tau
        self.k = min(r, index)  # preceding routers in the graph (truncated at the start)
        self.memory = memory
        self.align = nn.Linear(channels, d)            # w⁰_n, Eq. (6)
        self.gcn = nn.Linear(d, d, bias=False)         # w¹_n, Eq. (7)
        self.decide = nn.Linear(d, 2)                  # w²_n, Eq. (8); logit 1 = execute
        # The current router's row of A as Python floats: γ^m for the router m steps back, γ⁰ = 1 last.
        self.row = relation_matrix(index, r, gamma)[-1].tolist()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """s_n of Eq. (7) for block input x [B, C, H, W]; written to the shared memory."""
        s_tilde = F.relu(self.align(spatial_mean(x)))                          # Eqs. (5), (6)
        batch = x.shape[0]
        stacked = [self.memory.read(self.index - m, batch).to(s_tilde.dtype) for m in range(self.k, 0, -1)]
        if self.relation == "fixed":  # (A · S_n)[k, :] = s̃_n + Σ_m γ^m s_{n−m}: k scaled adds, no stack
            aggregated = s_tilde
            for weight, feature in zip(self.row, stacked):
                aggregated = torch.add(aggregated, feature, alpha=weight)
        else:  # "auto": edges = cosine similarity to the current router's aligned feature
            stack = torch.stack([*stacked, s_tilde], dim=1)                     # S_n [B, k+1, d]
            weights = F.cosine_similarity(stack, s_tilde[:, None], dim=2)
            weights = torch.cat([weights[:, :-1], torch.ones_like(weights[:, -1:])], dim=1)
            aggregated = torch.einsum("bk,bkd->bd", weights, stack)             # (A · S_n)[k, :]
        s = F.relu(self.gcn(aggregated))                                        # Eq. (7)
        self.memory.write(self.index, s)
        return s

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.decide(self.features(x))
        prob = logits.float().softmax(dim=1)[:, 1]
        if self.training:  # Eq. (8): Gumbel-softmax relaxation, soft v_n
            decision = F.gumbel_softmax(logits.float(), tau=self.tau, hard=False)[:, 1]
        else:              # hard 0/1 at evaluation: the more likely choice
            decision = (logits[:, 1] > logits[:, 0]).float()
        return decision, prob


BACKBONES = {"rdinet20": "resnet20_cifar", "rdinet32": "resnet32_cifar", "rdinet110": "resnet110_cifar",
             "rdinet50": "resnet50", "rdinet101": "resnet101"}


class RDINet(nn.Module, HubModel, library_name="dynnets", tags=["dynnets", "rdinet"], license="mit"):
    """A torchvision / CIFAR ResNet whose every residual block is gated by a relational router.

    `forward(x)` returns logits; the decisions of the last forward are read with
    `common.dynamic.decisions(model)` / `probabilities(model)` in network order.
    """

    def __init__(self, backbone: str = "resnet110_cifar", num_classes: int | None = None, d: int = 256,
                 r: int = 2, gamma: float = 0.5, relation: str = "fixed", tau: float = 1.0):
        super().__init__()
        self.backbone, self.d, self.r, self.gamma, self.relation = backbone, d, r, gamma, relation
        self.net = create_backbone(backbone, num_classes)
        self.memory = RouterMemory()
        index = 0
        for stage in residual_stages(self.net):
            for position, block in enumerate(stage.blocks()):
                router = RelationalRouter(block.conv1.in_channels, index, self.memory, d, r, gamma, relation, tau)
                stage.replace(position, GatedBlock(block, router, mix="output"))  # Eq. (9)
                index += 1
        self.num_blocks = index

    @property
    def input_size(self) -> tuple[int, int, int]:
        """The (C, H, W) the backbone is counted at."""
        return input_size(self.backbone)

    def routers(self) -> list[RelationalRouter]:
        """The relational routers in network order."""
        return [m for m in self.modules() if isinstance(m, RelationalRouter)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if getattr(self, "_is_replica", False):  # nn.DataParallel: replicas would share one RouterMemory
            raise RuntimeError("RDINet cannot run under nn.DataParallel (its replicas would share one router memory "
                               "and keep their decisions): use DistributedDataParallel (accelerate launch).")
        self.memory.clear()
        return self.net(x)


def router_param_formula(channels: list[int], d: int) -> int:
    """Σ_n (C_n·d + d) + d·d + (2d + 2): w⁰_n with bias, w¹_n without, w²_n with bias."""
    return sum(c * d + d + d * d + 2 * d + 2 for c in channels)
