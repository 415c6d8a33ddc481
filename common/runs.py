"""Training runs named by what determines their weights: the one way every target trains a row.

A run's key is a sha256 over its content (`run_content`): the model (factory and arguments), the
method (class and every hyperparameter), the recipe (`TrainConfig` without its seed; its batch size
is the global batch), the data (name, fingerprint, limits) and the seed. A run folder
`<root>/<model>-<key[:12]>/` holds

- `run.json`: the key's full content, the row that asked for it, and `"finished": true` once done;
- `checkpoint.pt`: the last finished epoch, while the run is unfinished (removed when it finishes);
- `metrics.jsonl`: one JSON record per epoch;
- `config.json` + `model.safetensors`: the final weights in Hub layout, once finished.

A finished run is reused by any target that asks for the same key (never by another key). An
unfinished one continues only with `resume=True`, or starts over with `restart=True`; otherwise it is
refused. A run trained on the CPU also records torch's thread count (`cpu_threads`): it changes how
reductions split, hence the weights' last bits, so a run resumes only with the count it started with.
Every RNG is seeded from the key (which holds `--seed`) before the model is built, and again when the
run returns, so a row never depends on which rows ran before it or on whether it was trained now or
reused. One process trains a run at a time: its folder is locked while it trains, and another process
that asks for it waits, or with `wait=False` gets `RunBusy` and can do other work first.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .data import DataBundle
from .train import (BudgetExhausted, Method, TrainConfig, TrainingError, evaluate, fit, process_state,
                    uses_bf16)

RUN_FORMAT = 2      # bump when a change makes old runs' weights mean something else
NOT_IN_KEY = ("seed", "tensorboard")  # TrainConfig fields that do not determine the weights (seed: its own field)


class RunError(RuntimeError):
    """A run that cannot start or continue as asked; the message says what to do."""


class ModelSpec:
    """A model to build once the run is seeded: a factory and the arguments the key records."""

    def __init__(self, factory: Callable[..., nn.Module], *args: Any, **kwargs: Any):
        self.factory, self.args, self.kwargs = factory, args, kwargs

    @property
    def name(self) -> str:
        """A readable name: the first string argument (the model name), else the factory's."""
        return next((a for a in self.args if isinstance(a, str)), self.factory.__name__)

    def build(self) -> nn.Module:
        """Call the factory."""
        return self.factory(*self.args, **self.kwargs)

    def describe(self) -> dict:
        """Factory and arguments, as the key records them."""
        return {"factory": f"{self.factory.__module__}.{self.factory.__qualname__}",
                "args": canonical(list(self.args)), "kwargs": canonical(self.kwargs)}


def canonical(value: Any) -> Any:
    """A JSON value that names `value` the same way in every process; other types are refused."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in sorted(value.items(), key=lambda item: str(item[0]))}
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: canonical(getattr(value, f.name)) for f in fields(value)}
    raise RunError(f"A run key cannot hold a {type(value).__name__} ({value!r}): give hyperparameters as "
                   f"numbers, strings, lists or dicts.")


def method_description(method: Method) -> dict:
    """The method's class and its hyperparameters (its public attributes)."""
    kind = type(method)
    return {"class": f"{kind.__module__}.{kind.__qualname__}", "hparams": canonical(method.hparams())}


def run_content(spec: ModelSpec, method: Method, config: TrainConfig, data: DataBundle, seed: int) -> dict:
    """Everything that determines a run's weights: what its key is a hash of."""
    recipe = {k: v for k, v in asdict(config).items() if k not in NOT_IN_KEY}
    recipe["precision"] = "bf16" if uses_bf16(config) else "fp32"  # "auto" resolved on this machine
    return {"format": RUN_FORMAT, "model": spec.describe(), "method": method_description(method),
            "recipe": canonical(recipe), "data": {"name": data.name, "fingerprint": data.fingerprint,
                                                  **canonical(data.limits)},
            "seed": seed}


def run_key(content: dict) -> str:
    """sha256 of the content's canonical JSON."""
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def seed_everything(seed: int) -> None:
    """Seed python, numpy, torch and CUDA."""
    from accelerate.utils import set_seed

    set_seed(seed % 2**32)


def differing_fields(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted paths where two run contents differ, with both values."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differing_fields(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} ({a!r} → {b!r})")
    return out


@dataclass
class Run:
    """A finished run: its key, folder, trained model, per-epoch history and final test-set evaluation."""
    key: str
    directory: Path
    model: nn.Module
    history: list[dict]
    evaluation: dict[str, torch.Tensor]
    reused: bool


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def is_finished(directory: Path) -> bool:
    """A run folder whose weights are written."""
    return bool(_read(directory / "run.json").get("finished")) and (directory / "model.safetensors").exists()


def _conflicting_unfinished(root: Path, requested_by: dict, key: str) -> tuple[Path, dict] | None:
    """An unfinished run of the same row and target under another key, if there is one."""
    for path in sorted(root.glob("*/run.json")):
        record = _read(path)
        if (record.get("key") != key and not record.get("finished") and record.get("requested_by") == requested_by
                and (path.parent / "checkpoint.pt").exists()):
            return path.parent, record["content"]
    return None


def _is_main() -> bool:
    return process_state().is_main_process


def _wait() -> None:
    process_state().wait_for_everyone()


def _cpu_threads() -> int | None:
    """torch's intra-op thread count where this process trains on the CPU (None on an accelerator)."""
    return torch.get_num_threads() if process_state().device.type == "cpu" else None


def _write_json(record: dict, path: Path) -> None:
    from .train import atomic_write_text

    atomic_write_text(json.dumps(record, indent=2) + "\n", path)


class RunBusy(RuntimeError):
    """Another process is training the run asked for (raised by `train(..., wait=False)`)."""


@contextmanager
def _locked(path: Path, busy: str | None = None):
    """Hold an exclusive lock on `path` while the block runs: wait for another holder, or raise
    `RunBusy(busy)` where `busy` is given."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if busy is None else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunBusy(busy) from None
        yield


def _lock_path(root: Path, folder: str) -> Path:
    """The file a process training run `folder` under `root` holds locked."""
    return Path(root) / ".locks" / f"{folder}.lock"


def training_now(root: Path, folder: str) -> bool:
    """Whether a process holds the lock of run `folder` under `root`, i.e. is training it now (creates no
    file: a run no process ever trained under `root`, e.g. a parked copy, has no lock)."""
    path = _lock_path(root, folder)
    if not path.exists():
        return False
    try:
        with _locked(path, busy=folder):
            return False
    except RunBusy:
        return True


# The run folder this process is training (None once it finished; kept when an error stopped it):
# what an interrupt reports.
in_training: Path | None = None


def epochs_done(directory: Path) -> int:
    """Epochs a run folder has finished: the records of its metrics.jsonl (0 before the first)."""
    metrics = Path(directory) / "metrics.jsonl"
    return len(metrics.read_text().splitlines()) if metrics.exists() else 0


def unfinished_runs(root: Path) -> list[dict]:
    """Every unfinished run under `root`: its folder, row, target, epochs done and planned, and whether a
    process is training it now."""
    runs = []
    for record_path in sorted(Path(root).glob("*/run.json")):
        record = _read(record_path)
        if record.get("finished"):
            continue
        folder = record_path.parent.name
        runs.append({"folder": folder, **record["requested_by"], "training": training_now(root, folder),
                     "epochs": epochs_done(record_path.parent),
                     "planned": record["content"]["recipe"]["epochs"]})
    return runs


def _train_new(row: str, key: str, content: dict, directory: Path, model: nn.Module, data: DataBundle,
               config: TrainConfig, method: Method, resume: bool, restart: bool, requested_by: dict,
               progress: bool, deadline: float | None, root: Path) -> Run:
    """Train (or continue) an unfinished run in its folder, then write its weights and mark it finished."""
    global in_training
    has_checkpoint = (directory / "checkpoint.pt").exists()
    if has_checkpoint and restart:
        if _is_main():
            shutil.rmtree(directory)
        _wait()
        has_checkpoint = False
    elif has_checkpoint and not resume:
        raise RunError(f"{directory} holds an unfinished run of {row!r}: rerun with --resume to continue "
                       f"it or --restart to start it over.")
    if resume and not has_checkpoint:
        other = _conflicting_unfinished(root, requested_by, key)
        if other is not None:
            raise RunError(f"--resume: the unfinished run of {row!r} in {other[0]} has another key; it differs "
                           f"in {'; '.join(differing_fields(other[1], content))}. Rerun with the same "
                           f"arguments, or without --resume to start a new run.")
    threads = _cpu_threads()
    started_with = _read(directory / "run.json").get("cpu_threads") if has_checkpoint else None
    if started_with is not None and threads is not None and started_with != threads:
        raise RunError(f"{directory} was trained with {started_with} CPU threads and this process has {threads}: "
                       f"the thread count changes the arithmetic, so resume it with --threads {started_with}.")
    record = {"key": key, "content": content, "requested_by": requested_by, "finished": False,
              "cpu_threads": threads}
    in_training = directory
    if _is_main():
        directory.mkdir(parents=True, exist_ok=True)
        _write_json(record, directory / "run.json")
    fitted = fit(model, data, config, directory, method=method, resume=has_checkpoint, progress=progress,
                 desc=row, deadline=deadline)
    model = fitted.model
    if _is_main():
        _save_weights(model, directory)
        kind = type(model)
        _write_json({**record, "finished": True, "class": f"{kind.__module__}.{kind.__qualname__}",
                     "epochs": len(fitted.history), "final": fitted.history[-1] if fitted.history else {}},
                    directory / "run.json")
        (directory / "checkpoint.pt").unlink(missing_ok=True)
    _wait()
    in_training = None
    return Run(key, directory, model, fitted.history, fitted.evaluation, reused=False)


def _save_weights(model: nn.Module, directory: Path) -> None:
    """save_pretrained into a temporary folder, then move its files in: never a partial weights file."""
    from .train import OutputError

    staging = directory / f".weights.tmp{os.getpid()}"
    try:
        model.save_pretrained(staging)
        for path in staging.iterdir():
            os.replace(path, directory / path.name)
    except OSError as error:
        full = getattr(error, "errno", None) == errno.ENOSPC
        raise OutputError(f"no space left on {directory}" if full else f"cannot write weights into {directory}: "
                          f"{error.strerror or error}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _load_weights(model: nn.Module, directory: Path) -> None:
    type(model)._load_as_safetensor(model, str(directory / "model.safetensors"), "cpu", True)


def train(row: str, spec: ModelSpec, data: DataBundle, config: TrainConfig, method: Method, root: Path,
          seed: int = 0, resume: bool = False, restart: bool = False, requested_by: dict | None = None,
          progress: bool = True, shared: tuple[Path, ...] = (), deadline: float | None = None,
          wait: bool = True) -> Run:
    """Train the run these arguments name, or reuse it when it is finished; see the module docstring.

    `shared`: read-only folders of finished runs (the weights committed in the repository) that are
    searched for the key before `root`. `deadline` (a `time.time()`): no run starts after it, and a
    running one stops at an epoch boundary past it (`BudgetExhausted`; it continues on the next call).
    Concurrent processes (`reproduce campaign --jobs K`) never train the same key twice: each run
    folder is locked while it trains. A process that asks for a run another is training waits for it,
    or with `wait=False` raises `RunBusy` at once.
    """
    from .hub import HubModel

    root = Path(root)
    content = run_content(spec, method, config, data, seed)
    key = run_key(content)
    folder = f"{spec.name.replace('/', '-')}-{key[:12]}"
    directory = next((Path(r) / folder for r in shared if is_finished(Path(r) / folder)), root / folder)
    requested_by = {"row": row, **(requested_by or {})}
    row_seed = int(key[:8], 16)
    seed_everything(row_seed)
    model = spec.build()
    if not isinstance(model, HubModel):
        raise RunError(f"{type(model).__name__} (row {row!r}) does not mix in common.hub.HubModel, so its "
                       f"weights cannot be saved in Hub layout.")
    if is_finished(directory):
        print(f"{row}: reusing the finished run {directory} (key {key[:12]})")
        _load_weights(model, directory)
        history = [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]
        if torch.cuda.is_available():
            model = model.cuda()
        run = Run(key, directory, model, history, evaluate(model, data, method, bf16=uses_bf16(config)), reused=True)
    else:
        if deadline is not None and time.time() > deadline:
            raise BudgetExhausted(f"{row}: the budget ran out before this run started.")
        busy = None if wait else f"{row}: another process is training {directory}"
        with _locked(_lock_path(root, folder), busy):
            if is_finished(directory):  # another process finished it while this one waited for the lock
                return train(row, spec, data, config, method, root, seed, resume, restart, requested_by, progress,
                             shared)
            run = _train_new(row, key, content, directory, model, data, replace(config, seed=row_seed), method,
                             resume, restart, requested_by, progress, deadline, root)
    seed_everything(row_seed + 1)  # what the target computes next does not depend on trained vs reused
    return run


def stand_in(spec: ModelSpec, data: DataBundle, config: TrainConfig, method: Method) -> Run:
    """The untrained model, evaluated as a reused run would be: what a target computes on while another
    process trains the run it asked for, so that it reaches its later rows (its cells are then discarded)."""
    model = spec.build()
    if torch.cuda.is_available():
        model = model.cuda()
    return Run("", Path(), model, [], evaluate(model, data, method, bf16=uses_bf16(config)), reused=False)


__all__ = ["BudgetExhausted", "ModelSpec", "Run", "RunBusy", "RunError", "TrainingError", "train", "stand_in", "run_content", "run_key",
           "is_finished", "training_now", "unfinished_runs", "epochs_done"]
