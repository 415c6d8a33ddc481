"""RDI-Net's own numbers (Tables 2–3, Figs. 5–7 text) and the targets that reproduce them.

Cost convention. The paper's "GFLOPs" are 2 × MACs: the full CIFAR ResNet-110 is 0.253 GMACs
(our count, FlopCounterMode / 2), yet Tables 2–3 give dynamic RDI-Net110s at up to 0.31 "GFLOPs",
and Sec. 4.2 an RDI-Net50 at 6.62 "GFLOPs" against ResNet-50's 4.09 GMACs: values above the full
network are impossible as MACs, and as 2 × MACs they are 49–61 % of ResNet-110 (0.506) and 81 % of
ResNet-50 — in line with the execution rates the paper describes. Every comparison below shows
ours in that convention (2 × GMACs) beside the paper's number and, in a column of its own, in GMACs.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from common.data import DataBundle
from common.dynamic import decisions, expected_macs_of, macs_profile, set_mode
from common.hub import HubBackbone
from common.metrics import accuracy, count_params, expected_macs, model_macs
from common.reproduction import CIFAR10, MINI_DEPTH, MINI_RECIPE, Cell, Context, Target
from common.runs import ModelSpec, Run
from common.train import Method, TrainConfig

from . import create_model
from .method import RDIMethod

PAPER_FLOPS_PER_MAC = 2  # the paper's "GFLOPs" = 2 × GMACs (see the module docstring)
FULL_RESNET110_GMACS = 0.253  # our count of the plain CIFAR ResNet-110, the reference for the check
CONVERTED = "the paper's GFLOPs are 2 × MACs: ours is shown in that convention and, beside it, in GMACs"

# Table 2 (CIFAR-10/100, ResNet-110): (USW, R-R, SRM) → {dataset: (GFLOPs, top-1 %)}.
TABLE2 = {
    (False, False, False): {"cifar10": (0.30, 93.21), "cifar100": (0.29, 70.32)},
    (True, False, False): {"cifar10": (0.28, 93.52), "cifar100": (0.27, 70.81)},
    (True, True, False): {"cifar10": (0.31, 94.57), "cifar100": (0.30, 73.71)},
    (True, True, True): {"cifar10": (0.25, 95.06), "cifar100": (0.26, 74.11)},
}
# Table 3 (CIFAR-10, ResNet-110, no SRM, no USW): propagation → (GFLOPs, top-1 %).
TABLE3 = {1.0: (0.30, 93.81), 0.5: (0.31, 94.87), 0.25: (0.27, 94.12), 0.0: (0.30, 93.21), "auto": (0.28, 94.19)}
# Sec. 4.2 / Fig. 6(c): the highest-accuracy ImageNet points (GFLOPs, top-1 %).
IMAGENET = {"rdinet50": (6.62, 77.01), "rdinet101": (11.4, 77.68)}
# Sec. 4.3 / Fig. 7(b): α = 0.2 gives 95.06 % at 0.26 GFLOPs; Fig. 7(a): all r at about 0.30 GFLOPs,
# accuracy rising with r, then falling for r > 6 (no values printed).
FIG7_ALPHA = {0.2: (0.26, 95.06)}
FIG7_R_GFLOPS = 0.30
# Fig. 5 captions: RDI-Net110 at (1 − reduction) of ResNet-110's cost, with this accuracy gain.
FIG5_CLAIMS = {"cifar10": (0.73, 0.13), "cifar100": (0.65, 0.42)}

# Defaults of the paper (Sec. 4.1) and our choices where it is silent (README, "Choices").
D, GAMMA, R, ALPHA, MARGIN = 256, 0.5, 2, 0.2, 0.5
TABLE_TARGET_RATE = 0.6  # t of the table rows (not printed): gives the vanilla row's 0.30 GFLOPs


@dataclass(frozen=True)
class Recipe:
    """Optimisation of one row: `config` for the main phase, plus USW epochs before it."""
    config: TrainConfig
    warmup_epochs: int
    train_limit: int | None = None
    test_limit: int | None = None


RECIPES = {
    # CPU minutes on the packaged sample: 32 train / 32 test images, one epoch per phase.
    "smoke": Recipe(TrainConfig(epochs=1, batch_size=16, lr=0.05, milestones=(), weight_decay=1e-4),
                    warmup_epochs=1, train_limit=32, test_limit=32),
    # The shared CPU recipe of every paper's mini rows, at ResNet-20 depth; USW rows add one warm-up
    # epoch before it (the paper: 30 before 320, about the same share).
    "mini": Recipe(MINI_RECIPE, warmup_epochs=1),
    # One GPU, full CIFAR-10: the paper's recipe shortened ~10× (3 USW + 30 epochs, LR ÷10 at the
    # same fractions 250/320 and 300/320 of the main phase).
    "short": Recipe(TrainConfig(epochs=30, batch_size=256, lr=0.1, milestones=(23, 28), weight_decay=1e-4),
                    warmup_epochs=3),
    # Sec. 4.1 + the authors' code: 30 USW epochs, then 320 epochs, batch 256, SGD 0.1, momentum
    # 0.9, wd 1e-4, LR ÷10 at 250 and 300.
    "paper": Recipe(TrainConfig(epochs=320, batch_size=256, lr=0.1, milestones=(250, 300), weight_decay=1e-4),
                    warmup_epochs=30),
}
# Sec. 4.1 + the authors' code: 10 USW epochs, then 90 epochs, batch 256, LR 0.1 ÷10 every 30.
IMAGENET_RECIPE = Recipe(TrainConfig(epochs=90, batch_size=256, lr=0.1, milestones=(30, 60), weight_decay=1e-4),
                         warmup_epochs=10)

T_SWEEP = {"smoke": (0.4, 0.7), "mini": (0.3, 0.45, 0.6, 0.75), "short": (0.3, 0.45, 0.6, 0.75), "paper": (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)}
R_SWEEP = {"smoke": (1, 4), "mini": (1, 2, 4, 6, 8), "short": (1, 2, 4, 6, 8), "paper": (1, 2, 3, 4, 5, 6, 7, 8)}
ALPHA_SWEEP = {"smoke": (0.0, 0.2), "mini": (0.0, 0.1, 0.2, 0.5), "short": (0.0, 0.1, 0.2, 0.5), "paper": (0.0, 0.05, 0.1, 0.2, 0.5, 1.0)}

NOT_HERE = "no CIFAR-100 on this project's machines; runs on the paper preset given --data-dir"


@dataclass
class RowResult:
    top1: float
    gmacs: float
    rates: list[float]


def _data(ctx: Context, dataset: str = "cifar10", recipe: Recipe | None = None):
    recipe = recipe or RECIPES[ctx.preset]
    return ctx.data(dataset, batch_size=recipe.config.batch_size, train_limit=recipe.train_limit,
                    test_limit=recipe.test_limit)


def _depth(ctx: Context) -> int:
    """The CIFAR ResNet depth of the preset's rows: the paper's 110, or 20 on `mini`."""
    return MINI_DEPTH if ctx.preset == "mini" else 110


def train_rdinet(ctx: Context, row: str, data: DataBundle, name: str | None = None, *, target: float = TABLE_TARGET_RATE,
                 alpha: float = 0.0, usw: bool = False, recipe: Recipe | None = None, **model_kwargs) -> RowResult:
    """Train one RDI-Net row (USW if asked, then Eq. 16) and measure top-1 and expected MACs."""
    recipe = recipe or RECIPES[ctx.preset]
    name = name or f"rdinet{_depth(ctx)}"
    spec = ModelSpec(create_model, name, num_classes=data.num_classes, **{"d": D, "r": R, "gamma": GAMMA, **model_kwargs})
    warm = recipe.warmup_epochs if usw else 0
    config = replace(recipe.config, epochs=recipe.config.epochs + warm,
                     milestones=tuple(m + warm for m in recipe.config.milestones))
    method = RDIMethod(target, alpha, warm, MARGIN, dataset=data.name)
    result = ctx.train(row, spec, data, config, method)
    taken = result.evaluation["decisions"]
    macs = expected_macs_of(result.model, data.input_size, taken)
    record = {"target_rate": target, "alpha": alpha, "usw_epochs": warm, **model_kwargs,
              "macs": macs.summary(), "router_macs": macs.overhead, "rates": macs.rates.tolist(),
              "epoch_seconds": [h["epoch_seconds"] for h in result.history]}
    ctx.extra.setdefault("rows", {})[row] = record
    # top-1 of the final test-set evaluation (re-run by this code when the run is reused): what `reproduce eval` gives
    top1 = accuracy(result.evaluation["logits"], result.evaluation["labels"], (1,))[1]
    return RowResult(top1, macs.mean / 1e9, macs.rates.tolist())


def headline(ctx: Context) -> dict[str, Run]:
    """Full RDI-Net (USW, relational routers, SRM; t = 0.6) at the preset's depth: what `reproduce compare` measures."""
    row = f"RDI-Net{_depth(ctx)}"
    train_rdinet(ctx, row, _data(ctx), usw=True, alpha=ALPHA)
    return {row: ctx.runs[row]}


def train_resnet(ctx: Context, row: str, data: DataBundle) -> RowResult:
    """The static ResNet baseline of the preset's depth, trained with the main-phase recipe."""
    backbone = f"resnet{_depth(ctx)}_cifar"
    spec = ModelSpec(HubBackbone, backbone, num_classes=data.num_classes)
    result = ctx.train(row, spec, data, RECIPES[ctx.preset].config, Method())
    return RowResult(result.history[-1]["test_top1"], model_macs(result.model, data.input_size) / 1e9, [])


def _cost_cells(row: str, prefix: str, paper: tuple[float, float] | None, ours: RowResult | None,
                comparable: bool, note: str = "") -> list[Cell]:
    """GFLOPs (the paper's 2 × MACs convention), GMACs and top-1 of one row; only printed numbers in the paper slot."""
    gflops, top1 = paper if paper else (None, None)
    comparable = comparable and ours is not None  # expected MACs depend on the training, too
    return [Cell(row, f"{prefix}GFLOPs", gflops, None if ours is None else PAPER_FLOPS_PER_MAC * ours.gmacs,
                 "2 × GMACs", comparable, "; ".join(n for n in (CONVERTED, note) if n)),
            Cell(row, f"{prefix}GMACs", None, None if ours is None else ours.gmacs, "G", comparable),
            Cell(row, f"{prefix}Top-1", top1, None if ours is None else ours.top1, "%", comparable, note)]


def run_table2(ctx: Context) -> list[Cell]:
    """Table 2: USW / relational routers / SRM ablation on ResNet-110 (CIFAR-10; CIFAR-100 on `paper`)."""
    comparable = ctx.full_training
    cells = []
    datasets = ["cifar10", "cifar100"] if ctx.preset == "paper" else ["cifar10"]
    data = {name: _data(ctx, name) for name in datasets}
    for (usw, relational, srm), paper in TABLE2.items():
        row = "vanilla" + "".join(f" + {n}" for n, on in (("USW", usw), ("R-R", relational), ("SRM", srm)) if on)
        for dataset, label in (("cifar10", "CIFAR-10 "), ("cifar100", "CIFAR-100 ")):
            ours = None
            if dataset in data:
                ours = train_rdinet(ctx, f"{row} {dataset}", data[dataset], r=R if relational else 0,
                                    alpha=ALPHA if srm else 0.0, usw=usw)
            cells += _cost_cells(row, label, paper[dataset], ours, comparable,
                                 "" if dataset in data else NOT_HERE)
    return cells


def run_table3(ctx: Context) -> list[Cell]:
    """Table 3: decay rate γ of the relation graph, and Auto (cosine-similarity edges); no SRM, no USW."""
    comparable = ctx.full_training
    data = _data(ctx)
    cells = []
    for key, paper in TABLE3.items():
        row = "Auto" if key == "auto" else f"γ = {key}"
        kwargs = {"relation": "auto"} if key == "auto" else {"gamma": key}
        cells += _cost_cells(row, "", paper, train_rdinet(ctx, row, data, **kwargs), comparable)
    return cells


def _plot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(ctx: Context, fig, name: str, title: str) -> None:
    """Title (marked when not comparable), lay out, write `<stem>-<name>.png`, close."""
    fig.suptitle(f"{title} — preset {ctx.preset}" + (" (not comparable)" if ctx.preset == "smoke" else ""),
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(ctx.figure_path(name), dpi=120)
    _plot().close(fig)


def run_fig5(ctx: Context) -> list[Cell]:
    """Fig. 5(a): top-1 vs expected GMACs over target rates t — RDI-Net110, vanilla routers, ResNet-110."""
    comparable = ctx.full_training
    data = _data(ctx)
    depth = _depth(ctx)
    cells, curves = [], {f"RDI-Net{depth}": [], f"Vanilla{depth}": []}
    for t in T_SWEEP[ctx.preset]:
        for label, kwargs in ((f"RDI-Net{depth}", {"usw": True, "alpha": ALPHA}), (f"Vanilla{depth}", {"r": 0})):
            row = f"{label} t = {t}"
            ours = train_rdinet(ctx, row, data, target=t, **kwargs)
            curves[label].append((ours.gmacs, ours.top1))
            cells += _cost_cells(row, "", None, ours, comparable, "paper prints curves only")
    resnet = train_resnet(ctx, f"ResNet-{depth}", data)
    cells += _cost_cells(f"ResNet-{depth}", "", None, resnet, comparable, "paper prints curves only")
    plt = _plot()
    fig, ax = plt.subplots(figsize=(5, 4))
    for label, points in curves.items():
        xs, ys = zip(*sorted(points))
        ax.plot(xs, ys, "o-", label=f"{label} (ours)")
    ax.plot([resnet.gmacs], [resnet.top1], "k*", ms=10, label=f"ResNet-{depth} (ours)")
    gflops, top1 = TABLE2[(True, True, True)]["cifar10"]
    ax.plot([gflops / PAPER_FLOPS_PER_MAC], [top1], "rx", ms=9, label="RDI-Net110, paper Tab. 2")
    ax.set_xlabel("expected GMACs per image")
    ax.set_ylabel("CIFAR-10 top-1 (%)")
    ax.legend(fontsize=8)
    _save(ctx, fig, "accuracy-vs-gmacs", "Fig. 5(a)")
    return cells


def run_fig7(ctx: Context) -> list[Cell]:
    """Fig. 7: (a) number r of preceding routers (no SRM, no USW); (b) weight α of L_rank (full RDI-Net)."""
    comparable = ctx.full_training
    data = _data(ctx)
    cells, by_r, by_alpha = [], [], []
    for r in R_SWEEP[ctx.preset]:
        ours = train_rdinet(ctx, f"r = {r}", data, r=r)
        by_r.append((r, ours))
        cells += _cost_cells(f"r = {r}", "", (FIG7_R_GFLOPS, None), ours, comparable,
                             "paper: 'about 0.30 GFLOPs' for every r; accuracies only plotted")
    for alpha in ALPHA_SWEEP[ctx.preset]:
        ours = train_rdinet(ctx, f"α = {alpha}", data, usw=True, alpha=alpha)
        by_alpha.append((alpha, ours))
        cells += _cost_cells(f"α = {alpha}", "", FIG7_ALPHA.get(alpha), ours, comparable)
    plt = _plot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, points, name in ((axes[0], by_r, "r"), (axes[1], by_alpha, "α")):
        xs = [p[0] for p in points]
        ax.plot(xs, [p[1].top1 for p in points], "o-", color="C0")
        ax.set_xlabel(name)
        ax.set_ylabel("top-1 (%)", color="C0")
        twin = ax.twinx()
        twin.plot(xs, [p[1].gmacs for p in points], "s--", color="C1")
        twin.set_ylabel("expected GMACs", color="C1")
    axes[0].set_title("(a) preceding routers r")
    axes[1].set_title("(b) weight α of L_rank")
    _save(ctx, fig, "r-and-alpha", f"Fig. 7, CIFAR-10 RDI-Net{_depth(ctx)}")
    return cells


def run_fig9(ctx: Context) -> list[Cell]:
    """Fig. 9: executing rate of every block, RDI-Net vs vanilla routers (CIFAR-10 ResNet-110 here)."""
    comparable = ctx.full_training
    data = _data(ctx)
    depth = _depth(ctx)
    rdi = train_rdinet(ctx, f"RDI-Net{depth}", data, usw=True, alpha=ALPHA)
    vanilla = train_rdinet(ctx, f"Vanilla{depth}", data, r=0)
    cells = []
    for row, ours in ((f"RDI-Net{depth}", rdi), (f"Vanilla{depth}", vanilla)):
        cells += _cost_cells(row, "", None, ours, comparable, "paper's Fig. 9 is ResNet-50 on ImageNet")
        cells.append(Cell(row, "mean executing rate", None, sum(ours.rates) / len(ours.rates), "", comparable))
    plt = _plot()
    fig, ax = plt.subplots(figsize=(10, 3.4))
    blocks = torch.arange(1, len(rdi.rates) + 1)
    ax.bar(blocks - 0.2, rdi.rates, width=0.4, label=f"RDI-Net{depth}")
    ax.bar(blocks + 0.2, vanilla.rates, width=0.4, label=f"Vanilla{depth}")
    ax.set_xlabel("block")
    ax.set_ylabel("executing rate")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    _save(ctx, fig, "executing-rates", f"Fig. 9 on CIFAR-10 ResNet-{depth}")
    return cells


def run_imagenet(ctx: Context) -> list[Cell]:
    """ImageNet RDI-Net50/101 (Figs. 5c/6c): params, routers, expected GMACs; trained on `paper` only."""
    cells = []
    data = ctx.data("imagenet", batch_size=IMAGENET_RECIPE.config.batch_size) if ctx.preset == "paper" else None
    for name, (paper_gflops, paper_top1) in IMAGENET.items():
        row = {"rdinet50": "RDI-Net50", "rdinet101": "RDI-Net101"}[name]
        torch.manual_seed(ctx.seed)
        model = create_model(name, d=D, r=R, gamma=GAMMA)
        routers = sum(count_params(router) for router in model.routers())
        cells.append(Cell(row, "Params", None, count_params(model) / 1e6, "M"))
        cells.append(Cell(row, "Router params", None, routers / 1e6, "M"))
        always, overhead, branch = macs_profile(model, model.input_size)
        full = (always + overhead + int(branch.sum())) / 1e9
        cells.append(Cell(row, "GMACs, all blocks", None, full, "G"))
        cells.append(Cell(row, "Router GMACs", None, overhead / 1e9, "G"))
        paper_gmacs = paper_gflops / PAPER_FLOPS_PER_MAC
        implied = (paper_gmacs * 1e9 - always - overhead) / float(branch.sum())
        ctx.extra.setdefault("implied_rate", {})[row] = implied
        if data is not None:
            ours = train_rdinet(ctx, row, data, name, target=round(implied, 2), usw=True, alpha=ALPHA,
                                recipe=IMAGENET_RECIPE)
            cells.append(Cell(row, "Expected GFLOPs", paper_gflops, PAPER_FLOPS_PER_MAC * ours.gmacs, "2 × GMACs",
                              True, CONVERTED))
            cells.append(Cell(row, "Top-1", paper_top1, ours.top1, "%"))
            continue
        # No ImageNet here: the counting path on stand-in images through the untrained routers.
        torch.manual_seed(ctx.seed)
        model.eval()
        set_mode(model, "skip")
        with torch.no_grad():
            model(torch.rand(4, *model.input_size))
        ours = expected_macs(always, overhead, branch, decisions(model)).mean / 1e9
        cells.append(Cell(row, "Expected GFLOPs", paper_gflops, PAPER_FLOPS_PER_MAC * ours, "2 × GMACs", False,
                          f"untrained routers on random stand-in images (no ImageNet here); {CONVERTED}; "
                          f"the paper's cost means executing {100 * implied:.0f} % of block MACs"))
        cells.append(Cell(row, "Top-1", paper_top1, None, "%", False, "no ImageNet here: paper preset only"))
    return cells


TARGETS = {
    "table2": Target("rdinet", "table2", "RDI-Net Table 2: USW / relational router / SRM ablation, ResNet-110", run_table2, data=CIFAR10),
    "table3": Target("rdinet", "table3", "RDI-Net Table 3: decay rate γ and Auto edges, CIFAR-10 ResNet-110", run_table3, data=CIFAR10),
    "fig5": Target("rdinet", "fig5", "RDI-Net Fig. 5(a): CIFAR-10 accuracy vs GMACs over target rates", run_fig5, data=CIFAR10),
    "fig7": Target("rdinet", "fig7", "RDI-Net Fig. 7: number of preceding routers r and weight α", run_fig7, data=CIFAR10),
    "fig9": Target("rdinet", "fig9", "RDI-Net Fig. 9: executing rate per block, RDI-Net vs vanilla", run_fig9, data=CIFAR10),
    "imagenet": Target("rdinet", "imagenet", "RDI-Net Figs. 5(c)/6(c): ImageNet RDI-Net50/101 params and GMACs",
                       run_imagenet, data={"paper": "imagenet"}),
}
