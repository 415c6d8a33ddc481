"""Adaptive depth networks with specialised sub-paths (ADN), built on torchvision's definitions.

Sec. 3.1, Eq. (1): every residual stage s is split into a mandatory base sub-path (its first
blocks, F_1..F_K) and a skippable sub-path (F_{K+1}..F_L). A skip configuration `skip` of Ns
booleans (one per adaptive stage, e.g. "TTFF") picks one of the 2^Ns sub-networks at run time;
a skipped sub-path is not executed at all, so h^s = h^s_base feeds stage s+1 directly.

Sec. 3.4: the normalisation layers of the always-executed blocks of an adaptive stage carry a
twin — BatchNorm for CNNs, LayerNorm for ViT — used while that stage skips ("skip-aware" norms).
As in the authors' code, a ResNet's projection-shortcut BN stays shared (ResNet50-ADN: 25,583,144
parameters, the paper's 25.58 M), and MobileNetV2 also twins its stem, its one-block stages and its
head conv (3,527,544 parameters); those switch with the adaptive stage before them (the first
stage for the stem and `features.1`). Skippable blocks are shared as they are.

The torchvision module tree and its parameter names are kept: a stage's container (`layer3`,
MobileNetV2's `features`, ViT's `encoder.layers`) becomes a `SkippableSequential` with the same
children, and a norm becomes its skip-aware subclass whose twin is the child `skip_norm`. So
torchvision checkpoints load into `net` (with the twins initialised from the main norms), and
`torchvision.models.detection` can wrap `net` as it wraps a plain ResNet (Table 4).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
from torchvision import models

from common.backbones import Stage, create_backbone, residual_stages
from common.hub import HubBackbone, HubModel

VIT_GROUP = 3  # Sec. 4: ViT's 12 encoder blocks form 4 groups of 3; the last of each is skippable.


def base_depth(num_blocks: int) -> int:
    """Blocks a stage keeps always: ceil(n/2) for n ≥ 2 (authors' code: min(n−1, ceil(n/2))), all for n < 2."""
    if num_blocks < 2:
        return num_blocks
    return min(num_blocks - 1, math.ceil(num_blocks / 2))


@dataclass
class SubPaths:
    """One adaptive stage: `container[i]` for i in `base` always runs, for i in `skippable` may be skipped."""
    name: str
    container: nn.Module
    base: list[int]
    skippable: list[int]


def split_stages(net: nn.Module) -> list[SubPaths]:
    """The adaptive stages of a backbone, each split into base and skippable sub-paths (Eq. 1).

    Stages come from `common.backbones.residual_stages`; a ViT's single stage of 12 encoder blocks
    is cut into groups of `VIT_GROUP` first. Stages of one block (MobileNetV2's first and last)
    have nothing to skip and are left out, so Ns counts the adaptive stages only.
    """
    stages = residual_stages(net)
    if isinstance(net, models.VisionTransformer):
        (stage,) = stages
        if len(stage) % VIT_GROUP:
            raise ValueError(f"ViT with {len(stage)} encoder blocks cannot form groups of {VIT_GROUP}.")
        stages = [Stage(f"{stage.name}[{i}:{i + VIT_GROUP}]", stage.container, stage.indices[i:i + VIT_GROUP])
                  for i in range(0, len(stage), VIT_GROUP)]
    plan = []
    for stage in stages:
        keep = base_depth(len(stage))
        if keep < len(stage):
            plan.append(SubPaths(stage.name, stage.container, stage.indices[:keep], stage.indices[keep:]))
    return plan


class SkipAware:
    """Mixin of a norm with a twin, `skip_norm`, that runs instead of it while `skipping` (Sec. 3.4)."""

    skip_norm: nn.Module
    skipping: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip_norm(x) if self.skipping else super().forward(x)


class SkipAwareBatchNorm2d(SkipAware, nn.BatchNorm2d):
    """Sec. 3.4: a BatchNorm with a twin, `skip_norm`, used while its stage skips its sub-path."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1):
        super().__init__(num_features, eps, momentum)
        self.skip_norm = nn.BatchNorm2d(num_features, eps, momentum)


class SkipAwareSyncBatchNorm(SkipAware, nn.SyncBatchNorm):
    """`SkipAwareBatchNorm2d` for multi-GPU training: both sets synchronise their batch statistics."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, process_group=None):
        super().__init__(num_features, eps, momentum, process_group=process_group)
        self.skip_norm = nn.SyncBatchNorm(num_features, eps, momentum, process_group=process_group)


class SkipAwareLayerNorm(SkipAware, nn.LayerNorm):
    """Sec. 3.4 for ViT: a LayerNorm with a twin, `skip_norm`, used while its stage skips."""

    def __init__(self, normalized_shape: Sequence[int], eps: float = 1e-5):
        super().__init__(normalized_shape, eps)
        self.skip_norm = nn.LayerNorm(normalized_shape, eps)


def skip_aware(norm: nn.Module) -> nn.Module:
    """The skip-aware version of a BatchNorm2d / LayerNorm, both sets initialised from `norm`."""
    if type(norm) is nn.BatchNorm2d:
        twin = SkipAwareBatchNorm2d(norm.num_features, norm.eps, norm.momentum)
    elif type(norm) is nn.LayerNorm:
        twin = SkipAwareLayerNorm(norm.normalized_shape, norm.eps)
    else:
        raise ValueError(f"No skip-aware version of {type(norm).__name__}; known: BatchNorm2d, LayerNorm.")
    twin.load_state_dict(norm.state_dict(), strict=False)
    twin.skip_norm.load_state_dict(norm.state_dict())
    return twin


def convert_sync_batchnorm(module: nn.Module, process_group=None) -> nn.Module:
    """`nn.SyncBatchNorm.convert_sync_batchnorm` that keeps skip-aware BNs skip-aware (torch's drops the twins).

    Converts in place (like torch's) and returns `module`; a skip-aware BN becomes a
    `SkipAwareSyncBatchNorm` holding copies of both sets, so build the optimizer after converting.
    """
    if isinstance(module, SkipAwareBatchNorm2d):
        sync = SkipAwareSyncBatchNorm(module.num_features, module.eps, module.momentum, process_group)
        sync.load_state_dict(module.state_dict())
        sync.skipping = module.skipping
        return sync.train(module.training)
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return nn.SyncBatchNorm.convert_sync_batchnorm(module, process_group)
    for name, child in module.named_children():
        module.add_module(name, convert_sync_batchnorm(child, process_group))
    return module


class SkippableSequential(nn.Sequential):
    """A stage container that leaves out the skippable blocks of the stages set to skip.

    `plan[i] = (stage, skippable, last)` for the blocks of adaptive stages; `skip[stage]` is set by
    `ADNet.set_skip`. With `record` set, the output after each stage's last block (executed or
    skipped) is kept in `features[stage]`: h^s of Eq. (1), the input of the distillation terms of Eq. (8).
    """

    def __init__(self, *args, plan: dict[int, tuple[int, bool, bool]] | None = None):
        super().__init__(*args)
        self.plan = plan or {}
        self.skip: tuple[bool, ...] = ()
        self.record = False
        self.features: dict[int, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.features = {}
        for index, module in enumerate(self):
            stage, skippable, last = self.plan.get(index, (None, False, False))
            if not (skippable and self.skip[stage]):
                x = module(x)
            if last and self.record:
                self.features[stage] = x
        return x


def parse_skip(skip: str | Sequence[bool] | None, num_stages: int) -> tuple[bool, ...]:
    """A skip configuration as Ns booleans from None/"super", "base", a "TTFF" string or booleans."""
    if skip is None or skip == "super":
        return (False,) * num_stages
    if skip == "base":
        return (True,) * num_stages
    if isinstance(skip, str):
        if len(skip) != num_stages or set(skip) - {"T", "F"}:
            raise ValueError(f"Skip configuration {skip!r} must be {num_stages} letters T/F (e.g. "
                             f"{'T' * (num_stages // 2) + 'F' * (num_stages - num_stages // 2)!r}), "
                             f"'super' or 'base'.")
        return tuple(c == "T" for c in skip)
    skip = tuple(bool(s) for s in skip)
    if len(skip) != num_stages:
        raise ValueError(f"Skip configuration {skip} has {len(skip)} entries; this network has "
                         f"{num_stages} adaptive stages. Valid: None, 'super', 'base', a T/F string or booleans.")
    return skip


def config_name(skip: Sequence[bool]) -> str:
    """A skip configuration written as the paper does: "TTFF" (T = stage skips its sub-path)."""
    return "".join("T" if s else "F" for s in skip)


def all_configs(num_stages: int) -> list[str]:
    """All 2^Ns skip configurations, from the super-net "FF…F" to the base-net "TT…T"."""
    return [config_name([(i >> (num_stages - 1 - k)) & 1 for k in range(num_stages)])
            for i in range(2 ** num_stages)]


def twinned_parts(net: nn.Module, plan: list[SubPaths]) -> list[tuple[int, nn.Module]]:
    """(stage, module) pairs whose norms get skip-aware twins, in network order (authors' code).

    The always-executed blocks of every adaptive stage; for MobileNetV2 also each `features` entry
    outside the adaptive stages (stem, one-block stages, head conv), which switches with the
    adaptive stage before it, or with the first one if it comes before them all.
    """
    parts = [(stage, sub.container[i]) for stage, sub in enumerate(plan) for i in sub.base]
    if isinstance(net, models.MobileNetV2):
        stage_of = {i: stage for stage, sub in enumerate(plan) for i in sub.base + sub.skippable}
        stage = 0
        for index, module in enumerate(net.features):
            if index in stage_of:
                stage = stage_of[index]
            else:
                parts.append((stage, module))
    order = {id(m): i for i, m in enumerate(net.modules())}
    return sorted(parts, key=lambda part: order[id(part[1])])


def _container_path(net: nn.Module, container: nn.Module) -> str:
    for name, module in net.named_modules():
        if module is container:
            return name
    raise ValueError(f"Container {type(container).__name__} is not part of the network.")


class ADNet(nn.Module, HubModel, library_name="dynnets", tags=["dynnets", "adn"], license="mit"):
    """A torchvision backbone as an adaptive depth network (Sec. 3): 2^Ns sub-networks in one.

    `forward(x, skip=None, return_features=False)`: `skip` picks the sub-network for this call
    (None = the one set by `set_skip`, initially the super-net); with `return_features` the
    stage outputs [h^1..h^Ns] come back beside the logits. `skip_aware_norm=False` shares the
    norms between sub-networks (Table 3's ablation). For multi-GPU training convert the BNs with
    `adn.convert_sync_batchnorm`, not torch's (which drops the twins; the model then refuses to run).
    """

    def __init__(self, backbone: str = "resnet50", num_classes: int | None = None, skip_aware_norm: bool = True):
        super().__init__()
        self.backbone, self.skip_aware_norm = backbone, skip_aware_norm
        self.net = create_backbone(backbone, num_classes)
        plan = split_stages(self.net)
        self.num_stages = len(plan)
        self.skippable_blocks: list[nn.Module] = [s.container[i] for s in plan for i in s.skippable]
        # Skip-aware norms are looked up by name (`norms`), so that an in-place conversion keeps them.
        self._norm_paths: list[list[str]] = [[] for _ in plan]
        if skip_aware_norm:
            paths = {id(m): n for n, m in self.net.named_modules()}
            for stage, part in twinned_parts(self.net, plan):
                for name, module in list(part.named_modules()):
                    # a ResNet's projection shortcut (`downsample`) keeps one shared BN, as in the authors' code
                    if type(module) in (nn.BatchNorm2d, nn.LayerNorm) and not name.startswith("downsample."):
                        part.set_submodule(name, skip_aware(module))
                        self._norm_paths[stage].append(f"{paths[id(part)]}.{name}")
        self.containers: list[SkippableSequential] = []
        for container in dict.fromkeys(s.container for s in plan):  # unique, in network order
            entries = {}
            for stage, sub in enumerate(plan):
                if sub.container is container:
                    indices = sub.base + sub.skippable
                    entries.update({i: (stage, i in sub.skippable, i == indices[-1]) for i in indices})
            replacement = SkippableSequential(OrderedDict(container.named_children()), plan=entries)
            self.net.set_submodule(_container_path(self.net, container), replacement)
            self.containers.append(replacement)
        self.skip: tuple[bool, ...] = ()
        self.set_skip(None)

    @property
    def norms(self) -> list[list[nn.Module]]:
        """The skip-aware norms of each adaptive stage; refuses if something replaced them with plain norms."""
        norms = [[self.net.get_submodule(path) for path in paths] for paths in self._norm_paths]
        for paths, stage in zip(self._norm_paths, norms):
            for path, norm in zip(paths, stage):
                if not isinstance(norm, SkipAware):
                    raise RuntimeError(f"net.{path} is a plain {type(norm).__name__} without its skip-aware twin "
                                       f"(nn.SyncBatchNorm.convert_sync_batchnorm drops it): convert with "
                                       f"adn.convert_sync_batchnorm instead.")
        return norms

    def train(self, mode: bool = True) -> ADNet:
        """nn.Module.train, after checking that the skip-aware norms are still in place."""
        self.norms  # noqa: B018 — the look-up refuses replaced norms
        return super().train(mode)

    def set_skip(self, skip: str | Sequence[bool] | None) -> None:
        """Select the sub-network that plain `forward(x)` runs (None/"super", "base", "TTFF", booleans)."""
        skip = parse_skip(skip, self.num_stages)
        if skip == self.skip:
            return
        norms = self.norms
        self.skip = skip
        for container in self.containers:
            container.skip = skip
        for stage, stage_norms in enumerate(norms):
            for norm in stage_norms:
                norm.skipping = skip[stage]

    def forward(self, x: torch.Tensor, skip: str | Sequence[bool] | None = None,
                return_features: bool = False):
        previous = self.skip
        if skip is not None:
            self.set_skip(skip)
        for container in self.containers:
            container.record = return_features
        try:
            logits = self.net(x)
        finally:
            self.set_skip(previous)
        if not return_features:
            return logits
        features = {}
        for container in self.containers:
            features.update(container.features)
            container.features = {}
        return logits, [features[s] for s in range(self.num_stages)]

    def skip_norm_parameters(self) -> list[nn.Parameter]:
        """The parameters of the twin norms: the only weights the base-net does not share with the super-net."""
        return [p for norms in self.norms for n in norms for p in n.skip_norm.parameters()]


class BaseNet(nn.Module, HubModel, library_name="dynnets", tags=["dynnets", "adn"], license="mit"):
    """The individual "-Base" network of Table 1: the backbone at the base-net's depth, trained alone."""

    def __init__(self, backbone: str = "resnet50", num_classes: int | None = None):
        super().__init__()
        self.backbone = backbone
        self.net = create_backbone(backbone, num_classes)
        plan = split_stages(self.net)
        for container in dict.fromkeys(s.container for s in plan):
            dropped = {i for s in plan if s.container is container for i in s.skippable}
            kept = OrderedDict((name, module) for i, (name, module) in enumerate(container.named_children())
                               if i not in dropped)
            self.net.set_submodule(_container_path(self.net, container), nn.Sequential(kept))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# name → (class, constructor arguments). The individual full networks are the plain backbones.
MODELS: dict[str, tuple[type[nn.Module], dict]] = {}
for _short, _backbone in [("resnet50", "resnet50"), ("mobilenetv2", "mobilenet_v2"), ("vit_b32", "vit_b_32"),
                          ("resnet20_cifar", "resnet20_cifar"), ("resnet56_cifar", "resnet56_cifar"),
                          ("resnet110_cifar", "resnet110_cifar")]:
    MODELS[f"{_short}_adn"] = (ADNet, {"backbone": _backbone})
    MODELS[f"{_short}_base"] = (BaseNet, {"backbone": _backbone})
    MODELS[_short] = (HubBackbone, {"name": _backbone})


def list_models() -> list[str]:
    """Names accepted by `create_model`."""
    return sorted(MODELS)


def model_spec(name: str, **kwargs) -> tuple[type[nn.Module], dict]:
    """The class and constructor arguments `create_model(name, **kwargs)` builds."""
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}. Valid choices: {', '.join(list_models())}.")
    cls, defaults = MODELS[name]
    return cls, {**defaults, **kwargs}


def create_model(name: str, pretrained: bool | str = False, num_classes: int | None = None, in_chans: int = 3,
                 **kwargs) -> nn.Module:
    """Build an ADN model, a "-Base" network or an individual backbone by name.

    `pretrained`: True, a tag ("mini"), a weights folder or a Hub id.
    """
    from common.hub import build_model

    cls, args = model_spec(name, **kwargs)
    return build_model(cls, args, name, pretrained, num_classes, in_chans)
