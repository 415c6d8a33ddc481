"""common.runs: run keys, reuse, seeding, resume and refusals; whole targets rerun to the same cells."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from common.data import build_data
from common.hub import HubBackbone
from common.runs import ModelSpec, RunBusy, RunError, TrainingError, run_content, run_key, train
from common.train import Method, TrainConfig, evaluate

REPO = Path(__file__).resolve().parent.parent
CONFIG = TrainConfig(epochs=3, batch_size=32, lr=0.05, milestones=(2,), weight_decay=5e-4)
SPEC = ModelSpec(HubBackbone, "resnet20_cifar", num_classes=10)


class Interrupt(RuntimeError):
    pass


class Stoppable(Method):
    """Plain training; `_stop_after` (state, not a hyperparameter) kills it after that epoch's checkpoint."""

    _stop_after: int | None = None

    def on_epoch_end(self, model, epoch, record):
        if epoch == self._stop_after:
            raise Interrupt(f"killed after epoch {epoch}")


def tiny_data():
    return build_data("cifar10-sample", batch_size=32, eval_batch_size=64, train_limit=96, test_limit=64)


def weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(directory / "model.safetensors")


def test_key_covers_model_method_recipe_data_and_seed():
    data = tiny_data()
    base = run_key(run_content(SPEC, Method(), CONFIG, data, 0))
    assert base == run_key(run_content(ModelSpec(HubBackbone, "resnet20_cifar", num_classes=10), Method(), CONFIG,
                                       tiny_data(), 0))
    from dataclasses import replace

    from adanet.losses import AdanetMethod

    changed = [run_content(ModelSpec(HubBackbone, "resnet32_cifar", num_classes=10), Method(), CONFIG, data, 0),
               run_content(SPEC, AdanetMethod(lam=2.0), CONFIG, data, 0),
               run_content(SPEC, Method(), replace(CONFIG, lr=0.1), data, 0),
               run_content(SPEC, Method(), replace(CONFIG, batch_size=64), data, 0),
               run_content(SPEC, Method(), CONFIG, build_data("cifar10-sample", batch_size=32, train_limit=64), 0),
               run_content(SPEC, Method(), CONFIG, data, 1)]
    keys = {run_key(c) for c in changed}
    assert len(keys) == len(changed) and base not in keys
    lam = [run_key(run_content(SPEC, AdanetMethod(lam=value), CONFIG, data, 0)) for value in (1.0, 2.0)]
    assert lam[0] != lam[1]
    # neither the config's own seed field nor tensorboard changes the weights' key
    assert base == run_key(run_content(SPEC, Method(), replace(CONFIG, seed=99, tensorboard=True), data, 0))


def test_finished_run_is_reused_and_seeded_from_its_key(tmp_path, capsys):
    data = tiny_data()
    first = train("row", SPEC, data, CONFIG, Method(), tmp_path, progress=False)
    assert json.loads((first.directory / "run.json").read_text())["finished"]
    assert not (first.directory / "checkpoint.pt").exists() and (first.directory / "config.json").exists()
    torch.manual_seed(12345)  # whatever ran before must not matter
    torch.rand(7)
    again = train("another row, another target", SPEC, data, CONFIG, Method(), tmp_path, progress=False)
    assert again.reused and again.key == first.key and again.history == first.history
    assert "reusing the finished run" in capsys.readouterr().out
    assert torch.equal(again.evaluation["logits"], first.evaluation["logits"])
    # after a run, the RNG state depends on the key alone: trained now or reused
    after_reuse = torch.rand(3)
    fresh = train("row", SPEC, data, CONFIG, Method(), tmp_path / "elsewhere", progress=False)
    assert not fresh.reused and torch.equal(torch.rand(3), after_reuse)
    for name, tensor in weights(first.directory).items():
        assert torch.equal(tensor, weights(fresh.directory)[name]), name


def test_a_run_another_process_trains_is_reported_busy_without_waiting(tmp_path):
    import fcntl

    data = tiny_data()
    folder = f"resnet20_cifar-{run_key(run_content(SPEC, Method(), CONFIG, data, 0))[:12]}"
    (tmp_path / ".locks").mkdir()
    with open(tmp_path / ".locks" / f"{folder}.lock", "a") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)  # what a process training the run holds
        with pytest.raises(RunBusy, match=f"row: another process is training .*{folder}"):
            train("row", SPEC, data, CONFIG, Method(), tmp_path, progress=False, wait=False)
    assert not (tmp_path / folder).exists()
    assert not train("row", SPEC, data, CONFIG, Method(), tmp_path, progress=False, wait=False).reused


def test_evaluation_never_moves_the_training_rng():
    data = tiny_data()
    model = HubBackbone("resnet20_cifar")
    torch.manual_seed(0)
    expected = torch.rand(5)
    torch.manual_seed(0)
    evaluate(model, data)
    assert torch.equal(torch.rand(5), expected)


def test_interrupted_run_refused_then_resumed_equals_uninterrupted(tmp_path):
    data = tiny_data()
    straight = train("row", SPEC, data, CONFIG, Stoppable(), tmp_path / "straight", progress=False)
    stopping = Stoppable()
    stopping._stop_after = 0
    with pytest.raises(Interrupt):
        train("row", SPEC, data, CONFIG, stopping, tmp_path / "killed", progress=False)
    folder = next((tmp_path / "killed").glob("*/run.json")).parent
    (folder / ".checkpoint.pt.tmp999").write_bytes(b"half a file")
    with pytest.raises(RunError, match=r"unfinished run of 'row': rerun with --resume .* or --restart"):
        train("row", SPEC, data, CONFIG, Stoppable(), tmp_path / "killed", progress=False)
    resumed = train("row", SPEC, data, CONFIG, Stoppable(), tmp_path / "killed", resume=True, progress=False)
    untimed = lambda history: [{k: v for k, v in h.items() if k != "epoch_seconds"} for h in history]  # noqa: E731
    assert resumed.key == straight.key and untimed(resumed.history) == untimed(straight.history)
    assert not list(folder.glob(".*tmp*")), "leftover temporary file"
    lines = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3]
    for name, tensor in weights(straight.directory).items():
        assert torch.equal(tensor, weights(resumed.directory)[name]), name


def test_resume_with_another_cpu_thread_count_is_refused(tmp_path):
    data = tiny_data()
    stopping = Stoppable()
    stopping._stop_after = 0
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with pytest.raises(Interrupt):
            train("row", SPEC, data, CONFIG, stopping, tmp_path, progress=False)
        folder = next(tmp_path.glob("*/run.json")).parent
        assert json.loads((folder / "run.json").read_text())["cpu_threads"] == 1
        torch.set_num_threads(2)
        with pytest.raises(RunError, match=r"trained with 1 CPU threads and this process has 2: .* --threads 1\.$"):
            train("row", SPEC, data, CONFIG, Stoppable(), tmp_path, resume=True, progress=False)
        torch.set_num_threads(1)
        resumed = train("row", SPEC, data, CONFIG, Stoppable(), tmp_path, resume=True, progress=False)
        assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    finally:
        torch.set_num_threads(before)


def test_restart_starts_over_and_resume_under_another_key_names_the_fields(tmp_path):
    data = tiny_data()
    stopping = Stoppable()
    stopping._stop_after = 0
    with pytest.raises(Interrupt):
        train("row", SPEC, data, CONFIG, stopping, tmp_path, requested_by={"target": "t"}, progress=False)
    from dataclasses import replace

    with pytest.raises(RunError, match=r"another key; it differs in recipe\.lr \(0\.05 → 0\.1\)"):
        train("row", SPEC, data, replace(CONFIG, lr=0.1), Stoppable(), tmp_path, resume=True,
              requested_by={"target": "t"}, progress=False)
    restarted = train("row", SPEC, data, CONFIG, Stoppable(), tmp_path, restart=True, requested_by={"target": "t"},
                      progress=False)
    assert [h["epoch"] for h in restarted.history] == [1, 2, 3]


def test_zero_steps_and_non_finite_loss_stop_with_one_line(tmp_path):
    few = build_data("cifar10-sample", batch_size=64, train_limit=40, test_limit=16)
    with pytest.raises(TrainingError, match=r"40 training images make no full batch of 64"):
        train("row", SPEC, few, TrainConfig(epochs=1, batch_size=64), Method(), tmp_path, progress=False)

    class Explodes(Method):
        def training_step(self, model, images, labels, criterion):
            out = super().training_step(model, images, labels, criterion)
            out.loss = out.loss * float("nan")
            return out

    with pytest.raises(TrainingError, match=r"non-finite in epoch 1, step 1 of 3 \(LR 0\.05\); no epoch finished"):
        train("row", SPEC, tiny_data(), CONFIG, Explodes(), tmp_path, progress=False)


def test_no_target_trains_outside_the_run_layer():
    """Every training of every target goes through common.runs.train (keys, reuse, --push-to-hub)."""
    offenders = []
    for path in [*REPO.glob("*/tables.py"), *REPO.glob("*/experiments.py"), *REPO.glob("reproduce/*.py")]:
        text = path.read_text()
        if "fit(" in text or "train_row" in text:
            offenders.append(path.name)
    assert not offenders


# ------------------------------------------------------------------ whole targets, in fresh processes

TARGET = ["rdinet", "table3", "--preset", "smoke"]  # five RDI-Net rows, each trained one epoch


def reproduce(out: Path, *args: str, wait: bool = True):
    command = [sys.executable, "-m", "reproduce", *TARGET, "--out", str(out), *args]
    if not wait:
        return subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def cells(out: Path) -> list[dict]:
    return json.loads((out / "rdinet-table3-smoke.json").read_text())["cells"]


def run_weights(out: Path) -> dict[str, dict[str, torch.Tensor]]:
    record = json.loads((out / "rdinet-table3-smoke.json").read_text())
    return {row: weights(out / "runs" / run["folder"]) for row, run in record["runs"].items()}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    reproduce(out, "--seed", "0")
    return out


def test_same_seed_same_cells_in_fresh_processes_other_seed_differs(uninterrupted, tmp_path):
    reproduce(tmp_path / "again", "--seed", "0")
    assert cells(tmp_path / "again") == cells(uninterrupted)
    reproduce(tmp_path / "other", "--seed", "1")
    ours = lambda out: [c["ours"] for c in cells(out)]  # noqa: E731
    assert ours(tmp_path / "other") != ours(uninterrupted)


def test_sigkill_during_a_later_row_then_resume_equals_uninterrupted(uninterrupted, tmp_path):
    out = tmp_path / "killed"
    process = reproduce(out, "--seed", "0", wait=False)
    deadline = time.time() + 120
    while len(list((out / "runs").glob("*/run.json"))) < 3 and time.time() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (out / "rdinet-table3-smoke.json").exists(), "the run finished before it was killed"
    finished = [json.loads(p.read_text())["finished"] for p in (out / "runs").glob("*/run.json")]
    assert finished.count(True) >= 2, finished
    reproduce(out, "--seed", "0", "--resume")
    assert cells(out) == cells(uninterrupted)
    expected, resumed = run_weights(uninterrupted), run_weights(out)
    assert expected.keys() == resumed.keys()
    for row in expected:
        for name, tensor in expected[row].items():
            assert torch.equal(tensor, resumed[row][name]), (row, name)
