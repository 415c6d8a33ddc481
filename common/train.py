"""One training loop for every paper, on `accelerate`.

bf16 autocast and channels_last on GPU, optional `torch.compile`; SGD with momentum / nesterov and
weight decay (optionally none on norms and biases); parameter groups with their own LR and
schedule; multistep or cosine-with-warmup schedules stepped per iteration; label smoothing.

A paper plugs in through a `Method`: its `training_step` may add losses, run several forward
passes and call `Method.backward` between them (ADN: super-net, backward, base-net, backward);
`param_groups` gives gates/routers their own LR; `on_epoch_start` switches phases (RDI-Net's
warm-up); `evaluation_step` returns per-image extras (gate decisions) that are gathered across
processes with the logits.

Every epoch writes `checkpoint.pt` atomically (temporary file + rename) and `metrics.jsonl`;
`resume=True` restores weights, optimizer, schedule, RNG states and history and continues exactly.
Runs unchanged under `accelerate launch` on several GPUs.
"""
from __future__ import annotations

import errno
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .data import DataBundle
from .metrics import topk_correct

if TYPE_CHECKING:
    from accelerate import Accelerator, PartialState


@dataclass
class TrainConfig:
    """Optimisation recipe; defaults are He et al. 2016's CIFAR recipe."""
    epochs: int = 164
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    no_decay_norm_bias: bool = False
    schedule: str = "multistep"              # "multistep" | "cosine"
    milestones: tuple[int, ...] = (82, 123)  # epochs, for "multistep"
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    precision: str = "auto"                  # "auto": bf16 autocast on CUDA, fp32 on CPU | "bf16" | "fp32"
    seed: int = 0
    compile: bool = False
    tensorboard: bool = False


SCHEDULES = ("multistep", "cosine")
PRECISIONS = ("auto", "bf16", "fp32")


def uses_bf16(config: TrainConfig) -> bool:
    """Whether the recipe trains (and evaluates) under bf16 autocast on this machine."""
    if config.precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {config.precision!r}; valid: {', '.join(PRECISIONS)}.")
    return config.precision == "bf16" or (config.precision == "auto" and torch.cuda.is_available())


@dataclass
class GroupSpec:
    """A parameter group with its own LR and decay schedule (e.g. Adanet's gates: 2e-4, ×0.4)."""
    name: str
    selects: Callable[[str, nn.Parameter], bool]
    lr: float
    gamma: float | None = None                 # None: the config's
    milestones: tuple[int, ...] | None = None  # None: the config's
    weight_decay: float | None = None          # None: the config's


@dataclass
class StepOutput:
    loss: torch.Tensor
    logits: torch.Tensor
    logs: dict[str, float | torch.Tensor] = field(default_factory=dict)  # tensors: summed on the device
    backward_done: bool = False  # the step called `Method.backward` itself; `fit` then only steps the optimiser


class TrainingError(RuntimeError):
    """Training that cannot go on (no optimiser step possible, a non-finite loss); the message says why."""


class BudgetExhausted(RuntimeError):
    """The time budget ran out; finished epochs are checkpointed and the run continues on the next call."""


class Method:
    """Plain supervised training with cross-entropy; papers subclass what they change.

    Its public attributes are its hyperparameters (`hparams`, recorded in the run key): keep state that
    changes during training in attributes whose names start with an underscore.
    """

    # True where some parameters get no gradient in some steps (RDI-Net's warm-up leaves the routers
    # out): DDP then has to look for unused parameters.
    unused_parameters: bool = False
    # False where the training step's shapes depend on the data (DY-Graph runs a block on the images
    # that keep it): torch.compile then breaks its graph at every block and runs slower than eager.
    compiles: bool = True
    # The backward function `fit` binds (accelerate's); None outside `fit`: plain `loss.backward()`.
    _backward: Callable[[torch.Tensor], None] | None = None

    def hparams(self) -> dict:
        """The method's hyperparameters: its public attributes."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def param_groups(self, model: nn.Module) -> list[GroupSpec]:
        """Extra parameter groups; every parameter not selected goes to the default group."""
        return []

    def on_epoch_start(self, model: nn.Module, epoch: int) -> None:
        """Called before each training epoch (0-based)."""

    def on_epoch_end(self, model: nn.Module, epoch: int, record: dict) -> None:
        """Called after each epoch's checkpoint is written."""

    def backward(self, loss: torch.Tensor) -> None:
        """Backpropagate `loss` as `fit` would, for a `training_step` that does it itself (then `backward_done`)."""
        if self._backward is None:
            loss.backward()
        else:
            self._backward(loss)

    def training_step(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      criterion: nn.Module) -> StepOutput:
        """One forward (or several) and the loss to minimise; gradients are zeroed before it."""
        logits = model(images)
        return StepOutput(criterion(logits, labels), logits)

    def evaluation_step(self, model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits and per-image extras ([B, …] tensors) to gather over the test set."""
        return model(images), {}


# Redraw the bar at most every second on a terminal, every 30 s into a log file.
_BAR_INTERVAL = 1.0 if sys.stderr.isatty() else 30.0


def _lr_factor(step: int, steps_per_epoch: int, config: TrainConfig, gamma: float,
               milestones: tuple[int, ...]) -> float:
    epoch = step / steps_per_epoch
    if config.warmup_epochs and epoch < config.warmup_epochs:
        return (epoch + 1 / steps_per_epoch) / config.warmup_epochs
    if config.schedule == "multistep":
        return gamma ** sum(epoch >= m for m in milestones)
    progress = (epoch - config.warmup_epochs) / max(config.epochs - config.warmup_epochs, 1e-8)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def build_optimizer(model: nn.Module, config: TrainConfig, groups: list[GroupSpec],
                    steps_per_epoch: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """SGD over the default group and the method's groups, with one LR schedule per group."""
    if config.schedule not in SCHEDULES:
        raise ValueError(f"Unknown schedule {config.schedule!r}; valid: {', '.join(SCHEDULES)}.")
    specs = [*groups, GroupSpec("default", lambda n, p: True, config.lr)]
    buckets: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        spec = next(s for s in specs if s.selects(name, param))
        no_decay = config.no_decay_norm_bias and param.ndim <= 1
        buckets.setdefault((spec.name, no_decay), []).append(param)
    param_groups, factors = [], []
    for spec in specs:
        for no_decay in (False, True):
            params = buckets.get((spec.name, no_decay))
            if not params:
                continue
            decay = 0.0 if no_decay else (config.weight_decay if spec.weight_decay is None else spec.weight_decay)
            param_groups.append({"params": params, "lr": spec.lr, "weight_decay": decay, "name": spec.name})
            gamma = config.gamma if spec.gamma is None else spec.gamma
            milestones = config.milestones if spec.milestones is None else spec.milestones
            factors.append(lambda step, g=gamma, m=milestones: _lr_factor(step, steps_per_epoch, config, g, m))
    optimizer = torch.optim.SGD(param_groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factors)


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class OutputError(OSError):
    """A result, checkpoint or weights file that cannot be written; the message names the folder."""


def atomic_write(write: Callable[[Path], None], path: Path) -> None:
    """`write` a temporary file, then rename it to `path`: a kill or a full disk never leaves a partial file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as error:  # torch.save reports a full disk as a RuntimeError
        tmp.unlink(missing_ok=True)
        full = getattr(error, "errno", None) == errno.ENOSPC or "No space left" in str(error) \
            or "file write failed" in str(error)
        if full:
            raise OutputError(f"no space left on {path.parent}: free some space and rerun (with --resume)") from None
        raise OutputError(f"cannot write {path}: {getattr(error, 'strerror', None) or error}") from None


def atomic_save(obj: object, path: Path) -> None:
    """torch.save to a temporary file, then rename: a kill never leaves a half-written file."""
    atomic_write(lambda tmp: torch.save(obj, tmp), path)


def atomic_write_text(text: str, path: Path) -> None:
    """Write a text file through a temporary file and rename."""
    atomic_write(lambda tmp: tmp.write_text(text), path)


@dataclass
class FitResult:
    model: nn.Module
    history: list[dict]
    evaluation: dict[str, torch.Tensor]  # logits, labels and the method's extras over the test set


def evaluate(model: nn.Module, data: DataBundle, method: Method | None = None, accelerator: Accelerator | None = None,
             progress: bool = False, bf16: bool | None = None) -> dict[str, torch.Tensor]:
    """Logits, labels and per-image extras over the test set, gathered across processes.

    Precision: the accelerator's when given, else bf16 autocast when `bf16` (default: on CUDA), as `fit`.
    """
    method = method or Method()
    device = accelerator.device if accelerator else next(model.parameters()).device
    loader = data.test_loader
    model.eval()
    outputs: dict[str, list[torch.Tensor]] = {}
    # Iterating a DataLoader draws a seed from torch's global RNG: fork it, so that evaluating never
    # moves the training stream (a resumed or reused run then continues exactly).
    forked = [device.index or 0] if device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=forked):
        for images, labels in tqdm(loader, desc="eval", leave=False, disable=not progress, mininterval=_BAR_INTERVAL,
                                   delay=3.0):  # a bar only when evaluating takes more than a few seconds
            images, labels = images.to(device), labels.to(device)
            inputs = data.preprocess(images, train=False)
            if device.type == "cuda":
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            # the same precision as `fit`, with or without an accelerator
            autocast_bf16 = device.type == "cuda" if bf16 is None else bf16
            with (accelerator.autocast() if accelerator else
                  torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast_bf16)):
                logits, extras = method.evaluation_step(model, inputs)
            batch = {"logits": logits.float(), "labels": labels, **extras}
            if accelerator is not None:
                batch = accelerator.gather_for_metrics(batch)
            for key, value in batch.items():
                outputs.setdefault(key, []).append(value.detach().cpu())
    return {key: torch.cat(values) for key, values in outputs.items()}


def process_state() -> PartialState:
    """accelerate's process state, started on the CPU where there is no CUDA: then `accelerate launch` with
    several processes (even `--multi_gpu` on a machine without GPUs) runs them over gloo."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def jsonl(records: list[dict]) -> str:
    """One strict-JSON line per record; non-finite numbers become null."""
    def finite(value):
        return None if isinstance(value, float) and not math.isfinite(value) else value
    return "".join(json.dumps({k: finite(v) for k, v in r.items()}, allow_nan=False) + "\n" for r in records)


def _leftover_temporaries(out_dir: Path) -> None:
    """Remove the temporary files a killed run may have left (`atomic_save` / `atomic_write_text`)."""
    for path in out_dir.glob(".*.tmp*"):
        path.unlink(missing_ok=True)


def fit(model: nn.Module, data: DataBundle, config: TrainConfig, out_dir: str | os.PathLike,
        method: Method | None = None, resume: bool = False, progress: bool = True,
        desc: str = "train", deadline: float | None = None) -> FitResult:
    """Train `model` on `data` with `config`, checkpointing each epoch into `out_dir`.

    `config.batch_size` is the global batch: under `accelerate launch` with N processes each process
    takes batch/N images of every batch at the recipe's LR, so the recipe is the same at any process
    count. Targets train through `common.runs.train`, which names and seeds the run. Past `deadline`
    (a `time.time()`), the run stops after the epoch's checkpoint with `BudgetExhausted`.
    """
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs, set_seed

    method = method or Method()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available()
    process_state()
    accelerator = Accelerator(
        cpu=not cuda, mixed_precision="bf16" if uses_bf16(config) else "no",
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, split_batches=True),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=method.unused_parameters)],
        log_with="tensorboard" if config.tensorboard else None, project_dir=str(out_dir))
    steps_per_epoch = len(data.train_loader)  # global batches: one optimiser step each
    if steps_per_epoch == 0:
        images = len(data.train_loader.dataset)
        raise TrainingError(f"{data.name}: {images} training images make no full batch of {config.batch_size} "
                            f"(the last partial batch is dropped), so no optimiser step would run: lower the "
                            f"batch size or use more images.")
    if config.batch_size % accelerator.num_processes:
        raise TrainingError(f"The global batch {config.batch_size} does not split over "
                            f"{accelerator.num_processes} processes: launch a process count that divides it.")
    if accelerator.num_processes > 1:
        accelerator.print(f"{desc}: global batch {config.batch_size} = {accelerator.num_processes} processes × "
                          f"{config.batch_size // accelerator.num_processes}, {steps_per_epoch} steps per epoch")
    set_seed(config.seed)
    if cuda:
        torch.backends.cudnn.benchmark = True
        model = model.to(memory_format=torch.channels_last)
        data = data.to(accelerator.device)  # small uint8 sets live on the GPU: no host copies per batch
    optimizer, scheduler = build_optimizer(model, config, method.param_groups(model), steps_per_epoch)
    model, optimizer, train_loader, test_loader = accelerator.prepare(
        model, optimizer, data.train_loader, data.test_loader)
    prepared = DataBundle(**{**data.__dict__, "train_loader": train_loader, "test_loader": test_loader})
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    checkpoint_path, log_path = out_dir / "checkpoint.pt", out_dir / "metrics.jsonl"
    history: list[dict] = []
    start_epoch = 0
    if resume and checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        accelerator.unwrap_model(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history, start_epoch = state["history"], state["epoch"] + 1
        _set_rng_state(state["rng"])
        if accelerator.is_main_process:
            _leftover_temporaries(out_dir)
            atomic_write_text(jsonl(history), log_path)
        trained_on = state.get("num_processes", 1)
        if trained_on != accelerator.num_processes:
            accelerator.print(f"Resuming a run trained on {trained_on} process(es) with {accelerator.num_processes}: "
                              f"same global batch and schedule, but not bit-identical to an uninterrupted run.")
        accelerator.print(f"Resumed from {checkpoint_path} after epoch {start_epoch}.")
    if config.tensorboard:
        accelerator.init_trackers(desc)
    # torch.compile where the method's step has fixed shapes (data-dependent skipping breaks graphs)
    train_model = torch.compile(model) if config.compile and method.compiles else model
    method._backward = accelerator.backward
    evaluation: dict[str, torch.Tensor] = {}
    for epoch in range(start_epoch, config.epochs):
        method.on_epoch_start(accelerator.unwrap_model(model), epoch)
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        model.train()
        device = accelerator.device
        # Sums stay on the device: no host sync inside the step loop (read once per epoch).
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        correct = torch.zeros((), device=device, dtype=torch.int64)
        first_bad_step = torch.full((), -1, device=device, dtype=torch.int64)
        seen = 0
        logs_sum: dict[str, torch.Tensor | float] = {}
        start = last_shown = time.perf_counter()
        bar = tqdm(train_loader, desc=f"{desc} {epoch + 1}/{config.epochs}", leave=False,
                   disable=not (progress and accelerator.is_main_process), mininterval=_BAR_INTERVAL)
        for step, (images, labels) in enumerate(bar):
            inputs = prepared.preprocess(images, train=True)
            if cuda:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            optimizer.zero_grad(set_to_none=True)
            with accelerator.autocast():
                out = method.training_step(train_model, inputs, labels, criterion)
            if not out.backward_done:
                accelerator.backward(out.loss)
            optimizer.step()
            scheduler.step()
            loss = out.loss.detach()
            first_bad_step = torch.where((first_bad_step < 0) & ~torch.isfinite(loss),
                                         torch.full_like(first_bad_step, step), first_bad_step)
            loss_sum += loss.double() * len(labels)
            correct += (out.logits.detach().argmax(1) == labels).sum()
            seen += len(labels)
            for key, value in out.logs.items():
                logs_sum[key] = logs_sum.get(key, 0.0) + value * len(labels)
            now = time.perf_counter()
            if now - last_shown >= _BAR_INTERVAL and not bar.disable:  # a sync only when the bar redraws
                last_shown = now
                bar.set_postfix(loss=f"{float(loss_sum) / seen:.3f}", acc=f"{100 * int(correct) / seen:.1f}",
                                img_s=f"{seen * accelerator.num_processes / (now - start):.0f}")
        train_time = time.perf_counter() - start
        bad_step = int(first_bad_step)
        if bad_step >= 0:
            lr = config.lr * _lr_factor(epoch * steps_per_epoch + bad_step, steps_per_epoch, config,
                                        config.gamma, config.milestones)
            kept = (f"the checkpoint after epoch {history[-1]['epoch']} is kept" if history
                    else "no epoch finished, so no checkpoint was written")
            raise TrainingError(f"{desc}: the loss became non-finite in epoch {epoch + 1}, step {bad_step + 1} of "
                                f"{steps_per_epoch} (LR {lr:.4g}); {kept} in {out_dir}. Lower the LR or check the data.")
        evaluation = evaluate(model, prepared, method, accelerator)
        top = topk_correct(evaluation["logits"], evaluation["labels"], (1, 5))
        seen = max(seen, 1)
        record = {"epoch": epoch + 1, "train_loss": float(loss_sum) / seen,
                  "train_top1": 100 * int(correct) / seen,
                  "test_top1": 100 * top[1] / len(evaluation["labels"]),
                  "test_top5": 100 * top[5] / len(evaluation["labels"]),
                  "lr": optimizer.param_groups[0]["lr"], "epoch_seconds": train_time,
                  **{key: float(value) / seen for key, value in logs_sum.items()}}
        history.append(record)
        if accelerator.is_main_process:
            atomic_save({"model": accelerator.unwrap_model(model).state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "epoch": epoch, "history": history,
                         "rng": _rng_state(), "config": asdict(config),
                         "num_processes": accelerator.num_processes}, checkpoint_path)
            atomic_write_text(jsonl(history), log_path)
            if progress:
                tqdm.write(f"{desc} epoch {epoch + 1}/{config.epochs}: loss {record['train_loss']:.3f} "
                           f"test top-1 {record['test_top1']:.2f}% ({train_time:.1f} s)")
        if config.tensorboard:
            accelerator.log(record, step=epoch + 1)
        accelerator.wait_for_everyone()
        method.on_epoch_end(accelerator.unwrap_model(model), epoch, record)
        if deadline is not None and time.time() > deadline and epoch + 1 < config.epochs:
            method._backward = None
            raise BudgetExhausted(f"{desc}: the budget ran out after epoch {epoch + 1} of {config.epochs}; "
                                  f"the checkpoint in {out_dir} continues it on the next call.")
    if not evaluation:
        evaluation = evaluate(model, prepared, method, accelerator)
    method._backward = None
    if config.tensorboard:
        accelerator.end_training()
    # Without accelerate's mixed-precision forward wrapper: a returned model runs as one loaded from its
    # safetensors does (otherwise every later forward of a bf16 run is silently autocast, and per-block
    # MAC counting meets bf16 activations).
    return FitResult(accelerator.unwrap_model(model, keep_fp32_wrapper=False), history, evaluation)
