"""Baseline targets: the static networks every paper compares against.

`baselines cifar10-resnet` trains He et al. 2016's CIFAR ResNets; `baselines imagenet-backbones`
counts every ImageNet backbone beside the numbers the four papers quote for it (and torchvision's
own metadata). The quoted numbers live here once; paper folders that print the same baseline refer
to `BACKBONE_QUOTES`.
"""
from __future__ import annotations

from .backbones import input_size
from .hub import HubBackbone
from .metrics import count_params, model_macs
from .reproduction import CIFAR10, MINI_DEPTH, MINI_RECIPE, Cell, Context, Target
from .runs import ModelSpec, Run
from .train import TrainConfig

# He et al. 2016, Table 6 (CIFAR-10): depth → (params in M, test error in %).
HE2016_CIFAR10 = {20: (0.27, 8.75), 32: (0.46, 7.51), 56: (0.85, 6.97), 110: (1.7, 6.43)}

# Numbers the papers quote for plain backbones: name → [(source, params M, GMACs)].
# Every paper here reports MACs under the name FLOPs for ImageNet models.
BACKBONE_QUOTES: dict[str, list[tuple[str, float | None, float | None]]] = {
    "resnet18": [("Adanet Tab. 2", 11.69, 1.8), ("DY-Graph Tab. 1", 11.69, 1.813)],
    "resnet34": [("Adanet Tab. 2", 21.8, 3.6)],
    "resnet50": [("Adanet Tab. 2", 25.56, 3.8), ("DY-Graph Tab. 1", 25.55, 4.087), ("ADN Tab. 1", 25.56, 4.11)],
    "resnet101": [("DY-Graph Tab. 1", 44.54, 7.799)],
    "resnext50_32x4d": [("DY-Graph Tab. 1", 25.02, 4.228)],
    "mobilenet_v2": [("DY-Graph Tab. 1", 3.51, 0.299), ("ADN Tab. 1", 3.50, 0.32)],
    "regnet_x_600mf": [("DY-Graph Tab. 1", 6.19, 0.600)],
    "regnet_x_1_6gf": [("DY-Graph Tab. 1", 9.19, 1.602)],
    "regnet_y_600mf": [("Radosavovic et al. 2020", 6.1, 0.6)],
    "vit_b_32": [("ADN Tab. 1", 88.22, 2.95)],
}
TORCHVISION_WEIGHTS = {
    "resnet18": "ResNet18_Weights", "resnet34": "ResNet34_Weights", "resnet50": "ResNet50_Weights",
    "resnet101": "ResNet101_Weights", "resnext50_32x4d": "ResNeXt50_32X4D_Weights",
    "mobilenet_v2": "MobileNet_V2_Weights", "regnet_x_1_6gf": "RegNet_X_1_6GF_Weights",
    "vit_b_32": "ViT_B_32_Weights",
}

# The three recipes of `cifar10-resnet` (same for every row).
CIFAR_RECIPES = {
    "smoke": TrainConfig(epochs=1, batch_size=64, lr=0.05, milestones=(), weight_decay=1e-4, warmup_epochs=1),
    "mini": MINI_RECIPE,  # ResNet-20 only: the shared CPU recipe of every paper's mini rows
    # Shortened schedule for one GPU: 40 epochs cosine with 1 warm-up epoch (≈ 6 min for ResNet-110
    # on an H100 by our estimate), nesterov, wd 5e-4 (stronger regularisation for a short run).
    "short": TrainConfig(epochs=40, batch_size=128, lr=0.1, schedule="cosine", warmup_epochs=1,
                         nesterov=True, weight_decay=5e-4),
    # He et al. 2016: 164 epochs (64k iterations), batch 128, LR 0.1 ÷10 at 82 and 123, wd 1e-4; for
    # ResNet-110 they warm up at LR 0.01 for ~400 iterations: we warm every depth up linearly for one
    # epoch (391 iterations).
    "paper": TrainConfig(epochs=164, batch_size=128, lr=0.1, milestones=(82, 123), weight_decay=1e-4,
                         warmup_epochs=1),
}


def headline(ctx: Context) -> dict[str, Run]:
    """The static ResNet-20, every paper's baseline at the mini depth: what `reproduce compare` measures."""
    config = CIFAR_RECIPES[ctx.preset]
    data = ctx.data("cifar10", batch_size=config.batch_size)
    return {"ResNet-20": ctx.train("ResNet-20", ModelSpec(HubBackbone, "resnet20_cifar", num_classes=data.num_classes),
                                   data, config)}


def run_cifar10_resnet(ctx: Context) -> list[Cell]:
    """ResNet-20/32/56/110 on CIFAR-10: params, GMACs, test error beside He et al. 2016."""
    config = CIFAR_RECIPES[ctx.preset]
    data = ctx.data("cifar10", batch_size=config.batch_size)
    comparable = ctx.full_training
    cells = []
    depths = (MINI_DEPTH,) if ctx.preset == "mini" else tuple(HE2016_CIFAR10)
    for depth in depths:
        paper_params, paper_error = HE2016_CIFAR10[depth]
        row = f"ResNet-{depth}"
        result = ctx.train(row, ModelSpec(HubBackbone, f"resnet{depth}_cifar", num_classes=data.num_classes),
                           data, config)
        model = result.model
        cells.append(Cell(row, "Params", paper_params, count_params(model) / 1e6, "M"))
        cells.append(Cell(row, "MACs", None, model_macs(model, data.input_size) / 1e9, "G"))
        error = 100 - result.history[-1]["test_top1"]
        cells.append(Cell(row, "Error", paper_error, error, "%", comparable))
        ctx.extra.setdefault("epoch_seconds", {})[row] = [r["epoch_seconds"] for r in result.history]
    return cells


def run_imagenet_backbones(ctx: Context) -> list[Cell]:
    """Params and GMACs of every ImageNet backbone beside the papers' quotes and torchvision's metadata."""
    from torchvision import models

    cells = []
    for name, quotes in BACKBONE_QUOTES.items():
        model = HubBackbone(name)
        params, macs = count_params(model) / 1e6, model_macs(model, input_size(name)) / 1e9
        for source, paper_params, paper_macs in quotes:
            row = f"{name} ({source})"
            cells.append(Cell(row, "Params", paper_params, params, "M"))
            note = ("the paper's count leaves out nn.MultiheadAttention entirely (projections and "
                    "attention products); adn/README.md shows the arithmetic") if name == "vit_b_32" else ""
            cells.append(Cell(row, "MACs", paper_macs, macs, "G", note=note))
        if name in TORCHVISION_WEIGHTS:
            meta = getattr(models, TORCHVISION_WEIGHTS[name]).DEFAULT.meta
            row = f"{name} (torchvision metadata)"
            cells.append(Cell(row, "Params", meta["num_params"] / 1e6, params, "M"))
            cells.append(Cell(row, "MACs", meta["_ops"], macs, "G"))
    return cells


TARGETS = {
    "cifar10-resnet": Target("baselines", "cifar10-resnet",
                             "He et al. 2016 CIFAR-10 ResNets (Table 6)", run_cifar10_resnet, data=CIFAR10),
    "imagenet-backbones": Target("baselines", "imagenet-backbones",
                                 "ImageNet backbones: params and MACs vs the papers' quotes", run_imagenet_backbones),
}
