"""Training-step time of CIFAR models and loop settings, measured in one process, alternating, medians.

    python benchmarks/train_step.py                                   # every method at ResNet-20 depth
    python benchmarks/train_step.py --models resnet110 adanet110 rdinet110 --batch 128
    python benchmarks/train_step.py --models resnet20 --settings fp32 bf16 channels_last bf16+channels_last
    python benchmarks/train_step.py --models speed --rounds 3 --steps 3   # the README's Speed table
    python benchmarks/train_step.py --models resnet20 --settings bf16+compile --batch 64 --threads 1   # run two at once

`--models speed` stands for the dynamic models of the README's Speed table and their static ResNets.

One step = each method's own `training_step` (its losses and extra passes), backward and an SGD step
at learning rate 0 (all its arithmetic, parameters unchanged: every step times the same graph), on a
random CIFAR-shaped batch. Variants (model × setting) run step by step, interleaved by
`common.metrics.alternating_latency` (every variant one timed step per slot, the order reversed every
other slot), so that a change in the machine's speed hits all alike; each keeps the median of its steps. Ratios are against the first variant, and
(column `vs static`) against the static ResNet of the same depth when it is measured: the median over
slots of each slot's ratio. Set `MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=4294967296`
(the script records whether they are set): glibc's allocator otherwise makes one process up to 1.7×
slower.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Callable

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.metrics import alternating_latency, paired_ratio  # noqa: E402
from common.reproduction import process_record, remember_code_state  # noqa: E402
from common.train import Method, TrainConfig, build_optimizer  # noqa: E402
from reproduce.cli import set_threads, threads_arg  # noqa: E402


def build(name: str) -> tuple[nn.Module, Method]:
    """A CIFAR-10 model and its training method by short name."""
    from common.hub import HubBackbone

    if name.startswith("resnet"):
        return HubBackbone(f"{name}_cifar", 10), Method()
    if name.startswith("adanet"):
        from adanet import create_model
        from adanet.losses import AdanetMethod
        return create_model(name), AdanetMethod()
    if name.startswith("rdinet"):
        from rdinet import create_model
        from rdinet.method import RDIMethod
        return create_model(name, num_classes=10), RDIMethod(0.6, alpha=0.2, dataset="cifar10")
    if name.startswith("dygraph"):
        from dygraph import create_model
        # τ far below every π = σ(·) > 0, so that SGD steps on random data cannot close edges during the
        # benchmark: the full graph is timed (MACs fraction 1.00–1.02), not a graph that shrinks as it trains.
        return create_model(f"dygraph_resnet{name.removeprefix('dygraph')}_cifar", num_classes=10,
                            tau_init=-10.0), Method()
    if name.startswith("adn"):
        from adn.method import ADNMethod
        from adn.model import ADNet
        return ADNet(f"resnet{name.removeprefix('adn')}_cifar", 10), ADNMethod()
    raise SystemExit(f"unknown model {name!r}: resnetN, adanetN, rdinetN, dygraphN or adnN")


# each static ResNet right before the models built on it: a pair runs seconds apart within a round
SPEED_MODELS = ["resnet20", "dygraph20", "adn20", "resnet56", "dygraph56", "resnet110", "adanet110", "rdinet110",
                "dygraph110"]


def static_of(name: str) -> str:
    """The static ResNet a model is built on: `resnet` + its depth digits."""
    return "resnet" + "".join(c for c in name if c.isdigit())


def stepper(model: nn.Module, method: Method, setting: str, batch: int,
            device: torch.device = torch.device("cpu")) -> Callable[[], None]:
    """Set `model` up for `setting` (mode, layout, compile, an SGD optimizer at LR 0) and return a closure that
    runs one training step on a fixed random batch; the first step has run (warm-up)."""
    channels_last, bf16 = "channels_last" in setting, "bf16" in setting
    model.to(device).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    step_model = torch.compile(model) if "compile" in setting else model
    # LR 0: the SGD step does all its arithmetic but leaves the parameters as built, so every timed step
    # runs the same graph (deep DY-Graphs on random data would otherwise blow up and close their edges).
    optimizer, _ = build_optimizer(model, TrainConfig(lr=0.0, milestones=()), method.param_groups(model), 100)
    criterion = nn.CrossEntropyLoss()
    images = torch.randn(batch, 3, 32, 32, device=device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (batch,), device=device)

    def step() -> None:
        with torch.enable_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = method.training_step(step_model, images, labels, criterion)
            optimizer.zero_grad(set_to_none=True)
            if not getattr(out, "backward_done", False):
                out.loss.backward()
        optimizer.step()

    step()
    return step


def main() -> None:
    """Parse, measure alternating rounds, print a table and write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet20", "adanet20", "rdinet20", "dygraph20", "adn20"])
    parser.add_argument("--settings", nargs="+", default=["fp32"],
                        help="fp32, bf16, channels_last, compile, or joined with + (bf16+channels_last)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="timed steps of each variant per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=None, help="JSON file for the measurements")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=threads_arg, default=None, help="torch CPU threads (default: one per core)")
    args = parser.parse_args()
    remember_code_state()
    set_threads(args.threads)
    if args.models == ["speed"]:
        args.models = SPEED_MODELS
    variants = [(m, s) for m in args.models for s in args.settings]
    calls = {}
    for model_name, setting in variants:
        torch.manual_seed(0)  # every variant its own model: channels_last and compile change it in place
        calls[f"{model_name} {setting}"] = stepper(*build(model_name), setting, args.batch, torch.device(args.device))
    # step by step, interleaved: the machine's speed drifts by up to 1.6× within seconds here
    timing = alternating_latency(calls, args.rounds, args.steps, warmup=0, device=torch.device(args.device),
                                 interleave=True)
    seconds = {name: [ms / 1e3 for ms in t["calls_ms"]] for name, t in timing.items()}
    first = statistics.median(seconds[f"{variants[0][0]} {variants[0][1]}"])
    rows = []
    print(f"batch {args.batch}, {args.rounds} rounds × {args.steps} interleaved steps, torch threads "
          f"{torch.get_num_threads()}, MALLOC_MMAP_THRESHOLD_={os.environ.get('MALLOC_MMAP_THRESHOLD_', 'unset')}")
    print(f"{'model':12s} {'setting':24s} {'ms/step':>9s} {'img/s':>7s} {'ratio':>6s} {'vs static':>9s}")
    for model_name, setting in variants:
        times = seconds[f"{model_name} {setting}"]
        median = statistics.median(times)
        static = seconds.get(f"{static_of(model_name)} {setting}")
        vs_static = paired_ratio(times, static) if static else None
        rows.append({"model": model_name, "setting": setting, "ms_per_step": 1e3 * median,
                     "images_per_s": args.batch / median, "ratio": median / first, "vs_static": vs_static,
                     "step_ms": [1e3 * t for t in times]})
        print(f"{model_name:12s} {setting:24s} {1e3 * median:9.1f} {args.batch / median:7.0f} {median / first:6.2f} "
              f"{'' if vs_static is None else f'{vs_static:9.2f}'}")
    if args.out:
        record = {"batch": args.batch, "steps": args.steps, "rounds": args.rounds, "threads": torch.get_num_threads(),
                  "provenance": process_record(), "rows": rows}
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
