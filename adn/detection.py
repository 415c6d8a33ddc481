"""Table 4: ResNet50-ADN as the backbone of torchvision's Faster R-CNN / Mask R-CNN with FPN (Sec. 4.5).

The FPN takes the stage outputs h^s of the sub-network selected with `adn.set_skip(...)`: the same
module objects serve the classifier and the detector, so switching the ADN switches the detector's
depth. Unlike torchvision's `resnet_fpn_backbone`, the norms are plain (skip-aware) BatchNorms and no
layer is frozen: the paper trains the detector with Algorithm 1, which needs both BN sets.
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from common.metrics import counted

from .model import ADNet

DETECTORS = {"faster": FasterRCNN, "mask": MaskRCNN}
NUM_ROIS, NUM_MASK_ROIS = 1000, 100  # mmdetection's forward_dummy: 1000 proposals, masks on the first 100


def adn_fpn_backbone(adn: ADNet, out_channels: int = 256) -> BackboneWithFPN:
    """FPN over layer1..layer4 of a ResNet ADN (P2–P5 plus a max-pooled P6, as Lin et al. 2017)."""
    if not adn.backbone.startswith("resnet") or adn.backbone.endswith("_cifar"):
        raise ValueError(f"The detection backbone needs an ImageNet ResNet ADN; got {adn.backbone!r}.")
    channels = [getattr(adn.net, f"layer{i}")[-1].conv3.out_channels for i in range(1, 5)]
    return BackboneWithFPN(adn.net, {f"layer{i}": str(i - 1) for i in range(1, 5)}, channels, out_channels,
                           extra_blocks=LastLevelMaxPool())


def adn_detector(kind: str = "faster", num_classes: int = 91, backbone: str = "resnet50",
                 **kwargs) -> tuple[nn.Module, ADNet]:
    """A Faster R-CNN ("faster") or Mask R-CNN ("mask") on a ResNet-ADN + FPN; returns (detector, adn)."""
    if kind not in DETECTORS:
        raise ValueError(f"Unknown detector {kind!r}; valid: {', '.join(DETECTORS)}.")
    adn = ADNet(backbone)
    return DETECTORS[kind](adn_fpn_backbone(adn), num_classes=num_classes, **kwargs), adn


@torch.no_grad()
def detector_macs(detector: nn.Module, size: tuple[int, int], seed: int = 0) -> dict[str, int]:
    """MACs of one H×W image as mmdetection's get_flops counts them (forward_dummy).

    Backbone + FPN, the RPN head on every level, the box head on `NUM_ROIS` random RoIs and (Mask
    R-CNN) the mask head on the first `NUM_MASK_ROIS`. RoIAlign, NMS and the input transform are
    not counted (neither does mmdetection).
    """
    detector.eval()
    height, width = size
    images = torch.zeros(1, 3, height, width)
    features, backbone = counted(detector.backbone, images)
    levels = list(features.values())
    _, rpn = counted(detector.rpn.head, levels)
    generator = torch.Generator().manual_seed(seed)
    corners = torch.rand(NUM_ROIS, 2, 2, generator=generator) * torch.tensor([width, height])
    rois = torch.cat([corners.min(dim=1).values, corners.max(dim=1).values + 1], dim=1)
    heads = detector.roi_heads
    box_features = heads.box_roi_pool(features, [rois], [size])
    _, box = counted(lambda f: heads.box_predictor(heads.box_head(f)), box_features)
    out = {"backbone_fpn": backbone, "rpn_head": rpn, "box_head": box}
    if getattr(heads, "mask_head", None) is not None:
        mask_features = heads.mask_roi_pool(features, [rois[:NUM_MASK_ROIS]], [size])
        _, out["mask_head"] = counted(lambda f: heads.mask_predictor(heads.mask_head(f)), mask_features)
    return out
