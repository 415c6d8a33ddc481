"""ADN's tables and figures: the paper's numbers (as data, once) and the targets that reproduce them.

Targets: `table1` (params, GMACs, latency of the ImageNet models; accuracy of CIFAR-10 analogues),
`table2` (the TTFF and TTTT sub-networks against other efficient ResNet-50s), `table3` (the 2×2
ablation on a CIFAR ResNet), `fig3a` (all 2^Ns sub-networks), `fig3b` (distance of the two BN
sets' running means), `table4` (the detection backbone in Faster / Mask R-CNN + FPN).
"""
from __future__ import annotations

import torch

from common.hub import HubBackbone
from common.metrics import accuracy, count_params, measure_latency, model_macs
from common.reproduction import CIFAR10, MINI_DEPTH, MINI_RECIPE, Cell, Context, Target
from common.runs import ModelSpec, Run
from common.train import Method, TrainConfig, evaluate, uses_bf16

from .counting import attention_macs, elementwise_ops
from .method import ADNMethod
from .model import ADNet, BaseNet, SkipAwareBatchNorm2d, all_configs, create_model

IMAGENET_SIZE = (3, 224, 224)

# Table 1 (ImageNet): row → (params M, GMACs, Acc@1 %, Acc@5 %, latency ms on an RTX 3090 at batch 64).
# None where the paper leaves the cell empty. Keys: (model, variant).
TABLE1 = {
    ("resnet50", "super"): ("ResNet50-ADN (super-net)", 25.58, 4.11, 77.6, 93.7, 43.2),
    ("resnet50", "base"): ("ResNet50-ADN (base-net)", None, 2.58, 76.1, 93.2, 27.6),
    ("resnet50", "individual"): ("ResNet50 (individual network)", 25.56, 4.11, 76.7, 93.2, 43.2),
    ("resnet50", "individual-base"): ("ResNet50-Base (individual network)", 17.11, 2.58, 75.0, 92.3, 27.6),
    ("mobilenetv2", "super"): ("MV2-ADN (super-net)", 3.72, 0.32, 72.7, 90.8, 15.5),
    ("mobilenetv2", "base"): ("MV2-ADN (base-net)", None, 0.25, 70.7, 89.8, 13.2),
    ("mobilenetv2", "individual"): ("MV2 (individual network)", 3.50, 0.32, 72.1, 90.3, 15.5),
    ("mobilenetv2", "individual-base"): ("MV2-Base (individual network)", 2.99, 0.25, 70.7, 89.6, 13.2),
    ("vit_b32", "super"): ("ViT-b/32-ADN (super-net)", 88.25, 2.95, 76.4, 92.7, 39.5),
    ("vit_b32", "base"): ("ViT-b/32-ADN (base-net)", None, 2.00, 73.2, 91.4, 26.7),
    ("vit_b32", "individual"): ("ViT-b/32 (individual network)", 88.22, 2.95, 75.9, 92.5, 39.5),
    ("vit_b32", "individual-base"): ("ViT-b/32-Base (individual network)", 69.33, 2.00, 73.1, 90.8, 26.7),
}
# Table 1's other anytime networks (not reproduced): row → (params M, GMACs, Acc@1 %, latency ms).
TABLE1_OTHERS = {
    "Early-exiting branches (Zhang et al., 2019; 2022)": (28.82, 4.11, 75.2, 43.2),
    "Early-exiting (Li et al., 2019)": (None, 3.52, 72.8, 39.0),
    "S-ResNet50 0.5x (Yu et al., 2018; Yu & Huang, 2019a)": (25.6, 2.05, 58.5, 27.4),
    "S-ResNet50 1.0x (Yu et al., 2018; Yu & Huang, 2019a)": (25.6, 4.1, 76.0, 43.2),
    "MutualNet (Yang et al., 2020b)": (None, 0.32, 72.9, None),
    "AlphaNet-0.75x (Wang et al., 2021a)": (None, 0.21, 70.5, None),
}
SKIP_AWARE_OVERHEAD_PCT = {"resnet50": 0.07}  # Sec. 3.4: skip-aware BNs add 0.07 % parameters to ResNet-50

# Table 2: row → (params M, GMACs, ↓FLOPs %, Acc@1 %, Acc@5 %).
TABLE2 = {
    "PFP-A-ResNet50 (Liebenwein et al., 2020)": (20.9, 3.7, 10, 75.9, 92.8),
    "Versatile-ResNet50 (Wang et al., 2018b)": (11.0, 3.0, 27, 74.5, 91.8),
    "Dynamic Slimmable (Li et al., 2021)": (None, 3.1, 24, 76.6, None),
    "ResNet50-ADN (TTFF)": (25.6, 3.4, 17, 77.0, 93.4),
    "GReg-1 (Wang et al., 2021b)": (None, 2.8, 33, 76.1, None),
    "Ghost-ResNet50-2 (Han et al., 2020)": (13.0, 2.2, 46, 75.0, 92.3),
    "DR-ResNet50 (alpha=2.0) (Zhu et al., 2021)": (30.5, 2.3, 44, 75.3, 92.2),
    "ResNet50-ADN (base-net)": (25.6, 2.6, 37, 76.1, 93.2),
}
TABLE2_OURS = {"ResNet50-ADN (TTFF)": "TTFF", "ResNet50-ADN (base-net)": "TTTT"}

# Table 3 (ImageNet, ResNet50-ADN): (specialisation, skip-aware BN) → (super Acc@1, Δ, base Acc@1, Δ),
# Δ in points against the individual ResNet50 / ResNet50-Base.
TABLE3 = {
    (False, False): (75.2, -1.5, 72.2, -2.8),
    (True, False): (76.1, -0.6, 74.9, -0.1),
    (False, True): (76.6, -0.1, 75.1, 0.1),
    (True, True): (77.6, 0.9, 76.1, 1.1),
}

# Fig. 3a: the sub-networks whose numbers the paper states in its tables: config → (GMACs, Acc@1 %).
FIG3A = {"FFFF": (4.11, 77.6), "TTFF": (3.4, 77.0), "TTTT": (2.58, 76.1)}

# Table 4 (COCO val2017): (detector, backbone) → (GFLOPs, individual box AP, mask AP, ADN box AP, mask AP).
# The FLOPs are mmdetection's get_flops numbers for the R50-FPN 1x configs at a 1280×800 input
# (mmcv counts one multiply-add as one FLOP), so they compare with our MACs.
TABLE4 = {
    ("faster", "super"): ("Faster-RCNN / ResNet50", 207.07, 36.4, None, 37.8, None),
    ("faster", "base"): ("Faster-RCNN / ResNet50-Base", 175.66, 32.4, None, 34.0, None),
    ("mask", "super"): ("Mask-RCNN / ResNet50", 260.14, 37.2, 34.1, 38.3, 34.1),
    ("mask", "base"): ("Mask-RCNN / ResNet50-Base", 228.73, 32.7, 29.9, 34.1, 31.2),
}
DETECTION_SIZE = (800, 1280)  # H × W of mmdetection's get_flops default input

# CIFAR-10 analogues: one depth and one recipe per preset, the same for every row of a table.
CIFAR_DEPTH = {"smoke": 20, "mini": MINI_DEPTH, "short": 56, "paper": 110}
CIFAR_RECIPES = {
    "smoke": TrainConfig(epochs=1, batch_size=64, lr=0.05, milestones=(), weight_decay=1e-4),
    "mini": MINI_RECIPE,  # the shared CPU recipe of every paper's mini rows
    # One GPU, ≤ ~10 min per model: 40 epochs cosine with 1 warm-up epoch (the shared baselines' short recipe).
    "short": TrainConfig(epochs=40, batch_size=128, lr=0.1, schedule="cosine", warmup_epochs=1,
                         nesterov=True, weight_decay=5e-4),
    # The paper trains CNNs with their original recipes (Sec. 4.1): He et al. 2016's CIFAR recipe.
    "paper": TrainConfig(epochs=164, batch_size=128, lr=0.1, milestones=(82, 123), weight_decay=1e-4),
}
SMOKE_LIMITS = {"train_limit": 512, "test_limit": 500}
# `paper` preset, ImageNet (Sec. 4.1 + authors' code): ResNet-50 for 150 epochs, SGD LR 0.1 ÷10 at
# 60/100/140, wd 1e-4 with none on norms and biases, batch 256. MobileNetV2's and ViT's recipes are not
# trainable here (the paper gives no LR schedule for MV2; ViT's DeiT recipe needs AdamW, RandAugment,
# Mixup/CutMix, which common.train lacks), so their accuracy cells stay empty.
IMAGENET_RECIPES = {"resnet50": TrainConfig(epochs=150, batch_size=256, lr=0.1, milestones=(60, 100, 140),
                                            weight_decay=1e-4, no_decay_norm_bias=True)}
# measure_latency (warm-up, repeats) at batch 64: a single timed forward on the smoke preset (CPU minutes).
LATENCY_RUNS = {"smoke": (0, 1), "mini": (2, 5), "short": (5, 20), "paper": (5, 20)}
LATENCY_BATCH = 64


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _gmacs(model: torch.nn.Module, size: tuple[int, int, int], skip: str | None = None) -> float:
    if skip is not None:
        model.set_skip(skip)
    try:
        return model_macs(model, size) / 1e9
    finally:
        if skip is not None:
            model.set_skip(None)


def _latency(ctx: Context, model: ADNet, skip: str) -> dict:
    warmup, repeats = LATENCY_RUNS[ctx.preset]
    device = _device()
    model.to(device).set_skip(skip)
    try:
        inputs = torch.randn(LATENCY_BATCH, *IMAGENET_SIZE, device=device)
        return measure_latency(model, inputs, warmup=warmup, repeats=repeats)
    finally:
        model.set_skip(None)
        model.cpu()


def _cifar(ctx: Context) -> tuple[int, TrainConfig, dict]:
    limits = SMOKE_LIMITS if ctx.preset == "smoke" else {}
    return CIFAR_DEPTH[ctx.preset], CIFAR_RECIPES[ctx.preset], limits


def _top1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return accuracy(logits, labels, (1,))[1]


def train_adn(ctx: Context, row: str, depth: int, config: TrainConfig, limits: dict, specialize: bool = True,
              skip_aware_norm: bool = True) -> tuple[ADNet, Run]:
    """Train a CIFAR ResNet-`depth` ADN with Algorithm 1 (or an ablation); one run shared by every target."""
    data = ctx.data("cifar10", batch_size=config.batch_size, **limits)
    spec = ModelSpec(ADNet, f"resnet{depth}_cifar", data.num_classes, skip_aware_norm=skip_aware_norm)
    run = ctx.train(row, spec, data, config, ADNMethod(specialize=specialize))
    return run.model, run


def headline(ctx: Context) -> dict[str, Run]:
    """The CIFAR ResNet-ADN of the preset (super- and base-net): what `reproduce compare` measures."""
    depth, config, limits = _cifar(ctx)
    return {f"ResNet-{depth}-ADN": train_adn(ctx, f"ResNet-{depth}-ADN", depth, config, limits)[1]}


def train_individual(ctx: Context, row: str, spec: ModelSpec, config: TrainConfig, limits: dict) -> Run:
    """Train a static network alone (CE only)."""
    data = ctx.data("cifar10", batch_size=config.batch_size, **limits)
    return ctx.train(row, spec, data, config, Method())


def _run_top1(run: Run) -> float:
    return _top1(run.evaluation["logits"], run.evaluation["labels"])


def run_table1(ctx: Context) -> list[Cell]:
    """Table 1: params, GMACs and batch-64 latency of the three ADN models and their individual networks."""
    cells: list[Cell] = []
    latency_note = (f"ours: {LATENCY_BATCH} images on {_device().type}"
                    f"{' (one timed forward, smoke)' if ctx.preset == 'smoke' else ''}; paper: RTX 3090")
    for name in ("resnet50", "mobilenetv2", "vit_b32"):
        torch.manual_seed(ctx.seed)
        adn, individual, base = create_model(f"{name}_adn"), create_model(name), create_model(f"{name}_base")
        ours = {
            "super": (count_params(adn) / 1e6, _gmacs(adn, IMAGENET_SIZE, "super")),
            "base": (None, _gmacs(adn, IMAGENET_SIZE, "base")),
            "individual": (count_params(individual) / 1e6, _gmacs(individual, IMAGENET_SIZE)),
            "individual-base": (count_params(base) / 1e6, _gmacs(base, IMAGENET_SIZE)),
        }
        latency = {v: _latency(ctx, adn, v) for v in ("super", "base")}
        ctx.extra.setdefault("latency", {})[name] = latency
        overhead = count_params(adn) - count_params(individual)
        ctx.extra.setdefault("skip_aware_norm_params", {})[name] = {
            "params": overhead, "percent": 100 * overhead / count_params(individual)}
        ctx.extra.setdefault("paper_convention", {})[name] = _paper_convention(adn)
        trained = _imagenet_accuracy(ctx, name)
        for variant, (params, gmacs) in ours.items():
            row, p_params, p_gmacs, p_top1, p_top5, p_latency = TABLE1[(name, variant)]
            top1, top5 = trained.get(variant, (None, None))
            first = variant == "super"  # notes once per model
            cells += [Cell(row, "Params", p_params, params, "M"),
                      Cell(row, "FLOPs", p_gmacs, gmacs, "GMACs", note=_macs_note(name) if first else ""),
                      Cell(row, "Acc@1 ImageNet", p_top1, top1, "%",
                           note="trained only by the paper preset (ResNet50)" if first and name == "resnet50" else ""),
                      Cell(row, "Acc@5 ImageNet", p_top5, top5, "%"),
                      Cell(row, "Latency", p_latency,
                           latency[variant]["median_ms"] if variant in latency else None, "ms",
                           comparable=False, note=latency_note if first else
                           "" if variant in latency else "individual networks: same architecture as the ADN "
                           "sub-network of their depth, not timed again", timing=variant in latency)]
        if name in SKIP_AWARE_OVERHEAD_PCT:
            cells.append(Cell(TABLE1[(name, "super")][0], "Skip-aware norm params", SKIP_AWARE_OVERHEAD_PCT[name],
                              ctx.extra["skip_aware_norm_params"][name]["percent"], "%"))
    for row, (params, gmacs, top1, latency) in TABLE1_OTHERS.items():
        cells += [Cell(row, "Params", params, None, "M"), Cell(row, "FLOPs", gmacs, None, "GMACs"),
                  Cell(row, "Acc@1 ImageNet", top1, None, "%"), Cell(row, "Latency", latency, None, "ms")]
    cells += _table1_cifar(ctx)
    return cells


def _imagenet_accuracy(ctx: Context, name: str) -> dict[str, tuple[float, float]]:
    """`paper` preset only: train the ImageNet rows with the paper's recipe; (Acc@1, Acc@5) per variant."""
    if ctx.preset != "paper" or name not in IMAGENET_RECIPES:
        return {}
    config = IMAGENET_RECIPES[name]
    data = ctx.data("imagenet", batch_size=config.batch_size)
    result = ctx.train(f"{name}-adn-imagenet", ModelSpec(create_model, f"{name}_adn"), data, config, ADNMethod())
    labels = result.evaluation["labels"]
    out = {"super": accuracy(result.evaluation["logits"], labels), "base": accuracy(result.evaluation["logits_base"], labels)}
    for variant, model_name in (("individual", name), ("individual-base", f"{name}_base")):
        evaluation = ctx.train(f"{name}-{variant}-imagenet", ModelSpec(create_model, model_name), data, config,
                               Method()).evaluation
        out[variant] = accuracy(evaluation["logits"], evaluation["labels"])
    return {variant: (acc[1], acc[5]) for variant, acc in out.items()}


def _macs_note(name: str) -> str:
    if name == "vit_b32":
        return "paper's count leaves out nn.MultiheadAttention (see README)"
    if name == "mobilenetv2":
        return "paper's count adds BN/activation ops; base-net differs (see README)"
    return ""


def _paper_convention(adn: ADNet) -> dict:
    """Our counts re-done under the paper's apparent conventions (README: where the numbers differ)."""
    out = {}
    for config in ("super", "base"):
        adn.set_skip(config)
        if adn.backbone == "vit_b_32":
            parts = attention_macs(adn, IMAGENET_SIZE)
            out[config] = {**parts, "without_multihead_attention": parts["total"] - parts["multihead_attention"]}
        else:
            macs, extra = model_macs(adn, IMAGENET_SIZE), elementwise_ops(adn, IMAGENET_SIZE)
            out[config] = {"macs": macs, "elementwise_ops": extra, "ptflops_style": macs + extra}
    adn.set_skip(None)
    return out


def _table1_cifar(ctx: Context) -> list[Cell]:
    """CIFAR-10 analogues of Table 1's rows, trained with one recipe: ADN super/base, individual, -Base."""
    depth, config, limits = _cifar(ctx)
    comparable = ctx.full_training
    adn, result = train_adn(ctx, f"ResNet-{depth}-ADN", depth, config, limits)
    labels = result.evaluation["labels"]
    individual_run, base_run = _individual_runs(ctx, depth, config, limits)
    individual, base = individual_run.model, base_run.model
    rows = {
        f"ResNet-{depth}-ADN (super-net), CIFAR-10": (count_params(adn), _gmacs(adn, (3, 32, 32), "super"),
                                                       _top1(result.evaluation["logits"], labels)),
        f"ResNet-{depth}-ADN (base-net), CIFAR-10": (None, _gmacs(adn, (3, 32, 32), "base"),
                                                      _top1(result.evaluation["logits_base"], labels)),
        f"ResNet-{depth} (individual network), CIFAR-10": (
            count_params(individual), _gmacs(individual, (3, 32, 32)), _run_top1(individual_run)),
        f"ResNet-{depth}-Base (individual network), CIFAR-10": (
            count_params(base), _gmacs(base, (3, 32, 32)), _run_top1(base_run)),
    }
    ctx.extra["cifar_history"] = {"ADN": result.history}
    cells = []
    for row, (params, gmacs, top1) in rows.items():
        cells += [Cell(row, "Params", None, params / 1e6 if params else None, "M"),
                  Cell(row, "FLOPs", None, gmacs, "GMACs"),
                  Cell(row, "Acc@1 CIFAR-10", None, top1, "%", comparable)]
    return cells


def _individual_runs(ctx: Context, depth: int, config: TrainConfig, limits: dict) -> tuple[Run, Run]:
    """The individual CIFAR ResNet-`depth` and its -Base network (what an ADN's super/base-net compare to)."""
    return (train_individual(ctx, f"ResNet-{depth}", ModelSpec(HubBackbone, f"resnet{depth}_cifar", num_classes=10), config, limits),
            train_individual(ctx, f"ResNet-{depth}-Base", ModelSpec(BaseNet, f"resnet{depth}_cifar", 10), config, limits))


def run_table2(ctx: Context) -> list[Cell]:
    """Table 2: params, GMACs and FLOPs reduction of ResNet50-ADN's TTFF and base-net (TTTT)."""
    torch.manual_seed(ctx.seed)
    adn, individual = create_model("resnet50_adn"), create_model("resnet50")
    full = _gmacs(individual, IMAGENET_SIZE)
    cells = []
    for row, (params, gmacs, drop, top1, top5) in TABLE2.items():
        config = TABLE2_OURS.get(row)
        ours_gmacs = _gmacs(adn, IMAGENET_SIZE, config) if config else None
        cells += [Cell(row, "Params", params, count_params(adn) / 1e6 if config else None, "M"),
                  Cell(row, "FLOPs", gmacs, ours_gmacs, "GMACs"),
                  Cell(row, "↓FLOPs", drop, 100 * (1 - ours_gmacs / full) if config else None, "%",
                       note="against the individual ResNet50" if config else ""),
                  Cell(row, "Acc@1 ImageNet", top1, None, "%"), Cell(row, "Acc@5 ImageNet", top5, None, "%")]
    return cells


def run_table3(ctx: Context) -> list[Cell]:
    """Table 3: sub-path specialisation × skip-aware BN on a CIFAR-10 ResNet, Δ against individual networks."""
    depth, config, limits = _cifar(ctx)
    comparable = ctx.full_training
    individual_run, base_run = _individual_runs(ctx, depth, config, limits)
    reference = {"super": _run_top1(individual_run), "base": _run_top1(base_run)}
    note = f"paper: ImageNet ResNet50-ADN; ours: CIFAR-10 ResNet-{depth}-ADN"
    cells = []
    for (specialize, skip_aware), (p_super, p_dsuper, p_base, p_dbase) in TABLE3.items():
        row = f"specialization {'✓' if specialize else '✗'}, skip-aware BN {'✓' if skip_aware else '✗'}"
        _, result = train_adn(ctx, f"ResNet-{depth}-ADN {row}", depth, config, limits, specialize, skip_aware)
        labels = result.evaluation["labels"]
        top1 = {"super": _top1(result.evaluation["logits"], labels),
                "base": _top1(result.evaluation["logits_base"], labels)}
        cells += [Cell(row, "Super-net Acc@1", p_super, top1["super"], "%", False, "" if cells else note),
                  Cell(row, "Super-net Δ vs individual", p_dsuper, top1["super"] - reference["super"], "pp", comparable),
                  Cell(row, "Base-net Acc@1", p_base, top1["base"], "%", False),
                  Cell(row, "Base-net Δ vs individual", p_dbase, top1["base"] - reference["base"], "pp", comparable)]
    ctx.extra["individual_top1"] = reference
    return cells


def run_fig3a(ctx: Context) -> list[Cell]:
    """Fig. 3a: GMACs of ResNet50-ADN's 16 sub-networks; GMACs and accuracy of a CIFAR ADN's 2^Ns."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    torch.manual_seed(ctx.seed)
    adn = create_model("resnet50_adn")
    imagenet = {c: _gmacs(adn, IMAGENET_SIZE, c) for c in all_configs(adn.num_stages)}
    depth, config, limits = _cifar(ctx)
    cifar_configs = all_configs(3)
    model, result = train_adn(ctx, f"ResNet-{depth}-ADN", depth, config, limits)
    data = ctx.data("cifar10", batch_size=config.batch_size, **limits)
    evaluation = evaluate(model.to(_device()), data, ADNMethod(eval_configs=tuple(cifar_configs)),
                          bf16=uses_bf16(config))  # in the precision the run was trained and evaluated in
    model.cpu()
    cifar = {c: (_gmacs(model, (3, 32, 32), c), _top1(evaluation[f"logits_{c}"], evaluation["labels"]))
             for c in cifar_configs}
    cells = []
    for c, gmacs in imagenet.items():
        paper = FIG3A.get(c, (None, None))
        cells += [Cell(f"ResNet50-ADN ({c})", "FLOPs", paper[0], gmacs, "GMACs"),
                  Cell(f"ResNet50-ADN ({c})", "Acc@1 ImageNet", paper[1], None, "%")]
    for c, (gmacs, top1) in cifar.items():
        cells += [Cell(f"ResNet-{depth}-ADN ({c}), CIFAR-10", "FLOPs", None, gmacs, "GMACs"),
                  Cell(f"ResNet-{depth}-ADN ({c}), CIFAR-10", "Acc@1 CIFAR-10", None, top1, "%", ctx.full_training)]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4))
    left.bar(list(imagenet), list(imagenet.values()), color="tab:blue", label="ours (counted)")
    left.scatter(list(FIG3A), [v[0] for v in FIG3A.values()], color="tab:red", zorder=3, label="paper (Tables 1-2)")
    left.set(title="ResNet50-ADN sub-networks, 224×224", ylabel="GMACs")
    left.tick_params(axis="x", rotation=90)
    left.legend()
    right.bar(list(cifar), [v[1] for v in cifar.values()], color="tab:green")
    for i, (gmacs, top1) in enumerate(cifar.values()):
        right.text(i, top1, f"{gmacs * 1e3:.0f}M", ha="center", va="bottom", fontsize=8)
    right.set(title=f"ResNet-{depth}-ADN on CIFAR-10 ({ctx.preset}); labels: MACs", ylabel="Acc@1 (%)")
    fig.tight_layout()
    fig.savefig(ctx.figure_path("fig3a"), dpi=120)
    plt.close(fig)
    return cells


def bn_mean_distances(model: ADNet) -> list[tuple[int, str, float]]:
    """Fig. 3b: ‖μ_main − μ_skip‖₂ of the running means of every skip-aware BN, as (stage, layer, distance)."""
    names = {id(m): n for n, m in model.net.named_modules()}
    return [(stage, names[id(norm)], float((norm.running_mean - norm.skip_norm.running_mean).norm()))
            for stage, norms in enumerate(model.norms) for norm in norms if isinstance(norm, SkipAwareBatchNorm2d)]


def run_fig3b(ctx: Context) -> list[Cell]:
    """Fig. 3b: distance between the two BN sets' running means per shared layer of a trained CIFAR ADN."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depth, config, limits = _cifar(ctx)
    model, _ = train_adn(ctx, f"ResNet-{depth}-ADN", depth, config, limits)
    distances = bn_mean_distances(model.cpu())
    cells = [Cell(f"stage {stage + 1}: {layer}", "‖μ_super − μ_skip‖₂", None, d, "", ctx.full_training)
             for stage, layer, d in distances]
    fig, ax = plt.subplots(figsize=(max(7, len(distances) * 0.25), 3.8))
    ax.bar(range(len(distances)), [d for _, _, d in distances],
           color=[f"C{stage}" for stage, _, _ in distances])
    ax.set_xticks(range(len(distances)), [layer for _, layer, _ in distances], rotation=90, fontsize=6)
    ax.set(ylabel="‖μ_super − μ_skip‖₂", title=f"ResNet-{depth}-ADN on CIFAR-10 ({ctx.preset}):\n"
                                                 "running means of the two BN sets per shared layer")
    fig.tight_layout()
    fig.savefig(ctx.figure_path("fig3b"), dpi=120)
    plt.close(fig)
    return cells


def run_table4(ctx: Context) -> list[Cell]:
    """Table 4: ResNet50-ADN + FPN in Faster / Mask R-CNN: GMACs at 1280×800 (super-net and base-net)."""
    from .detection import adn_detector, detector_macs

    cells = []
    for kind in ("faster", "mask"):
        detector, adn = adn_detector(kind)
        for config in ("super", "base"):
            adn.set_skip(config)
            parts = detector_macs(detector, DETECTION_SIZE)
            ctx.extra.setdefault("detector_macs", {})[f"{kind}/{config}"] = parts
            row, flops, box, mask, adn_box, adn_mask = TABLE4[(kind, config)]
            first = not cells  # notes once
            cells += [Cell(row, "FLOPs", flops, sum(parts.values()) / 1e9, "GMACs",
                           note="ours: torchvision heads on one 1280×800 image, 1000 RoIs (100 for masks), "
                                "as mmdetection's get_flops" if first else ""),
                      Cell(row, "Box AP individual", box, None, ""),
                      Cell(row, "Box AP ADN", adn_box, None, "", note="no COCO here" if first else "")]
            if kind == "mask":
                cells += [Cell(row, "Mask AP individual", mask, None, ""), Cell(row, "Mask AP ADN", adn_mask, None, "")]
        adn.set_skip(None)
    return cells


TARGETS = {
    "table1": Target("adn", "table1", "ADN Table 1: ImageNet models (params, GMACs, latency) + CIFAR-10 analogues",
                     run_table1, data={**CIFAR10, "paper": "imagenet"}),
    "table2": Target("adn", "table2", "ADN Table 2: ResNet50-ADN TTFF / base-net vs efficient ResNet-50s", run_table2),
    "table3": Target("adn", "table3", "ADN Table 3: ablation (specialisation × skip-aware BN), CIFAR-10", run_table3, data=CIFAR10),
    "fig3a": Target("adn", "fig3a", "ADN Fig. 3a: all 2^Ns sub-networks (GMACs, accuracy)", run_fig3a, data=CIFAR10),
    "fig3b": Target("adn", "fig3b", "ADN Fig. 3b: distance between the two BN sets' running means", run_fig3b, data=CIFAR10),
    "table4": Target("adn", "table4", "ADN Table 4: ResNet50-ADN + FPN in Faster / Mask R-CNN (GMACs)", run_table4),
}
