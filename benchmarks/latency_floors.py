"""Latency floors: what the equations alone cost, beside the measured ratio, for the speed goals.

    python benchmarks/latency_floors.py --out benchmarks/latency_floors.json

A goal of the README's Speed table can be out of reach for a reason that no implementation removes:
the work the method's equations require costs more wall-clock than its MACs suggest on this machine.
For each goal this script times, in one process and in alternating rounds (`alternating_latency`),
the dynamic model, its static network and the parts an ideal implementation could not avoid, each
part alone on inputs of its real shape:

- **Adanet 110, forced 32/54 blocks** (inference, batch 1 and 64): static − every block + the executed
  blocks, each on exactly the rows that execute it (a contiguous slice: no gather, no write-back)
  + the 54 gates (Eqs. 4-5). Nothing else: the skipped rows' post-activation is left out.
- **DY-Graph, all edges open** (inference; and training steps of the CIFAR ResNets): static + Eqs.
  (1)-(2) alone, every node's weighted sum of its predecessors as one batched matmul over a bank that
  already holds them (no copies), + the routers of Eq. (3) at inference. In training the aggregation's
  backward is two more batched matmuls a node (∂w and ∂features, the latter accumulated in place).
- **ADN ResNet-50 base vs super** (inference): super − the skipped blocks, each timed on its input.

The ratio `floor` = ideal time / static time estimates the best an eager implementation built on the
same kernels can do: where it clearly exceeds the goal, the goal cannot be met on this machine. It is
an estimate, not a bound: a part timed alone can cost more than inside the forward (the ADN floor
has come out above its measured ratio). Set
`MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=4294967296` (recorded in the JSON).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Callable

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.backbones import residual_stages  # noqa: E402
from common.metrics import alternating_latency  # noqa: E402


def captured_inputs(model: nn.Module, modules: list[nn.Module], inputs: torch.Tensor) -> list[torch.Tensor]:
    """The input each of `modules` receives in one forward of `model` on `inputs`."""
    seen: dict[int, torch.Tensor] = {}
    hooks = [m.register_forward_pre_hook(lambda module, args, i=i: seen.setdefault(i, args[0].detach().clone()))
             for i, m in enumerate(modules)]
    try:
        model(inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return [seen[i] for i in range(len(modules))]


def ratios(timing: dict[str, dict], ideal: Callable[[dict[str, float]], float], goal: float, **extra) -> dict:
    """Measured and floor ratios (against `static`) from one `alternating_latency` result."""
    ms = {name: t["median_ms"] for name, t in timing.items()}
    return {"measured": ms["dynamic"] / ms["static"], "floor": ideal(ms) / ms["static"], "goal": goal,
            "ms": ms, **extra}


@torch.no_grad()
def adanet(batch: int, rounds: int, repeats: int) -> dict:
    """Adanet 110 with compare-latency's forced pattern: static − all blocks + executed rows + gates."""
    from adanet.experiments import forced_pattern
    from common.dynamic import gated_blocks
    from reproduce.compare import FORCED_RATE, _adanet, _forced_gates

    torch.manual_seed(0)
    dynamic, static = (m.eval() for m in _adanet())
    _forced_gates(dynamic, batch)
    blocks = [block for stage in residual_stages(static) for block in stage.blocks()]
    gates = [g.gate for g in gated_blocks(dynamic)]
    inputs = torch.randn(batch, 3, 32, 32)
    captured = captured_inputs(static, blocks, inputs)
    # Executed rows first: block l runs on the first k_l rows, the count the forced pattern gives it.
    counts = forced_pattern(batch, len(blocks), FORCED_RATE).sum(0).long().tolist()

    def all_blocks():
        for block, x in zip(blocks, captured):
            block(x)

    def executed_and_gates():
        for block, gate, x, count in zip(blocks, gates, captured, counts):
            gate(x)
            if count:
                block(x[:count])

    timing = alternating_latency({"dynamic": lambda: dynamic(inputs), "static": lambda: static(inputs),
                                  "all_blocks": all_blocks, "executed_and_gates": executed_and_gates},
                                 rounds, repeats)
    return ratios(timing, lambda ms: ms["static"] - ms["all_blocks"] + ms["executed_and_gates"], 0.69)


@torch.no_grad()
def _dag_shapes(dynamic: nn.Module, inputs: torch.Tensor) -> list[tuple[int, torch.Size]]:
    """(nodes N, one sample's node-feature shape: the input node's) of each DAG stage."""
    from dygraph.model import dag_stages

    shapes: list[tuple[int, torch.Size]] = []
    hooks = [s.first.register_forward_hook(lambda module, args, out, n=s.num_nodes: shapes.append((n, out.shape[1:])))
             for s in dag_stages(dynamic)]
    try:
        dynamic(inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return shapes


def _aggregation(batch: int, shapes: list[tuple[int, torch.Size]], backward: bool) -> Callable[[], None]:
    """Eqs. (1)-(2) alone: node j = bmm(weights [B, 1, j], bank[:, :j]) for every node of every stage
    (and in training ∂w = bmm(g, bankᵀ) and ∂bank[:, :j] += w ⊙ g, elementwise: the fastest kernels here)."""
    banks = [(torch.randn(batch, n - 1, shape.numel()), torch.rand(batch, 1, n - 1)) for n, shape in shapes]
    grads = [torch.zeros_like(bank) for bank, _ in banks] if backward else []

    def run():
        for index, (bank, weights) in enumerate(banks):
            for j in range(1, bank.shape[1] + 1):
                out = torch.bmm(weights[:, :, :j], bank[:, :j])
                if backward:  # the incoming gradient has the output's shape: reuse `out` as it
                    torch.bmm(out, bank[:, :j].transpose(1, 2))
                    grads[index][:, :j].addcmul_(weights[:, :, :j].transpose(1, 2), out)
    return run


@torch.no_grad()
def dygraph_inference(backbone: str, size: int, batch: int, rounds: int, repeats: int) -> dict:
    """DY-Graph with every edge open vs its backbone: static + aggregation + routers."""
    from dygraph.model import dag_stages
    from reproduce.compare import _dygraph

    torch.manual_seed(0)
    dynamic, static = (m.eval() for m in _dygraph(backbone)())
    inputs = torch.randn(batch, 3, size, size)
    shapes = _dag_shapes(dynamic, inputs)
    routers = [(router, torch.randn(batch, *shape)) for stage, (_, shape) in zip(dag_stages(dynamic), shapes)
               for router in stage.routers]

    def all_routers():
        for router, x in routers:
            router(x)

    timing = alternating_latency({"dynamic": lambda: dynamic(inputs), "static": lambda: static(inputs),
                                  "aggregation": _aggregation(batch, shapes, backward=False),
                                  "routers": all_routers}, rounds, repeats)
    return ratios(timing, lambda ms: ms["static"] + ms["aggregation"] + ms["routers"], 1.05)


def dygraph_training(depth: int, batch: int, rounds: int, steps: int) -> dict:
    """DY-Graph-`depth` training step vs the ResNet's (fp32, LR 0): static step + aggregation fwd + bwd."""
    from benchmarks.train_step import build, step_time

    torch.manual_seed(0)
    (dynamic, method), (static, static_method) = build(f"dygraph{depth}"), build(f"resnet{depth}")
    shapes = _dag_shapes(dynamic, torch.randn(2, 3, 32, 32))
    aggregation = _aggregation(batch, shapes, backward=True)
    step = {"dynamic": lambda: step_time(dynamic, method, "fp32", batch, steps),
            "static": lambda: step_time(static, static_method, "fp32", batch, steps)}
    # step_time returns its own median over `steps`; alternate the three like alternating_latency does
    seconds: dict[str, list[float]] = {"dynamic": [], "static": [], "aggregation": []}
    for _ in range(rounds):
        seconds["dynamic"].append(step["dynamic"]())
        seconds["static"].append(step["static"]())
        seconds["aggregation"].append(alternating_latency({"a": aggregation}, 1, steps)["a"]["median_ms"] / 1e3)
    timing = {name: {"median_ms": 1e3 * statistics.median(values)} for name, values in seconds.items()}
    return ratios(timing, lambda ms: ms["static"] + ms["aggregation"], 1.10)


@torch.no_grad()
def adn(batch: int, rounds: int, repeats: int) -> dict:
    """ADN ResNet-50 base-net vs super-net: super − the skipped blocks."""
    from adn.model import split_stages
    from reproduce.compare import _adn

    torch.manual_seed(0)
    base, super_ = (m.eval() for m in _adn())
    skipped = [sub.container[i] for sub in split_stages(super_.net) for i in sub.skippable]
    inputs = torch.randn(batch, 3, 224, 224)
    captured = captured_inputs(super_, skipped, inputs)

    def skipped_blocks():
        for block, x in zip(skipped, captured):
            block(x)

    timing = alternating_latency({"dynamic": lambda: base(inputs), "static": lambda: super_(inputs),
                                  "skipped": skipped_blocks}, rounds, repeats)
    return ratios(timing, lambda ms: ms["static"] - ms["skipped"], 0.656)


def main() -> None:
    """Measure every floor, print a table and write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per round (inference)")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per round")
    parser.add_argument("--only", nargs="*", default=None, help="row-name substrings to run")
    parser.add_argument("--out", default=None, help="JSON file for the measurements")
    args = parser.parse_args()
    r, n = args.rounds, args.repeats
    rows: dict[str, Callable[[], dict]] = {
        "Adanet 110, 32/54 forced, inference batch 1": lambda: adanet(1, r, n),
        "Adanet 110, 32/54 forced, inference batch 64": lambda: adanet(64, r, n),
        "DY-Graph ResNet-20, inference batch 1": lambda: dygraph_inference("resnet20_cifar", 32, 1, r, n),
        "DY-Graph ResNet-20, inference batch 64": lambda: dygraph_inference("resnet20_cifar", 32, 64, r, n),
        "DY-Graph ResNet-50, inference batch 1": lambda: dygraph_inference("resnet50", 224, 1, r, n),
        "DY-Graph ResNet-50, inference batch 8": lambda: dygraph_inference("resnet50", 224, 8, r, max(2, n // 3)),
        "DY-Graph MobileNetV2, inference batch 1": lambda: dygraph_inference("mobilenet_v2", 224, 1, r, n),
        "DY-Graph ResNet-20, training step batch 128": lambda: dygraph_training(20, 128, r, args.steps),
        "DY-Graph ResNet-56, training step batch 128": lambda: dygraph_training(56, 128, r, args.steps),
        "DY-Graph ResNet-110, training step batch 128": lambda: dygraph_training(110, 128, r, args.steps),
        "ADN ResNet-50 base vs super, inference batch 1": lambda: adn(1, r, n),
        "ADN ResNet-50 base vs super, inference batch 8": lambda: adn(8, r, max(2, n // 3)),
    }
    results = []
    print(f"{'row':52s} {'measured':>8s} {'floor':>6s} {'goal':>6s}  reachable", flush=True)
    for name, measure in rows.items():
        if args.only and not any(part in name for part in args.only):
            continue
        row = {"row": name, **measure()}
        row["goal_reachable"] = row["floor"] <= row["goal"]
        results.append(row)
        print(f"{name:52s} {row['measured']:8.3f} {row['floor']:6.3f} {row['goal']:6.3f}  "
              f"{'yes' if row['goal_reachable'] else 'no'}", flush=True)
    if args.out:
        record = {"rounds": r, "repeats": n, "steps": args.steps, "threads": torch.get_num_threads(),
                  "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                  "torch": torch.__version__,
                  "malloc_env": {k: os.environ.get(k) for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")},
                  "rows": results}
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
