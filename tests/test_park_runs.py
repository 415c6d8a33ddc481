"""scripts/park_runs.py: a mini run parked in one clone continues in another as if never interrupted."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from common.data import build_data
from common.hub import HubBackbone
from common.runs import ModelSpec, train
from common.train import Method, TrainConfig

CONFIG = TrainConfig(epochs=2, batch_size=32, lr=0.05, milestones=(1,), weight_decay=5e-4)
SPEC = ModelSpec(HubBackbone, "resnet20_cifar", num_classes=10)
TARGET = {"target": "baselines-cifar10-resnet-mini"}


class Interrupt(RuntimeError):
    pass


class Stoppable(Method):
    """Plain training; with `_stop` (state, not a hyperparameter: same key) killed after the first epoch."""

    _stop = False

    def on_epoch_end(self, model, epoch, record):
        if self._stop:
            raise Interrupt("killed")


@pytest.fixture
def park(load_script):
    """The script's module with its repository root at tmp_path."""
    return load_script("park_runs")


def _train(root: Path, method: Method, resume: bool = False):
    data = build_data("cifar10-sample", batch_size=32, eval_batch_size=64, train_limit=64, test_limit=32)
    return train("ResNet-20", SPEC, data, CONFIG, method, root, requested_by=TARGET, resume=resume, progress=False)


def test_a_parked_unfinished_run_resumes_in_a_fresh_clone_equal_to_an_uninterrupted_run(tmp_path, park, capsys):
    straight = _train(tmp_path / "straight", Stoppable())
    runs = tmp_path / "results" / "runs"
    stopping = Stoppable()
    stopping._stop = True
    with pytest.raises(Interrupt):
        _train(runs, stopping)
    assert park.save() == 0
    parked = tmp_path / "weights" / "mini-in-progress" / straight.directory.name
    assert sorted(p.name for p in parked.iterdir()) == ["checkpoint.pt", "metrics.jsonl", "run.json"]

    shutil.rmtree(runs)  # a fresh clone: results/runs is not committed
    assert park.restore() == 0
    capsys.readouterr()
    resumed = _train(runs, Stoppable(), resume=True)
    assert "after epoch 1" in capsys.readouterr().out  # it continued from the parked checkpoint
    assert len(resumed.history) == 2 and resumed.history[1]["test_top1"] == straight.history[1]["test_top1"]
    for name, tensor in load_file(straight.directory / "model.safetensors").items():
        assert torch.equal(tensor, load_file(resumed.directory / "model.safetensors")[name]), name


def test_finished_runs_park_with_weights_until_shipped_and_restore_never_steps_back(tmp_path, park, capsys):
    runs = tmp_path / "results" / "runs"
    finished = _train(runs, Stoppable())
    park.save()
    parked = tmp_path / "weights" / "mini-in-progress" / finished.directory.name
    assert not (parked / "checkpoint.pt").exists() and (parked / "model.safetensors").exists()

    shutil.rmtree(runs)
    park.restore()
    again = _train(runs, Stoppable())
    assert again.reused and again.directory == finished.directory

    (again.directory / "model.safetensors").write_bytes(b"newer")  # restore leaves a finished copy alone
    park.restore()
    assert (again.directory / "model.safetensors").read_bytes() == b"newer"

    shipped = tmp_path / "weights" / "mini" / finished.directory.name
    shipped.mkdir(parents=True)
    (shipped / "model.safetensors").write_bytes(b"weights")
    park.save()
    assert not parked.exists() and "dropped" in capsys.readouterr().out


def test_a_run_with_a_file_over_the_repositorys_limit_is_not_parked(tmp_path, park, monkeypatch, capsys):
    runs = tmp_path / "results" / "runs"
    stopping = Stoppable()
    stopping._stop = True
    with pytest.raises(Interrupt):
        _train(runs, stopping)
    size = next(runs.glob("*/checkpoint.pt")).stat().st_size
    monkeypatch.setattr(park, "MAX_FILE_BYTES", size - 1)
    park.save()
    assert not (tmp_path / "weights" / "mini-in-progress").exists()
    assert "checkpoint.pt is over" in capsys.readouterr().out
