"""Backbones every paper builds on, and one way to walk their stages and residual blocks.

CIFAR ResNets (He et al. 2016, Sec. 4.2) are assembled from torchvision's own `BasicBlock` and
`Bottleneck`; the ImageNet backbones are torchvision's definitions (RegNetX/Y-600MF from
`BlockParams`, which torchvision does not ship as builders). `residual_stages(model)` lists the
stages of any of them as `Stage`s, and `block_parts(block)` splits a residual block into
shortcut, residual branch and post-activation, so that gating (adanet, rdinet), rewiring (dygraph)
and sub-path splitting (adn) each happen in one place.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torchvision import models
from torchvision.models.mobilenetv2 import InvertedResidual
from torchvision.models.regnet import BlockParams, RegNet, ResBottleneckBlock
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.models.vision_transformer import EncoderBlock


class OptionAShortcut(nn.Module):
    """He et al. 2016 option A: subsample by `stride`, zero-pad the new channels (no parameters)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.stride, self.extra = stride, out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return nn.functional.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


class CifarResNet(nn.Module):
    """3×3 stem, then stages of torchvision residual blocks, global pool, linear classifier.

    Attribute names follow torchvision's `ResNet` (`conv1`, `bn1`, `layer1`…, `fc`), so the same
    stage walker serves both.
    """

    def __init__(self, block: type[nn.Module], layers: list[int], widths: list[int],
                 num_classes: int = 10, option_a: bool = True, stem_width: int | None = None):
        super().__init__()
        stem_width = stem_width or widths[0]
        self.conv1 = nn.Conv2d(3, stem_width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        in_channels = stem_width
        for index, (blocks, width) in enumerate(zip(layers, widths)):
            stride = 1 if index == 0 else 2
            stage = []
            for block_index in range(blocks):
                out_channels = width * block.expansion
                block_stride = stride if block_index == 0 else 1
                shortcut = None
                if block_stride != 1 or in_channels != out_channels:
                    if option_a:
                        shortcut = OptionAShortcut(in_channels, out_channels, block_stride)
                    else:
                        shortcut = nn.Sequential(
                            nn.Conv2d(in_channels, out_channels, 1, stride=block_stride, bias=False),
                            nn.BatchNorm2d(out_channels))
                stage.append(block(in_channels, width, stride=block_stride, downsample=shortcut))
                in_channels = out_channels
            setattr(self, f"layer{index + 1}", nn.Sequential(*stage))
        self.num_stages = len(layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        for index in range(self.num_stages):
            x = getattr(self, f"layer{index + 1}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def cifar_resnet(depth: int, num_classes: int = 10) -> CifarResNet:
    """He et al. 2016 CIFAR ResNet of depth 6n+2: basic blocks at 16/32/64 channels, option A."""
    if (depth - 2) % 6 != 0:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 56, 110, …); got {depth}.")
    n = (depth - 2) // 6
    return CifarResNet(BasicBlock, [n, n, n], [16, 32, 64], num_classes, option_a=True)


def cifar_bottleneck_resnet(layers: tuple[int, ...] = (3, 4, 20, 2), widths: tuple[int, ...] = (64, 128, 256, 512),
                            num_classes: int = 10) -> CifarResNet:
    """The wide bottleneck CIFAR net of Adanet Sec. 4.1 (3, 4, 20, 2 blocks at 64/128/256/512)."""
    return CifarResNet(Bottleneck, list(layers), list(widths), num_classes, option_a=False)


def regnet_from_params(depth: int, w_0: int, w_a: float, w_m: float, group_width: int,
                       se_ratio: float | None = None, num_classes: int = 1000) -> RegNet:
    """A torchvision RegNet from the design-space parameters of Radosavovic et al. 2020."""
    params = BlockParams.from_init_params(depth=depth, w_0=w_0, w_a=w_a, w_m=w_m,
                                          group_width=group_width, se_ratio=se_ratio)
    return RegNet(params, num_classes=num_classes)


def _torchvision(name: str) -> Callable[..., nn.Module]:
    return lambda num_classes=1000: getattr(models, name)(num_classes=num_classes)


# name → (builder(num_classes), default classes, input size)
BACKBONES: dict[str, tuple[Callable[..., nn.Module], int, int]] = {
    **{f"resnet{d}_cifar": ((lambda d: lambda num_classes=10: cifar_resnet(d, num_classes))(d), 10, 32)
       for d in (20, 32, 56, 110)},
    "bottleneck89_cifar": (lambda num_classes=10: cifar_bottleneck_resnet(num_classes=num_classes), 10, 32),
    "resnet18": (_torchvision("resnet18"), 1000, 224),
    "resnet34": (_torchvision("resnet34"), 1000, 224),
    "resnet50": (_torchvision("resnet50"), 1000, 224),
    "resnet101": (_torchvision("resnet101"), 1000, 224),
    "resnext50_32x4d": (_torchvision("resnext50_32x4d"), 1000, 224),
    "mobilenet_v2": (_torchvision("mobilenet_v2"), 1000, 224),
    # pycls RegNetX-600MF / RegNetY-600MF design parameters (torchvision ships neither).
    "regnet_x_600mf": (lambda num_classes=1000: regnet_from_params(16, 48, 36.97, 2.24, 24, None, num_classes), 1000, 224),
    "regnet_x_1_6gf": (_torchvision("regnet_x_1_6gf"), 1000, 224),
    "regnet_y_600mf": (lambda num_classes=1000: regnet_from_params(15, 48, 32.54, 2.32, 16, 0.25, num_classes), 1000, 224),
    "vit_b_32": (_torchvision("vit_b_32"), 1000, 224),
}


def list_backbones() -> list[str]:
    """Names accepted by `create_backbone`."""
    return sorted(BACKBONES)


def create_backbone(name: str, num_classes: int | None = None, in_chans: int = 3) -> nn.Module:
    """Build a backbone by name with freshly initialised weights; `in_chans` input channels (timm's name)."""
    if name not in BACKBONES:
        raise ValueError(f"Unknown backbone {name!r}. Valid choices: {', '.join(list_backbones())}.")
    if in_chans < 1:
        raise ValueError(f"in_chans must be a positive number of input channels; got {in_chans}.")
    builder, default_classes, _ = BACKBONES[name]
    model = builder(num_classes=num_classes or default_classes)
    if in_chans != 3:
        set_in_chans(model, in_chans)
    return model


def set_in_chans(model: nn.Module, in_chans: int) -> None:
    """Replace the first convolution by one that takes `in_chans` channels (freshly initialised)."""
    name, conv = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    replacement = nn.Conv2d(in_chans, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                            conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode)
    setattr(parent, name.rpartition(".")[2], replacement)


def input_size(name: str) -> tuple[int, int, int]:
    """The (C, H, W) input a backbone is counted and run at."""
    if name not in BACKBONES:
        raise ValueError(f"Unknown backbone {name!r}. Valid choices: {', '.join(list_backbones())}.")
    size = BACKBONES[name][2]
    return (3, size, size)


@dataclass
class Stage:
    """The residual blocks of one stage: `container[i]` for i in `indices`."""
    name: str
    container: nn.Module
    indices: list[int]

    def blocks(self) -> list[nn.Module]:
        """The blocks in execution order."""
        return [self.container[i] for i in self.indices]

    def replace(self, position: int, module: nn.Module) -> None:
        """Put `module` in place of the stage's `position`-th block."""
        self.container[self.indices[position]] = module

    def __len__(self) -> int:
        return len(self.indices)


def residual_stages(model: nn.Module) -> list[Stage]:
    """The stages of a ResNet/CIFAR ResNet, MobileNetV2, RegNet or ViT, each a list of blocks.

    MobileNetV2's flat `features` are cut where a block changes shape (no residual connection);
    a ViT's twelve encoder blocks form one stage.
    """
    if hasattr(model, "layer1"):
        names = [n for n in ("layer1", "layer2", "layer3", "layer4") if hasattr(model, n)]
        return [Stage(n, getattr(model, n), list(range(len(getattr(model, n))))) for n in names]
    if isinstance(model, models.MobileNetV2):
        stages: list[Stage] = []
        for index, block in enumerate(model.features):
            if not isinstance(block, InvertedResidual):
                continue
            if block.use_res_connect and stages:
                stages[-1].indices.append(index)
            else:
                stages.append(Stage(f"features.{index}", model.features, [index]))
        return stages
    if isinstance(model, RegNet):
        return [Stage(f"trunk_output.{name}", stage, list(range(len(stage))))
                for name, stage in model.trunk_output.named_children()]
    if isinstance(model, models.VisionTransformer):
        layers = model.encoder.layers
        return [Stage("encoder.layers", layers, list(range(len(layers))))]
    raise ValueError(f"No stage walker for {type(model).__name__}; known: ResNet, CifarResNet, "
                     f"MobileNetV2, RegNet, VisionTransformer.")


@dataclass
class BlockParts:
    """A residual block as post(shortcut(x) + residual(x)); `shortcut_module` is None for identity."""
    shortcut: Callable[[torch.Tensor], torch.Tensor]
    residual: Callable[[torch.Tensor], torch.Tensor]
    post: Callable[[torch.Tensor], torch.Tensor]
    shortcut_module: nn.Module | None


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def block_parts(block: nn.Module) -> BlockParts:
    """Split a torchvision residual block into shortcut, residual branch and post-activation."""
    if isinstance(block, BasicBlock):
        def residual(x):
            return block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x)))))
        return BlockParts(block.downsample or _identity, residual, block.relu, block.downsample)
    if isinstance(block, Bottleneck):
        def residual(x):
            x = block.relu(block.bn1(block.conv1(x)))
            x = block.relu(block.bn2(block.conv2(x)))
            return block.bn3(block.conv3(x))
        return BlockParts(block.downsample or _identity, residual, block.relu, block.downsample)
    if isinstance(block, ResBottleneckBlock):
        return BlockParts(block.proj or _identity, block.f, block.activation, block.proj)
    if isinstance(block, InvertedResidual):
        if not block.use_res_connect:
            raise ValueError("This InvertedResidual changes shape and has no shortcut; it cannot be skipped.")
        return BlockParts(_identity, block.conv, _identity, None)
    if isinstance(block, EncoderBlock):
        raise ValueError("A ViT EncoderBlock holds two residual branches; skip it whole instead.")
    raise ValueError(f"No residual decomposition for {type(block).__name__}; known: BasicBlock, "
                     f"Bottleneck, ResBottleneckBlock, InvertedResidual.")


def spatial_mean(x: torch.Tensor) -> torch.Tensor:
    """Global average pooling [B, C, H, W] → [B, C]: `x.mean(dim=(2, 3))` bit for bit, forward and backward,
    except that the backward broadcasts the [B, C] gradient instead of writing a full [B, C, H, W] one: one
    pass less per gate or router in a training step."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _SpatialMean.apply(x)
    return x.mean(dim=(2, 3))


class _SpatialMean(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.shape = x.shape
        return x.mean(dim=(2, 3))

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = ctx.shape
        return (grad / (height * width))[:, :, None, None].expand(batch, channels, height, width)
