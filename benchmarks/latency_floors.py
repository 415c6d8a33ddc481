"""Latency floors: what the equations alone cost, beside the measured ratio, for the speed goals.

    python benchmarks/latency_floors.py --out benchmarks/latency_floors.json

A goal of the README's Speed table can be out of reach for a reason that no implementation removes:
the work the method's equations require costs more wall-clock than its MACs suggest on this machine.
For each goal this script times, in one process and in alternating rounds (`alternating_latency`),
the dynamic model, its static network and the parts an ideal implementation could not avoid, each
part alone on inputs of its real shape:

- **Adanet 110, forced 32/54 blocks** (inference, batch 1 and 64): static − every block + the executed
  blocks, each on exactly the rows that execute it (a contiguous slice: no gather, no write-back)
  + the 54 gates (Eqs. 4-5). Nothing else: the skipped rows' post-activation is left out. At batch 64 a
  second floor, `floor_routed`, adds the routing that per-image decisions need in eager code: the
  executed rows are scattered over the batch, so they are gathered (`index_select`), and the block's
  output is every row's post-activated shortcut with the executed rows written over it. The goal is
  judged by this one: no eager kernel runs a block on rows it has not gathered.
- **DY-Graph, all edges open, inference**: static − each DAG stage's blocks run as a chain + the least
  eager code of that stage (`_minimal_stage`: per node one batched matmul over a bank that already holds
  the predecessors (Eqs. 1-2), the node, its router and threshold (Eqs. 3-4); nothing written back).
  At batch 1 this includes the dispatch cost of those few ops, which no eager implementation avoids.
- **DY-Graph training steps** (CIFAR ResNets): static step + Eqs. (1)-(2) as one batched matmul per
  node and its backward (∂w and ∂features, the latter accumulated in place) + the routers forward and
  backward (into their input's gradient).
- **Adanet 110 and RDI-Net 110 training steps**: static step + every gate forward and backward on its
  block's real input + the gate's mix alone (see `_gated_training_parts`).
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
import statistics
import sys
from pathlib import Path
from typing import Callable

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.backbones import residual_stages  # noqa: E402
from common.metrics import alternating_latency, paired_ratio  # noqa: E402
from common.reproduction import process_record, remember_code_state  # noqa: E402


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
    from common.backbones import block_parts
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

    # The same work with the pattern's real rows, which are scattered over the batch: gather them, run the
    # block, post-activate the shortcut of every row and write the executed rows over it.
    rows = [column.nonzero().squeeze(1) for column in forced_pattern(batch, len(blocks), FORCED_RATE).T > 0.5]

    def routed_and_gates():
        for block, gate, x, executed in zip(blocks, gates, captured, rows):
            gate(x)
            parts = block_parts(block)
            shortcut = parts.shortcut(x)
            out = torch.relu(shortcut)
            selected = x.index_select(0, executed)
            branch = parts.residual(selected)
            branch += selected if parts.shortcut_module is None else shortcut.index_select(0, executed)
            out[executed] = parts.post(branch)

    variants = {"dynamic": lambda: dynamic(inputs), "static": lambda: static(inputs),
                "all_blocks": all_blocks, "executed_and_gates": executed_and_gates}
    if batch > 1:
        variants["routed_and_gates"] = routed_and_gates
    timing = alternating_latency(variants, rounds, repeats)
    result = ratios(timing, lambda ms: ms["static"] - ms["all_blocks"] + ms["executed_and_gates"], 0.69)
    if batch > 1:
        ms = result["ms"]
        result["floor_routed"] = (ms["static"] - ms["all_blocks"] + ms["routed_and_gates"]) / ms["static"]
    return result


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


def _aggregation(batch: int, shapes: list[tuple[int, torch.Size]]) -> Callable[[], None]:
    """Eqs. (1)-(2) in training: node j = bmm(weights [B, 1, j], bank[:, :j]) for every node of every stage,
    ∂w = bmm(g, bankᵀ) and ∂bank[:, :j] += w ⊙ g, elementwise (the fastest kernels here)."""
    banks = [(torch.randn(batch, n - 1, shape.numel()), torch.rand(batch, 1, n - 1)) for n, shape in shapes]
    grads = [torch.zeros_like(bank) for bank, _ in banks]

    def run():
        for index, (bank, weights) in enumerate(banks):
            for j in range(1, bank.shape[1] + 1):
                out = torch.bmm(weights[:, :, :j], bank[:, :j])
                # the incoming gradient has the output's shape: reuse `out` as it
                torch.bmm(out, bank[:, :j].transpose(1, 2))
                grads[index][:, :j].addcmul_(weights[:, :, :j].transpose(1, 2), out)
    return run


def _minimal_stage(stage: nn.Module, batch: int, shape: torch.Size) -> Callable[[torch.Tensor], None]:
    """The least eager code of one DAG stage with every edge open: the first block and its router, then per
    node one bmm over a preallocated bank (Eqs. 1-2), the node, its router and threshold (Eqs. 3-4); nothing
    written back (no M, no bank writes, no checks), so it runs faster than any correct version."""
    bank = torch.randn(batch, stage.num_nodes - 1, shape.numel())
    weights = torch.rand(batch, 1, stage.num_nodes - 1)
    tau = stage.tau.detach() if stage.tau is not None else None

    def edges(j: int, y: torch.Tensor) -> None:
        alpha = stage.routers[j](y)
        if tau is not None:
            alpha * (alpha >= tau[j])

    def run(x: torch.Tensor) -> None:
        y = stage.first(x)
        edges(0, y)
        for j in range(1, stage.num_nodes):
            aggregated = torch.bmm(weights[:, :, :j], bank[:, :j]).view(batch, *shape)
            if j < stage.num_nodes - 1:
                edges(j, stage.nodes[j - 1](aggregated))
    return run


@torch.no_grad()
def dygraph_inference(backbone: str, size: int, batch: int, rounds: int, repeats: int) -> dict:
    """DY-Graph with every edge open vs its backbone: static − each stage's chain of blocks + its minimal DAG."""
    from dygraph.model import dag_stages
    from reproduce.compare import _dygraph

    torch.manual_seed(0)
    dynamic, static = (m.eval() for m in _dygraph(backbone)())
    inputs = torch.randn(batch, 3, size, size)
    stages = dag_stages(dynamic)
    captured = captured_inputs(dynamic, stages, inputs)
    minimal = [_minimal_stage(stage, batch, shape) for stage, (_, shape) in zip(stages, _dag_shapes(dynamic, inputs))]

    def chains():  # the stage's blocks one after the other, as in the static network
        for stage, x in zip(stages, captured):
            y = stage.first(x)
            for node in stage.nodes:
                y = node(y)

    def minimal_dags():
        for run, x in zip(minimal, captured):
            run(x)

    timing = alternating_latency({"dynamic": lambda: dynamic(inputs), "static": lambda: static(inputs),
                                  "chains": chains, "minimal_dags": minimal_dags}, rounds, repeats)
    return ratios(timing, lambda ms: ms["static"] - ms["chains"] + ms["minimal_dags"], 1.05)


def _training_floor(name: str, parts: Callable[[nn.Module, nn.Module, int], dict[str, Callable[[], None]]],
                    batch: int, rounds: int, steps: int, goal: float) -> dict:
    """Training step of model `name` vs its static ResNet's (fp32, LR 0) and the static step + `parts`, step by
    step interleaved, ratios paired by slot (the machine's speed drifts)."""
    from benchmarks.train_step import build, static_of, stepper

    torch.manual_seed(0)
    (dynamic, method), (static, static_method) = build(name), build(static_of(name))
    extra = parts(dynamic, static, batch)
    calls = {"dynamic": stepper(dynamic, method, "fp32", batch), "static": stepper(static, static_method, "fp32", batch),
             **extra}
    timing = alternating_latency(calls, rounds, steps, warmup=1, interleave=True)
    seconds = {name: [ms / 1e3 for ms in t["calls_ms"]] for name, t in timing.items()}
    ideal = [sum(seconds[part][i] for part in ("static", *extra)) for i in range(len(seconds["static"]))]
    return {"measured": paired_ratio(seconds["dynamic"], seconds["static"]),
            "floor": paired_ratio(ideal, seconds["static"]), "goal": goal,
            "ms": {part: 1e3 * statistics.median(values) for part, values in seconds.items()}}


def _dygraph_training_parts(dynamic: nn.Module, static: nn.Module, batch: int) -> dict[str, Callable[[], None]]:
    """Eqs. (1)-(2) forward and backward over every DAG stage, and the routers of Eq. (3) forward and backward."""
    from dygraph.model import dag_stages

    shapes = _dag_shapes(dynamic, torch.randn(2, 3, 32, 32))
    routers = [(router, torch.randn(batch, *shape, requires_grad=True))
               for stage, (_, shape) in zip(dag_stages(dynamic), shapes) for router in stage.routers]

    def all_routers():
        for _, x in routers:
            x.grad = None
        with torch.enable_grad():  # alternating_latency times under no_grad
            sum(router(x).sum() for router, x in routers).backward()

    return {"aggregation": _aggregation(batch, shapes), "routers": all_routers}


def _gated_training_parts(dynamic: nn.Module, static: nn.Module, batch: int) -> dict[str, Callable[[], None]]:
    """The gates' forward and backward on every block's real input, and the gate's mix alone.

    Adanet's Eq. (3), post(shortcut + z·F), costs the static forward's passes; its backward adds ∂F = g·z
    and ∂z = ⟨g, F⟩ per image. RDI-Net's Eq. (9), v·F_n(x) + (1 − v)·x, adds one lerp to the forward and
    g·v, g − g·v, ⟨g, F_n(x)⟩ and ⟨g, x⟩ to the backward (x ≥ 0 after the previous block's ReLU: no
    second ReLU on the skipped path).
    """
    from common.dynamic import gated_blocks

    blocks = [block for stage in residual_stages(static.net) for block in stage.blocks()]  # a HubBackbone
    gated = gated_blocks(dynamic)
    captured = [x.requires_grad_() for x in captured_inputs(static, blocks, torch.randn(batch, 3, 32, 32))]
    with torch.no_grad():
        outputs = [block(x) for block, x in zip(blocks, captured)]
    output_mix = gated[0].mix == "output"
    v = torch.rand(batch, 1, 1, 1)

    def gates():
        memory = getattr(dynamic, "memory", None)
        if memory is not None:  # RDI-Net's routers read the features of the routers before them
            memory.clear()
        for x in captured:
            x.grad = None
        with torch.enable_grad():  # alternating_latency times under no_grad
            torch.stack([block.gate(x)[0] for block, x in zip(gated, captured)], dim=1).sum().backward()

    def mix():
        for x, out in zip(captured, outputs):
            grad = out  # the incoming gradient has the output's shape
            rows = grad.view(batch, 1, -1)
            torch.bmm(rows, out.view(batch, -1, 1))                 # ⟨g, F⟩ per image
            through_gate = grad * v                                 # ∂F = g·v
            if output_mix and x.shape == out.shape:
                torch.lerp(x.detach(), out, v)                      # Eq. (9) forward
                torch.bmm(rows, x.detach().view(batch, -1, 1))      # ⟨g, x⟩
                grad - through_gate                                 # ∂x through the skipped path

    return {"gates": gates, "mix": mix}


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
    remember_code_state()
    r, n = args.rounds, args.repeats

    def training(parts, name: str, goal: float) -> dict:
        return _training_floor(name, parts, 128, r, args.steps, goal)

    rows: dict[str, Callable[[], dict]] = {
        "Adanet 110, 32/54 forced, inference batch 1": lambda: adanet(1, r, n),
        "Adanet 110, 32/54 forced, inference batch 64": lambda: adanet(64, r, n),
        "DY-Graph ResNet-20, inference batch 1": lambda: dygraph_inference("resnet20_cifar", 32, 1, r, n),
        "DY-Graph ResNet-20, inference batch 64": lambda: dygraph_inference("resnet20_cifar", 32, 64, r, n),
        "DY-Graph ResNet-50, inference batch 1": lambda: dygraph_inference("resnet50", 224, 1, r, n),
        "DY-Graph ResNet-50, inference batch 8": lambda: dygraph_inference("resnet50", 224, 8, r, max(2, n // 3)),
        "DY-Graph MobileNetV2, inference batch 1": lambda: dygraph_inference("mobilenet_v2", 224, 1, r, n),
        "DY-Graph MobileNetV2, inference batch 8": lambda: dygraph_inference("mobilenet_v2", 224, 8, r, max(2, n // 3)),
        "Adanet 110, training step batch 128": lambda: training(_gated_training_parts, "adanet110", 1.10),
        "RDI-Net 110, training step batch 128": lambda: training(_gated_training_parts, "rdinet110", 1.15),
        "DY-Graph ResNet-20, training step batch 128": lambda: training(_dygraph_training_parts, "dygraph20", 1.10),
        "DY-Graph ResNet-56, training step batch 128": lambda: training(_dygraph_training_parts, "dygraph56", 1.10),
        "DY-Graph ResNet-110, training step batch 128": lambda: training(_dygraph_training_parts, "dygraph110", 1.10),
        "ADN ResNet-50 base vs super, inference batch 1": lambda: adn(1, r, n),
        "ADN ResNet-50 base vs super, inference batch 8": lambda: adn(8, r, max(2, n // 3)),
    }
    results = []
    print(f"{'row':52s} {'measured':>8s} {'floor':>6s} {'goal':>6s}  reachable", flush=True)
    for name, measure in rows.items():
        if args.only and not any(part in name for part in args.only):
            continue
        row = {"row": name, **measure()}
        # where per-image routing is part of the work (Adanet at batch 64), the goal is judged by the routed floor
        row["goal_reachable"] = row.get("floor_routed", row["floor"]) <= row["goal"]
        results.append(row)
        print(f"{name:52s} {row['measured']:8.3f} {row['floor']:6.3f} {row['goal']:6.3f}  "
              f"{'yes' if row['goal_reachable'] else 'no'}"
              + (f"  (routed floor {row['floor_routed']:.3f})" if "floor_routed" in row else ""), flush=True)
    if args.out:
        if args.only and Path(args.out).exists():  # keep the rows this call did not measure
            measured = {row["row"] for row in results}
            earlier = json.loads(Path(args.out).read_text())
            # a kept row names the run that measured it, where that differs from this one
            stamp = {"provenance": earlier["provenance"]} if "provenance" in earlier else {}
            kept = [{**stamp, **row} for row in earlier["rows"] if row["row"] not in measured]
            order = list(rows)
            results = sorted(kept + results, key=lambda row: order.index(row["row"]) if row["row"] in order else len(order))
        record = {"rounds": r, "repeats": n, "steps": args.steps, "threads": torch.get_num_threads(),
                  "provenance": process_record(), "rows": results}
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
