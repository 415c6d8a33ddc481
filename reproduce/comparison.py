"""Ours: the four methods side by side on one backbone, recipe and data — `python -m reproduce compare`.

Each paper's `tables.headline(ctx)` names its headline CIFAR run at the preset (on `mini`: ResNet-20
depth, the one shared CPU recipe); the run layer reuses it when it is finished (committed under
weights/mini) and trains it otherwise. Every model is measured by `reproduce.evaluation.measure`:
top-1 on the CIFAR-10 test set under real skipping, MACs per image, and CPU latency at batch 1 and
64 against the static ResNet it is built on. No paper and no public code has this table.
"""
from __future__ import annotations

import importlib

from common.metrics import count_params
from common.reproduction import Cell, Context

from .evaluation import LATENCY_BATCHES, measure, trained_precision

# cheapest rows first: on the mini preset the DY-Graph rows train longest (eager), so they come last
HEADLINES = ("common.tables", "adanet.tables", "rdinet.tables", "adn.tables", "dygraph.tables")


def _plot(points: dict[str, dict], path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.6))
    markers = "os^Dv<>pPX*h"
    for index, (label, p) in enumerate(points.items()):  # one colour and marker per row, named in one legend
        style = {"color": f"C{index % 10}", "marker": markers[index % len(markers)], "s": 45}
        left.scatter([p["macs"]], [p["top1"]], label=label, **style)
        right.scatter([p["latency"]], [p["top1"]], **style)
    left.set(xlabel="MACs per image (M), mean over the test set", ylabel="CIFAR-10 top-1 (%)",
             title="accuracy vs expected MACs")
    right.axvline(1.0, color="0.7", lw=0.8, ls="--")
    right.set(xlabel=f"CPU time at batch {LATENCY_BATCHES[-1]} (× static ResNet, same rounds)",
              ylabel="CIFAR-10 top-1 (%)",
              title="accuracy vs measured latency")
    fig.legend(loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_methods(ctx: Context) -> list[Cell]:
    """ResNet-20, Adanet-20, RDI-Net-20, ResNet-20-ADN (super, base), DY-Graph-20 (static α, zero-γ baseline): one table."""
    runs = {}
    for module in HEADLINES:
        runs.update(importlib.import_module(module).headline(ctx))
    data = ctx.data("cifar10")
    cells, points = [], {}
    trained = ctx.full_training or ctx.preset == "mini"  # mini rows compare with each other, not the papers
    for row, run in runs.items():
        for m in measure(run.model, data, precision=trained_precision(run.directory)):  # as the table's runs
            label = row if m.mode in ("skip", "static") else f"{row} ({m.mode}-net)"
            summary = m.summary()
            cells += [Cell(label, "Top-1", None, m.top1, "%", trained),
                      Cell(label, "Params", None, count_params(run.model) / 1e6, "M"),
                      Cell(label, "MACs", None, summary["macs_mean"] / 1e6, "M", trained,
                           "mean over the test set" if m.mode == "skip" else ""),
                      Cell(label, "× ResNet MACs", None, summary["macs_fraction"], "", trained)]
            for batch in LATENCY_BATCHES:
                cells += [Cell(label, f"CPU batch {batch}", None, m.latency_ms[batch], "ms", timing=True),
                          Cell(label, f"× ResNet at batch {batch}", None, summary["latency_ratio"][batch], "",
                               timing=True)]
            # latency as the ratio to the static ResNet timed in the same alternating rounds: on a shared machine
            # absolute times drift between rows measured minutes apart
            points[label] = {"top1": m.top1, "macs": summary["macs_mean"] / 1e6,
                             "latency": summary["latency_ratio"][LATENCY_BATCHES[-1]]}
            ctx.extra.setdefault("measurements", {})[label] = summary
    _plot(points, ctx.figure_path("accuracy-macs-latency"))
    return cells
