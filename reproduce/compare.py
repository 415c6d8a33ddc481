"""Ours, across the four papers: `compare methods` (`reproduce/comparison.py`: the four methods on one
backbone, recipe and data) and `compare latency`, the wall-clock of every dynamic model against its
static backbone:

    python -m reproduce compare latency [--preset smoke|mini|short|paper]
    python -m reproduce compare-latency [options]                      (the same)

Each row times a dynamic model and the static network it is built on, on the same random input,
at batch 1 and at batch 64 (8 for 224² inputs), with `torch.utils.benchmark` in alternating rounds
(the median of each variant's round medians is kept, so that a change in the machine's load hits
both alike). Beside each time ratio stands the executed-MACs fraction of the same forward, counted
with `common.metrics.count_macs` at the same batch size. CPU threads are recorded; on a machine
with CUDA the same rows run there too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from common.backbones import create_backbone
from common.metrics import alternating_latency, count_macs
from common.reproduction import CIFAR10, Cell, Context, Target

from .comparison import run_methods

# preset → (alternating rounds, forwards per timed measurement)
REPEATS = {"smoke": (2, 1), "mini": (5, 10), "short": (7, 20), "paper": (7, 20)}
FORCED_RATE = 0.6  # Adanet / RDI-Net rows: every image executes round(0.6 · L) blocks, chosen at random


@dataclass
class Row:
    """One comparison: `prepare(dynamic, batch)` sets the dynamic model up for a batch size."""
    label: str
    baseline: str                                  # the static network's name in the table
    build: Callable[[], tuple[nn.Module, nn.Module]]   # → (dynamic, static)
    size: int                                      # input height = width
    prepare: Callable[[nn.Module, int], None] = lambda model, batch: None


def _forced_gates(model: nn.Module, batch: int) -> None:
    """Skip mode with every image executing round(FORCED_RATE · L) gated blocks, at random (seeded)."""
    from adanet.experiments import force_decisions, forced_pattern
    from common.dynamic import gated_blocks, set_mode

    layers = len(gated_blocks(model))
    force_decisions(model, forced_pattern(batch, layers, FORCED_RATE))
    set_mode(model, "skip")


def _adanet() -> tuple[nn.Module, nn.Module]:
    from adanet import create_model
    return create_model("adanet110"), create_backbone("resnet110_cifar")


def _rdinet() -> tuple[nn.Module, nn.Module]:
    from rdinet.model import RDINet
    return RDINet("resnet110_cifar", 10), create_backbone("resnet110_cifar")


def _dygraph(backbone: str) -> Callable[[], tuple[nn.Module, nn.Module]]:
    def build() -> tuple[nn.Module, nn.Module]:
        from dygraph.model import DYGraphNet, set_mode
        model = DYGraphNet(backbone)  # τ = 0 and π = σ(·) > 0: every edge open
        set_mode(model, "skip")
        return model, create_backbone(backbone)
    return build


def _adn() -> tuple[nn.Module, nn.Module]:
    from adn.model import ADNet
    base, super_ = ADNet("resnet50"), ADNet("resnet50")
    super_.load_state_dict(base.state_dict())
    base.set_skip("TTTT")   # every skippable sub-path skipped: the base-net (Eq. 1)
    super_.set_skip("FFFF")
    return base, super_


ROWS = [
    Row(f"Adanet 110 ({round(FORCED_RATE * 54)}/54 blocks forced, skip)", "ResNet-110", _adanet, 32, _forced_gates),
    Row(f"RDI-Net 110 ({round(FORCED_RATE * 54)}/54 blocks forced, skip)", "ResNet-110", _rdinet, 32, _forced_gates),
    Row("DY-Graph ResNet-20 (all edges open, skip)", "ResNet-20", _dygraph("resnet20_cifar"), 32),
    Row("DY-Graph ResNet-50 (all edges open, skip)", "ResNet-50", _dygraph("resnet50"), 224),
    Row("DY-Graph MobileNetV2 (all edges open, skip)", "MobileNetV2", _dygraph("mobilenet_v2"), 224),
    Row("ADN ResNet-50 base-net", "ADN ResNet-50 super-net", _adn, 224),
]


def time_pair(dynamic: nn.Module, static: nn.Module, inputs: torch.Tensor, rounds: int,
              number: int) -> tuple[float, float]:
    """Median seconds per forward of (dynamic, static), over alternating rounds of `number` forwards each."""
    timing = alternating_latency({"dynamic": lambda: dynamic(inputs), "static": lambda: static(inputs)},
                                 rounds, number, device=inputs.device)
    return timing["dynamic"]["median_ms"] / 1e3, timing["static"]["median_ms"] / 1e3


@torch.no_grad()
def compare(row: Row, device: torch.device, rounds: int, number: int, seed: int = 0) -> list[dict]:
    """Time ratio and executed-MACs fraction of one row at its two batch sizes."""
    torch.manual_seed(seed)
    dynamic, static = (m.to(device).eval() for m in row.build())
    results = []
    for batch in (1, 64 if row.size <= 64 else 8):
        row.prepare(dynamic, batch)
        inputs = torch.randn(batch, 3, row.size, row.size, device=device)
        macs = count_macs(dynamic, inputs) / count_macs(static, inputs)
        seconds, base = time_pair(dynamic, static, inputs, rounds, number)
        results.append({"batch": batch, "ratio": seconds / base, "macs_fraction": macs,
                        "ms": 1e3 * seconds, "baseline_ms": 1e3 * base})
    return results


def run_latency(ctx: Context) -> list[Cell]:
    """Every dynamic model vs its static backbone: time ratio and executed-MACs fraction, batch 1 and 64 (8)."""
    rounds, number = REPEATS[ctx.preset]
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    cells = []
    for device in devices:
        where = f"{torch.get_num_threads()} CPU threads" if device.type == "cpu" else torch.cuda.get_device_name(device)
        note = f"median of {rounds} alternating rounds of {number} forward(s), {where}"
        ctx.extra.setdefault("threads", torch.get_num_threads())
        for row in ROWS:
            for result in compare(row, device, rounds, number, ctx.seed):
                ctx.extra.setdefault("rows", []).append({"row": row.label, "device": device.type, **result})
                column, label = f"{device.type} batch {result['batch']}", f"{row.label} vs {row.baseline}"
                cells += [Cell(label, f"{column} ratio", None, result["ratio"], "× static", note=note, timing=True),
                          Cell(label, f"{column} MACs fraction", None, result["macs_fraction"], "× static"),
                          Cell(label, f"{column} ms", None, result["ms"], "ms", timing=True),
                          Cell(label, f"{column} static ms", None, result["baseline_ms"], "ms", timing=True)]
    return cells


TARGETS = {
    "methods": Target("compare", "methods", "Ours: the four methods on one CIFAR ResNet, recipe and data "
                      "(accuracy, params, MACs, CPU latency)", run_methods, data=CIFAR10),
    "latency": Target("compare", "latency", "Ours: dynamic models vs their static backbones, wall-clock and "
                      "executed MACs", run_latency),
}
