"""Adanet's tables and figures: the paper's numbers (as data, once) and the targets that reproduce them.

`python -m reproduce adanet <target> --preset {smoke,short,paper}`; `python -m reproduce list`.
Every number printed as "ours" comes from running the code below.
"""
from __future__ import annotations

import torch

from common.backbones import create_backbone, residual_stages
from common.dynamic import UNDECIDED, undecided
from common.hub import HubBackbone
from common.metrics import count_params, model_macs
from common.reproduction import CIFAR10, MINI_RECIPE, Cell, Context, Target
from common.runs import ModelSpec, Run
from common.train import Method, TrainConfig, uses_bf16

from .experiments import (ANIMALS, CIFAR10_CLASSES, Panel, attack_direction, error, evaluate_mode,
                          execution_probabilities, expected_macs_over, fgsm, forced_macs, jpeg,
                          latency_benchmark, macs_at_rates, plot_attack, plot_heatmaps, plot_histograms,
                          plot_rates_before_after, plot_trajectories, predict, rates_by_class, scaled_macs,
                          test_pixels, gate_profile)
from .losses import AdanetMethod, imagenet_targets
from .model import Adanet, create_model

PAPER = "adanet"

# ------------------------------------------------------------------ the paper's numbers

# Table 1 (CIFAR-10): error %, params M, "GFLOPs".
TABLE1: dict[str, dict[str, float]] = {
    "ResNet 110": {"Error": 6.61, "Params": 1.7, "GFLOPs": 0.5},
    "Pre-ResNet": {"Error": 6.37, "Params": 1.7, "GFLOPs": 0.5},
    "Stochastic Depth": {"Error": 5.25, "Params": 1.7, "GFLOPs": 0.5},
    "Adanet 110": {"Error": 5.76, "Params": 1.78, "GFLOPs": 0.41},
    "Adanet 110*": {"Error": 5.14, "Params": 1.78, "GFLOPs": 0.5},
    "Wide ResNet (4x width)": {"Error": 4.53, "Params": 8.7, "GFLOPs": 2.6},
    "Wide ResNet (10x width)": {"Error": 4.0, "Params": 36.5, "GFLOPs": 10.49},
    "Wide Adanet 89": {"Error": 4.46, "Params": 36.1, "GFLOPs": 1.6},
    "Wide Adanet 89*": {"Error": 3.88, "Params": 36.1, "GFLOPs": 2.13},
}
# What Table 1's "GFLOPs" count, per row: ResNet 110 = 0.5 = 2 × 0.253 GMACs, so the ResNet-110
# rows count 2 × MACs; the wide rows fit MACs (Wide Adanet 89* 2.13 vs 2.22 GMACs; 2 × MACs would be
# 4.45) — `table1` measures and prints this check. The paper-only rows are not ours to convert.
GFLOPS_FACTOR: dict[str, int] = {"ResNet 110": 2, "Adanet 110": 2, "Adanet 110*": 2,
                                 "Wide Adanet 89": 1, "Wide Adanet 89*": 1,
                                 "ResNet 20": 2, "Adanet 20": 2, "Adanet 20*": 2,  # mini: CIFAR convention
                                 "Stochastic Depth 20": 2}

# Table 2 (ImageNet): top-1 / top-5 error %, params M, GFLOPs (= GMACs, as every ImageNet table).
TABLE2: dict[str, dict[str, float]] = {
    "ResNet 18": {"Top 1": 30.24, "Top 5": 10.92, "Params": 11.69, "GFLOPs": 1.8},
    "ResNet 34": {"Top 1": 26.69, "Top 5": 8.58, "Params": 21.8, "GFLOPs": 3.6},
    "ResNet 50": {"Top 1": 24.7, "Top 5": 7.8, "Params": 25.56, "GFLOPs": 3.8},
    "Adanet 50": {"Top 1": 25.38, "Top 5": 7.94, "Params": 26.56, "GFLOPs": 2.57},
}
# Sec. 4.2 / Fig. 4: Adanet 50 executes 10.81 ± 1.11 of its 16 layers on the ImageNet validation set.
ADANET50_EXECUTED = (10.81, 1.11)
# Sec. 3.2 / 4.1 / 4.2: gate overhead in % of the network's computation.
GATE_OVERHEAD_PCT = {"Adanet 110": 0.01, "Wide Adanet 89": 0.14, "Adanet 50": 0.04}
# Sec. 4.3 / Fig. 8: FGSM strength of Fig. 8 and Adanet 50's top-1 before the attack (%).
FIG8_EPS, FIG8_TOP1_BEFORE = 0.047, 74.62
# Fig. 7's ε axis is not in the text; we sweep 0 … 16/255, which holds Fig. 8's 0.047 (= 12/255).
FGSM_EPS = [0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255, 12 / 255, 16 / 255]

# ------------------------------------------------------------------ recipes

# Sec. 4.1: SGD, momentum 0.9, wd 5e-4, 350 epochs, batch 256, LR 0.1 ÷10 at 150 and 250; gates
# LR 2e-4 ×0.4 at the same milestones; λ = 2, t = 0.6.
CIFAR_RECIPES = {
    "smoke": TrainConfig(epochs=1, batch_size=16, lr=0.1, milestones=(), weight_decay=5e-4),
    "mini": MINI_RECIPE,  # the shared CPU recipe: ResNet 20 and Adanet 20 (the wide rows are left out)
    # Full CIFAR-10, 30 epochs with the paper's milestones scaled (150/350, 250/350 of the run).
    "short": TrainConfig(epochs=30, batch_size=256, lr=0.1, milestones=(13, 21), weight_decay=5e-4),
    "paper": TrainConfig(epochs=350, batch_size=256, lr=0.1, milestones=(150, 250), weight_decay=5e-4),
}
CIFAR_LIMITS = {"smoke": {"train_limit": 32, "test_limit": 64}, "mini": {}, "short": {}, "paper": {}}
RATE_IMAGES = {"smoke": 32, "mini": 10_000, "short": 10_000, "paper": 10_000}  # training images for the "*" rates
# The CIFAR rows each preset trains (row → model name); the first is the static baseline, the rest gated.
CIFAR_ROWS = {"mini": {"ResNet 20": "resnet20", "Adanet 20": "adanet20"}}
# Static rows trained beside them on a preset (row → model name). mini's Stochastic Depth 20 shows what dropping
# 28 % of a ResNet 20's blocks at random in training (the mean of 1 − p_l) costs on the shared recipe; the paper
# quotes Huang et al.'s ResNet 110.
REFERENCE_ROWS = {"mini": {"Stochastic Depth 20": "stochastic_depth20"}}
PAPER_CIFAR_ROWS = {"ResNet 110": "resnet110", "Adanet 110": "adanet110", "Wide Adanet 89": "wide_adanet89"}
CIFAR_METHOD = {"variant": "paper", "lam": 2.0, "target": 0.6}  # "paper": gates 2e-4 ×0.4, Eq. 8 summed
# mini: Eq. 8 summed as printed, the gates at the network's LR and schedule (the paper: 2e-4). At 2e-4 the gates of a
# 30-epoch run (batch 128) barely move from their start: run d5a613983712 sampled a rate of 0.617 in training but
# executed 0.709 of its layers by argmax at test time (target 0.6). The authors' code (network LR, Eq. 8 ÷ L) pushes
# 9 layers too weakly: run 9c2db329d981 sampled 0.69 from epoch 6 to 16 and executed 0.72 at test time at epoch 16.
# The mini recipe itself at 2e-4 (run 3662ece16aef, 60 epochs, batch 64) executed 0.69 at test time at epoch 28.
MINI_METHOD = {**CIFAR_METHOD, "gate_lr": MINI_RECIPE.lr}

# Sec. 4.2: batch 256, momentum 0.9, wd 1e-4, 130 epochs, LR 0.1 ÷10 every 40; gates as on CIFAR;
# per-layer targets of the authors' README (layers with target 1 left out of Eq. 8).
IMAGENET_RECIPES = {
    "short": TrainConfig(epochs=16, batch_size=256, lr=0.1, milestones=(5, 10, 15), weight_decay=1e-4),
    "paper": TrainConfig(epochs=130, batch_size=256, lr=0.1, milestones=(40, 80, 120), weight_decay=1e-4),
}
IMAGENET_METHOD = {"variant": "paper", "lam": 2.0, "target": imagenet_targets(0.6), "leave_out_full": True}

LATENCY_RATE = 0.6
LATENCY_REPEATS = {"smoke": (2, 5, 3), "mini": (5, 20, 5), "short": (5, 20, 5), "paper": (5, 20, 5)}  # (warm-up, repeats, rounds)


def _cifar(ctx: Context):
    config = CIFAR_RECIPES[ctx.preset]
    return config, ctx.data("cifar10", batch_size=config.batch_size, **CIFAR_LIMITS[ctx.preset])


def _rows(ctx: Context) -> dict[str, str]:
    """The preset's CIFAR rows: row → model name; the first is the static ResNet."""
    return CIFAR_ROWS.get(ctx.preset, PAPER_CIFAR_ROWS)


def _static_row(ctx: Context) -> str:
    return next(iter(_rows(ctx)))


def _gated_names(ctx: Context) -> list[str]:
    return list(_rows(ctx))[1:]


def _train_cifar(ctx: Context, row: str, data, config):
    """A trained CIFAR row of Table 1: one run per key, shared by the figures (the run layer reuses it)."""
    name = _rows(ctx)[row]
    if row == _static_row(ctx):  # the plain ResNet, specified as every paper's baseline row (one shared run)
        return ctx.train(row, ModelSpec(HubBackbone, f"{name}_cifar", num_classes=data.num_classes), data, config)
    method = MINI_METHOD if ctx.preset == "mini" else CIFAR_METHOD
    return ctx.train(row, ModelSpec(create_model, name), data, config, AdanetMethod(**method))


def headline(ctx: Context) -> dict[str, Run]:
    """The preset's first gated CIFAR row of Table 1 (Adanet 20 on mini): what `reproduce compare` measures."""
    config, data = _cifar(ctx)
    row = _gated_names(ctx)[0]
    return {row: _train_cifar(ctx, row, data, config)}


def _accuracy_note(ctx: Context, row: str) -> str:
    gates = ", gates at the network's LR" if "Adanet" in row else ""
    if row in REFERENCE_ROWS.get(ctx.preset, {}):
        return (f"{ctx.preset}: ResNet-20 depth, p_L = 0.5 (linear decay), the shared {MINI_RECIPE.epochs}-epoch CPU "
                f"recipe (the paper quotes Huang et al.'s ResNet 110)")
    return {"smoke": "smoke: trained 1 epoch on 32 images, tested on 64 — not comparable",
            "mini": f"mini: ResNet-20 depth, the shared {MINI_RECIPE.epochs}-epoch CPU recipe{gates} (the paper: "
                    f"depth 110, 350 epochs{', gates at 2e-4' if gates else ''})",
            "short": "short: full CIFAR-10, 30 epochs (the paper: 350)", "paper": ""}[ctx.preset]


# ------------------------------------------------------------------ Table 1

def _table1_cells(ctx: Context, row: str, err: float, params: int, macs: float, executed: float | None,
                  gated: bool) -> list[Cell]:
    """One row of Table 1. `gated`: MACs and executed layers come from the trained gates' decisions."""
    paper = TABLE1.get(row, {"Error": None, "Params": None, "GFLOPs": None})
    factor = GFLOPS_FACTOR[row]
    convention = "2 × MACs" if factor == 2 else "MACs"
    trained = ctx.full_training
    derived = ("" if paper["GFLOPs"] is None else
               f"the paper's {paper['GFLOPs']} GFLOPs count 2 × MACs: {paper['GFLOPs'] / 2:g} GMACs" if factor == 2
               else f"the paper's {paper['GFLOPs']} GFLOPs count MACs")
    return [
        Cell(row, "Error", paper["Error"], err, "%", trained, _accuracy_note(ctx, row)),
        Cell(row, "Params", paper["Params"], params / 1e6, "M"),
        Cell(row, "GFLOPs", paper["GFLOPs"], factor * macs / 1e9, "paper's convention", trained or not gated,
             note=f"this row's paper value counts {convention}" + ("; expected over the test set" if gated else "")),
        Cell(row, "GMACs", None, macs / 1e9, "G", trained or not gated, note=derived),
        Cell(row, "Executed layers", None, None if executed is None else 100 * executed, "%", trained or not gated),
    ]


def _gflops_convention(ctx: Context) -> str:
    """Which count Table 1's "GFLOPs" are: measured against ResNet 110 and Wide Adanet 89*."""
    resnet = model_macs(create_backbone("resnet110_cifar"), (3, 32, 32)) / 1e9
    wide = create_backbone("bottleneck89_cifar")
    wide_macs = model_macs(wide, (3, 32, 32)) / 1e9
    for stage in residual_stages(wide):  # He et al.'s original bottleneck: stride on the first 1×1
        for block in stage.blocks():
            if block.conv2.stride == (2, 2):
                block.conv1.stride, block.conv2.stride = (2, 2), (1, 1)
    wide_v1 = model_macs(wide, (3, 32, 32)) / 1e9
    check = {"ResNet 110 GMACs": resnet, "ResNet 110 2×GMACs": 2 * resnet,
             "bottleneck89 GMACs (torchvision, stride on 3×3)": wide_macs,
             "bottleneck89 GMACs (stride on first 1×1)": wide_v1, "bottleneck89 2×GMACs": 2 * wide_macs}
    ctx.extra["gflops_convention"] = check
    paper_resnet, paper_wide = TABLE1["ResNet 110"]["GFLOPs"], TABLE1["Wide Adanet 89*"]["GFLOPs"]

    def off(ours: float, paper: float) -> str:
        return f"{100 * (ours - paper) / paper:+.1f} %"

    note = (f"ResNet 110 {paper_resnet} vs ours 2×MACs {2 * resnet:.3f} ({off(2 * resnet, paper_resnet)}), "
            f"MACs {resnet:.3f} ({off(resnet, paper_resnet)}); Wide Adanet 89* {paper_wide} vs ours MACs "
            f"{wide_macs:.3f} ({off(wide_macs, paper_wide)}), MACs with stride on the first 1×1 {wide_v1:.3f} "
            f"({off(wide_v1, paper_wide)}), 2×MACs {2 * wide_macs:.3f} ({off(2 * wide_macs, paper_wide)}): "
            f"the ResNet-110 rows count 2×MACs, the wide rows MACs")
    return note


def run_table1(ctx: Context) -> list[Cell]:
    """Table 1: CIFAR-10 error, parameters and GFLOPs of ResNet 110, Adanet 110(*), Wide Adanet 89(*)."""
    config, data = _cifar(ctx)
    cells: list[Cell] = []
    static = _static_row(ctx)
    result = _train_cifar(ctx, static, data, config)
    cells += _table1_cells(ctx, static, error(result.evaluation), count_params(result.model),
                           model_macs(result.model, (3, 32, 32)), None, gated=False)
    for row in _gated_names(ctx):
        result = _train_cifar(ctx, row, data, config)
        model: Adanet = result.model
        # The run's test-set evaluation, as trained (its precision) and deployed (real skipping: only the
        # layers with open gates run); expected MACs over its decisions.
        evaluation = result.evaluation
        taken = evaluation["decisions"]
        expected = expected_macs_over(model, model.input_size, taken)
        cells += _table1_cells(ctx, row, error(evaluation), count_params(model), expected.mean,
                               float(taken.mean()), gated=True)
        # "*": every layer executed, scaled by its expected execution rate (Sec. 4.1).
        rates = execution_probabilities(model, data, RATE_IMAGES[ctx.preset])
        model.set_rates(rates)
        starred = evaluate_mode(model, data, "scaled", Method(), bf16=uses_bf16(config))
        cells += _table1_cells(ctx, f"{row}*", error(starred), count_params(model), scaled_macs(model), 1.0,
                               gated=False)
        overhead = 100 * expected.overhead / float(expected.always + expected.block_macs.sum())
        cells.append(Cell(row, "Gate overhead", GATE_OVERHEAD_PCT.get(row), overhead, "% of MACs",
                          note="gate MACs over all layers' MACs (Sec. 3.2, 4.1 claim)"))
        ctx.extra[row] = {"expected_macs": expected.summary(), "gate_macs": expected.overhead,
                          "gate_overhead_pct": overhead,
                          "test_execution_rates": expected.rates.tolist(), "star_rates": rates.tolist()}
    for row, name in REFERENCE_ROWS.get(ctx.preset, {}).items():
        result = ctx.train(row, ModelSpec(create_model, name), data, config)
        cells += _table1_cells(ctx, row, error(result.evaluation), count_params(result.model),
                               model_macs(result.model, (3, 32, 32)), None, gated=False)
        ctx.extra[row] = {"survival": result.model.survival()}
    for row, paper in TABLE1.items():  # the rows the paper quotes from other work
        if row not in GFLOPS_FACTOR:
            cells += [Cell(row, "Error", paper["Error"], None, "%"), Cell(row, "Params", paper["Params"], None, "M"),
                      Cell(row, "GFLOPs", paper["GFLOPs"], None, "paper's convention")]
    note = _gflops_convention(ctx)
    for cell in cells:  # the measured check goes beside the paper's two anchors
        if cell.column == "GFLOPs" and cell.row in ("ResNet 110", "Wide Adanet 89*"):
            cell.note = f"{cell.note}. Convention check: {note}"
    return cells


# ------------------------------------------------------------------ Table 2

def run_table2(ctx: Context) -> list[Cell]:
    """Table 2: ImageNet ResNet 18/34/50 and Adanet 50 — params and GFLOPs exact; accuracy with ImageNet."""
    names = {"ResNet 18": "resnet18", "ResNet 34": "resnet34", "ResNet 50": "resnet50", "Adanet 50": "adanet50"}
    models, evaluations = {}, {}
    if ctx.preset != "smoke":  # the full recipe; needs ImageNet (--data-dir or the Hub)
        config = IMAGENET_RECIPES[ctx.preset]
        data = ctx.data("imagenet", batch_size=config.batch_size)
        for row, name in names.items():
            method = AdanetMethod(**IMAGENET_METHOD) if row == "Adanet 50" else Method()
            result = ctx.train(row, ModelSpec(create_model, name), data, config, method)
            models[row], evaluations[row] = result.model, result.evaluation
    else:
        torch.manual_seed(ctx.seed)
        models = {row: create_model(name) for row, name in names.items()}
    cells: list[Cell] = []
    size = (3, 224, 224)
    for row, model in models.items():
        paper = TABLE2[row]
        macs, note, trained_macs = model_macs(model, size), "", False
        if row == "ResNet 50":
            note = _v1_note()
        if row == "Adanet 50" and row in evaluations:
            macs = expected_macs_over(model, size, evaluations[row]["decisions"]).mean
            note, trained_macs = "expected MACs over the ImageNet validation set", True
        elif row == "Adanet 50":
            # No trained gates: no "ours" for Adanet 50's cost. What the paper's numbers imply goes in the note.
            layers = len(model.downsampling())
            at_mean = macs_at_rates(model, size, torch.full((layers,), ADANET50_EXECUTED[0] / layers))
            at_targets = macs_at_rates(model, size, torch.tensor(imagenet_targets(0.6)))
            ctx.extra["adanet50_macs_at_paper_mean_rate"] = at_mean
            ctx.extra["adanet50_macs_at_author_targets"] = at_targets
            resnet50 = TABLE2["ResNet 50"]["GFLOPs"]
            macs = None
            note = (f"no trained gates here. Counted with every layer at the paper's mean rate "
                    f"{ADANET50_EXECUTED[0]}/{layers} (Sec. 4.2): {at_mean / 1e9:.3f} GMACs; at the authors' "
                    f"per-layer targets: {at_targets / 1e9:.3f} GMACs. The paper's {paper['GFLOPs']} is ResNet 50's "
                    f"{resnet50} × {ADANET50_EXECUTED[0]}/16 = {resnet50 * ADANET50_EXECUTED[0] / 16:.3f}: the whole "
                    f"network scaled by the fraction of layers executed, in He et al.'s count (see ResNet 50)")
        accuracy = {}
        if row in evaluations:
            accuracy = {k: error(evaluations[row], k) for k in (1, 5)}
        why = "" if accuracy else "no ImageNet here: accuracy needs --preset paper with ImageNet"
        cells += [Cell(row, "Top 1", paper["Top 1"], accuracy.get(1), "% error", ctx.full_training, why),
                  Cell(row, "Top 5", paper["Top 5"], accuracy.get(5), "% error", ctx.full_training, why),
                  Cell(row, "Params", paper["Params"], count_params(model) / 1e6, "M"),
                  Cell(row, "GFLOPs", paper["GFLOPs"], None if macs is None else macs / 1e9, "GMACs",
                       ctx.full_training or not trained_macs, note=note)]
        if row == "Adanet 50":
            always, gates, branch = gate_profile(model, size)
            total = always + gates + float(branch.sum())
            cells.append(Cell(row, "Gate overhead", GATE_OVERHEAD_PCT[row], 100 * gates / total, "% of MACs",
                              note="gate MACs over the full network's MACs (Sec. 4.2 claim)"))
    return cells


def _v1_note() -> str:
    """ResNet-50's MACs with the stride on the first 1×1 (He et al.'s original, 3.8 G) vs torchvision's."""
    base = create_backbone("resnet50")
    ours = model_macs(base, (3, 224, 224))
    for stage in residual_stages(base):
        for block in stage.blocks():
            if block.conv2.stride == (2, 2):
                block.conv1.stride, block.conv2.stride = (2, 2), (1, 1)
    v1 = model_macs(base, (3, 224, 224))
    return (f"torchvision's ResNet-50 puts the stride on the 3×3 ({ours / 1e9:.3f} GMACs); with it on the "
            f"first 1×1 as in He et al. it counts {v1 / 1e9:.3f} G (the paper's 3.8)")


# ------------------------------------------------------------------ figures on the trained CIFAR models

def _gated_rows(ctx: Context):
    config, data = _cifar(ctx)
    return data, {row: _train_cifar(ctx, row, data, config) for row in _gated_names(ctx)}


def run_fig3(ctx: Context) -> list[Cell]:
    """Fig. 3: execution rate per layer and class on CIFAR-10 (Adanet 110 top, Wide Adanet 89 bottom)."""
    data, results = _gated_rows(ctx)
    panels, cells = [], []
    for row, result in results.items():
        taken, labels = result.evaluation["decisions"], result.evaluation["labels"]
        matrix = rates_by_class(taken, labels, 10)
        down = torch.tensor(result.model.downsampling())
        third = taken.shape[1] // 3
        spread = matrix.std(dim=0)  # variation between classes, per layer
        probs = result.evaluation["probs"]  # P(execute) = softmax(β)[execute], Eq. (6) without the noise
        unsure = undecided(probs)
        panels.append(Panel(f"{row}: execution rate per layer and class (▼ downsampling)", matrix, down.tolist()))
        trained = ctx.full_training
        cells += [Cell(row, "Mean rate", None, float(taken.mean()), "", trained),
                  Cell(row, "Downsampling layers' rate", None, float(taken[:, down].mean()), "", trained),
                  Cell(row, "Other layers' rate", None, float(taken[:, ~down].mean()), "", trained),
                  Cell(row, "Class spread, first third", None, float(spread[:third].nanmean()), "std", trained),
                  Cell(row, "Class spread, last third", None, float(spread[-third:].nanmean()), "std", trained),
                  Cell(row, "Undecided gates", None, 100 * float(unsure.mean()), "%", trained,
                       f"share of (test image, layer) pairs with {UNDECIDED[0]} < P(execute) < {UNDECIDED[1]}: there "
                       "the argmax at test time and the gate sampled in training often disagree")]
        ctx.extra[row] = {"rates_by_class": matrix.tolist(), "undecided_per_layer": unsure.mean(0).tolist()}
    plot_heatmaps(panels, ctx.figure_path("fig3"), CIFAR10_CLASSES)
    return cells


def run_fig4(ctx: Context) -> list[Cell]:
    """Fig. 4: distribution of the number of executed layers per test image, animals vs vehicles."""
    data, results = _gated_rows(ctx)
    series, cells = {}, []
    for row, result in results.items():
        counts = result.evaluation["decisions"].sum(1)
        animal = torch.isin(result.evaluation["labels"], torch.tensor(ANIMALS))
        series[f"{row} ({counts.numel()} CIFAR-10 test images, {result.evaluation['decisions'].shape[1]} layers)"] = {
            "all": counts, "animals": counts[animal], "vehicles": counts[~animal]}
        layers = result.evaluation["decisions"].shape[1]
        trained = ctx.full_training
        cells += [Cell(row, "Executed layers (mean)", None, float(counts.mean()), "layers", trained),
                  Cell(row, "Executed layers (std)", None, float(counts.std()), "layers", trained),
                  Cell(row, "Executed fraction", None, 100 * float(counts.mean()) / layers, "%", trained,
                       f"the paper's Adanet 50 executes {ADANET50_EXECUTED[0]} ± {ADANET50_EXECUTED[1]} of 16 "
                       f"layers on ImageNet (Sec. 4.2)"),
                  Cell(row, "Animals (mean)", None, float(counts[animal].mean()), "layers", trained),
                  Cell(row, "Vehicles (mean)", None, float(counts[~animal].mean()), "layers", trained)]
    plot_histograms(series, ctx.figure_path("fig4"))
    return cells


def run_fig6(ctx: Context) -> list[Cell]:
    """Fig. 6: execution rate of every layer over the training epochs (from the training log)."""
    data, results = _gated_rows(ctx)
    series, cells = {}, []
    for row, result in results.items():
        keys = sorted(k for k in result.history[0] if k.startswith("rate_"))
        rates = torch.tensor([[record[k] for k in keys] for record in result.history])
        down = torch.tensor(result.model.downsampling())
        series[row] = (rates, down.tolist())
        cells += [Cell(row, "Epochs logged", None, float(len(rates)), ""),
                  Cell(row, "Final rate, downsampling layers", None, float(rates[-1, down].mean()), "",
                       ctx.full_training),
                  Cell(row, "Final rate, other layers", None, float(rates[-1, ~down].mean()), "", ctx.full_training,
                       note="the target rate t is 0.6")]
        ctx.extra[row] = {"rates_per_epoch": rates.tolist()}
    plot_trajectories(series, ctx.figure_path("fig6"), CIFAR_METHOD["target"])
    return cells


def _attack_models(ctx: Context):
    config, data = _cifar(ctx)
    return data, {row: _train_cifar(ctx, row, data, config).model for row in list(_rows(ctx))[:2]}


def run_fig7(ctx: Context) -> list[Cell]:
    """Fig. 7: top-1 under FGSM for ResNet 110 and Adanet 110, with and without JPEG-75 compression."""
    data, models = _attack_models(ctx)
    pixels, labels = test_pixels(data)
    curves, cells = {}, []
    for row, model in models.items():
        direction = attack_direction(model, pixels, labels, data.name)
        for defence in ("", " + JPEG 75"):
            values = []
            for eps in FGSM_EPS:
                adversarial = fgsm(pixels, direction, eps)
                if defence:
                    adversarial = jpeg(adversarial, 75)
                predicted, _ = predict(model, adversarial, data.name)
                values.append(100.0 * float((predicted == labels).float().mean()))
                cells.append(Cell(f"{row}{defence}", f"ε={eps:.4f}", None, values[-1], "% top-1",
                                  ctx.full_training))
            curves[f"{row}{defence}"] = values
    ctx.extra["eps"] = FGSM_EPS
    ctx.extra["curves"] = curves
    plot_attack(FGSM_EPS, curves, ctx.figure_path("fig7"))
    return cells


def run_fig8(ctx: Context) -> list[Cell]:
    """Fig. 8: Adanet 110's execution rates on the bird images before and after FGSM (ε = 0.047)."""
    config, data = _cifar(ctx)
    row = _gated_names(ctx)[0]
    model = _train_cifar(ctx, row, data, config).model
    pixels, labels = test_pixels(data)
    birds = labels == CIFAR10_CLASSES.index("bird")
    pixels, labels = pixels[birds], labels[birds]
    direction = attack_direction(model, pixels, labels, data.name)
    clean_pred, clean_taken = predict(model, pixels, data.name)
    adv_pred, adv_taken = predict(model, fgsm(pixels, direction, FIG8_EPS), data.name)
    before, after = clean_taken.float().mean(0), adv_taken.float().mean(0)
    plot_rates_before_after(before, after, f"{row}, {len(labels)} CIFAR-10 bird test images, FGSM ε = {FIG8_EPS}",
                            ctx.figure_path("fig8"))
    ctx.extra.update({"rates_before": before.tolist(), "rates_after": after.tolist()})
    comparable = ctx.full_training
    paper_note = "paper: Adanet 50 on ImageNet (all classes), drops to just over 11 %"
    clean_top1 = 100 * float((clean_pred == labels).float().mean())
    return [Cell(f"{row} (birds)", "Top-1 clean", FIG8_TOP1_BEFORE, clean_top1, "%", False, paper_note),
            Cell(f"{row} (birds)", "Top-1 after FGSM", None, 100 * float((adv_pred == labels).float().mean()),
                 "%", comparable),
            Cell(f"{row} (birds)", "Mean abs. rate change", None, float((after - before).abs().mean()), "",
                 comparable),
            Cell(f"{row} (birds)", "Max abs. rate change", None, float((after - before).abs().max()), "",
                 comparable)]


# ------------------------------------------------------------------ ours: real skipping

def run_latency(ctx: Context) -> list[Cell]:
    """Ours: wall-clock of Adanet 110 really skipping 40 % of its layers vs ResNet 110 (batch 1 and 64)."""
    torch.manual_seed(ctx.seed)
    baseline, adanet = create_model("resnet110"), create_model("adanet110")
    counted, expected = forced_macs(adanet, LATENCY_RATE)
    full = model_macs(baseline, (3, 32, 32))
    warmup, repeats, rounds = LATENCY_REPEATS[ctx.preset]
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    cells = [Cell("Adanet 110 (skip, forced)", "MACs ratio", None, counted / full, "× ResNet 110",
                  note=f"counted at batch 1 (FlopCounterMode) {counted / 1e6:.2f} M, expected {expected / 1e6:.2f} M")]
    for device in devices:
        timing = latency_benchmark(baseline, adanet, LATENCY_RATE, (1, 64), device, repeats, warmup, rounds)
        ctx.extra[f"latency_{device.type}"] = timing
        threads = f", torch threads: {torch.get_num_threads()}" if device.type == "cpu" else ""
        for batch in (1, 64):
            base = timing["baseline"][batch]
            cells.append(Cell("ResNet 110", f"{device.type} batch {batch}", None, base["median_ms"], "ms", timing=True))
            for mode in ("skip", "masked"):
                ours = timing[mode][batch]
                row = f"Adanet 110 ({mode}, forced)"
                cells += [Cell(row, f"{device.type} batch {batch}", None, ours["median_ms"], "ms", timing=True),
                          Cell(row, f"{device.type} batch {batch} ratio", None, ours["median_ms"] / base["median_ms"],
                               "× ResNet 110", note=f"median of {rounds} alternating rounds of {repeats} forwards"
                               f"{threads}; {round(LATENCY_RATE * 54)} of 54 layers executed per image, "
                               "gates computed", timing=True),
                          Cell(row, f"{device.type} batch {batch} ratio of fastest", None,
                               ours["min_ms"] / base["min_ms"], "× ResNet 110",
                               note="fastest forward of each: the least disturbed by other load on the machine",
                               timing=True)]
    return cells


TARGETS = {
    "table1": Target(PAPER, "table1", "Adanet Table 1: CIFAR-10 error, params, GFLOPs", run_table1, data=CIFAR10),
    "table2": Target(PAPER, "table2", "Adanet Table 2: ImageNet error, params, GFLOPs", run_table2, data={"short": "imagenet", "paper": "imagenet"}),
    "fig3": Target(PAPER, "fig3", "Adanet Fig. 3: execution rates per layer and class (CIFAR-10)", run_fig3, data=CIFAR10),
    "fig4": Target(PAPER, "fig4", "Adanet Fig. 4: executed layers per image", run_fig4, data=CIFAR10),
    "fig6": Target(PAPER, "fig6", "Adanet Fig. 6: execution rates over training", run_fig6, data=CIFAR10),
    "fig7": Target(PAPER, "fig7", "Adanet Fig. 7: top-1 under FGSM, with and without JPEG-75", run_fig7, data=CIFAR10),
    "fig8": Target(PAPER, "fig8", "Adanet Fig. 8: execution rates before and after FGSM", run_fig8, data=CIFAR10),
    "latency": Target(PAPER, "latency", "Ours: real skipping, Adanet 110 at 60 % vs ResNet 110 wall-clock",
                      run_latency),
}

__all__ = ["TARGETS", "TABLE1", "TABLE2"]
