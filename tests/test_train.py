"""common.train: schedules, parameter groups, no-decay, interrupted-and-resumed == uninterrupted."""
import json

import pytest
import torch
from torch import nn

from common.backbones import create_backbone
from common.data import build_data
from common.train import GroupSpec, Method, StepOutput, TrainConfig, build_optimizer, fit


class Interrupt(RuntimeError):
    pass


class StopAfter(Method):
    """Plain training that dies right after the checkpoint of epoch `epoch` (0-based)."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_epoch_end(self, model, epoch, record):
        if epoch == self.epoch:
            raise Interrupt(f"killed after epoch {epoch}")


def tiny_data():
    return build_data("cifar10-sample", batch_size=32, eval_batch_size=64, train_limit=96, test_limit=64)


def tiny_model():
    torch.manual_seed(0)
    return create_backbone("resnet20_cifar")


CONFIG = TrainConfig(epochs=3, batch_size=32, lr=0.05, milestones=(2,), weight_decay=5e-4, seed=3)


def test_resume_after_interruption_equals_uninterrupted_run(tmp_path):
    straight = fit(tiny_model(), tiny_data(), CONFIG, tmp_path / "straight", progress=False)
    with pytest.raises(Interrupt):
        fit(tiny_model(), tiny_data(), CONFIG, tmp_path / "resumed", method=StopAfter(0), progress=False)
    assert not list((tmp_path / "resumed").glob(".*tmp*")), "a temporary checkpoint file survived"
    partial = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in partial] == [1]
    resumed = fit(tiny_model(), tiny_data(), CONFIG, tmp_path / "resumed", resume=True, progress=False)
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
    for a, b in zip(straight.history, resumed.history):
        assert {k: v for k, v in a.items() if k != "epoch_seconds"} == {k: v for k, v in b.items() if k != "epoch_seconds"}
    assert len((tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()) == 3


def test_a_bf16_run_returns_a_model_that_runs_in_fp32_like_a_loaded_one(tmp_path):
    from accelerate.state import AcceleratorState

    config = TrainConfig(epochs=1, batch_size=32, lr=0.05, milestones=(), precision="bf16", seed=0)
    AcceleratorState._reset_state()  # one precision per process in accelerate: other tests ran fp32 before
    try:
        model = fit(tiny_model(), tiny_data(), config, tmp_path, progress=False).model.eval()
    finally:
        AcceleratorState._reset_state()
    seen = []
    model.layer2.register_forward_pre_hook(lambda module, args: seen.append(args[0].dtype))
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 32))
    assert seen == [torch.float32] and out.dtype == torch.float32  # no autocast wrapper left on forward


def test_training_reduces_loss_and_evaluates(tmp_path):
    config = TrainConfig(epochs=3, batch_size=32, lr=0.05, schedule="cosine", warmup_epochs=1, seed=0)
    result = fit(tiny_model(), tiny_data(), config, tmp_path, progress=False)
    losses = [r["train_loss"] for r in result.history]
    assert losses[-1] < losses[0]
    assert result.evaluation["logits"].shape == (64, 10)
    assert result.evaluation["labels"].shape == (64,)


def test_method_logs_and_extras_are_collected(tmp_path):
    class WithExtras(Method):
        def training_step(self, model, images, labels, criterion):
            logits = model(images)
            return StepOutput(criterion(logits, labels), logits, {"extra_loss": 0.5})

        def evaluation_step(self, model, images):
            logits = model(images)
            return logits, {"confidence": logits.softmax(1).max(1).values}

    config = TrainConfig(epochs=1, batch_size=32, lr=0.01, milestones=())
    result = fit(tiny_model(), tiny_data(), config, tmp_path, method=WithExtras(), progress=False)
    assert result.history[0]["extra_loss"] == pytest.approx(0.5)
    assert result.evaluation["confidence"].shape == (64,)


def test_param_groups_have_their_own_schedule_and_no_decay():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    config = TrainConfig(epochs=10, lr=0.1, milestones=(2, 4), gamma=0.1, weight_decay=1e-4, no_decay_norm_bias=True)
    gates = GroupSpec("gates", lambda name, p: name.startswith("2."), lr=2e-4, gamma=0.4)
    optimizer, scheduler = build_optimizer(model, config, [gates], steps_per_epoch=5)
    groups = {(g["name"], g["weight_decay"]): g for g in optimizer.param_groups}
    assert set(groups) == {("gates", 1e-4), ("gates", 0.0), ("default", 1e-4), ("default", 0.0)}
    assert len(groups[("default", 0.0)]["params"]) == 3  # bias of layer 0, BN weight and bias
    for _ in range(10):                                  # two epochs: first milestone passed
        optimizer.step()
        scheduler.step()
    assert groups[("default", 1e-4)]["lr"] == pytest.approx(0.1 * 0.1)
    assert groups[("gates", 1e-4)]["lr"] == pytest.approx(2e-4 * 0.4)


def test_cosine_with_warmup_schedule():
    model = nn.Linear(2, 2)
    config = TrainConfig(epochs=4, lr=1.0, schedule="cosine", warmup_epochs=1)
    optimizer, scheduler = build_optimizer(model, config, [], steps_per_epoch=2)
    lrs = []
    for _ in range(8):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0)  # linear warm-up
    assert lrs[2] == pytest.approx(1.0)                                    # cosine starts at the peak
    assert lrs[2] > lrs[4] > lrs[6] > 0


def test_unknown_schedule_names_choices():
    with pytest.raises(ValueError, match="multistep, cosine"):
        build_optimizer(nn.Linear(2, 2), TrainConfig(schedule="linear"), [], 1)


def test_a_method_may_call_backward_itself(tmp_path):
    class OwnBackward(Method):
        """Plain training, but the step calls `backward` itself (as ADN does between its two forwards)."""

        def training_step(self, model, images, labels, criterion):
            logits = model(images)
            loss = criterion(logits, labels)
            self.bound.append(type(getattr(self._backward, "__self__", None)).__name__)
            self.backward(loss)
            return StepOutput(loss.detach(), logits, backward_done=True)

    config = TrainConfig(epochs=1, batch_size=32, lr=0.05, milestones=(), seed=1)
    method = OwnBackward()
    method.bound = []
    own = fit(tiny_model(), tiny_data(), config, tmp_path / "own", method=method, progress=False)
    plain = fit(tiny_model(), tiny_data(), config, tmp_path / "plain", progress=False)
    assert method.bound == ["Accelerator"] * 3 and method._backward is None  # fit binds accelerate's, then unbinds
    for (name, a), (_, b) in zip(own.model.state_dict().items(), plain.model.state_dict().items()):
        assert torch.equal(a, b), name  # gradients zeroed before the step, and no second backward


def test_method_backward_outside_fit_is_plain_backward():
    model = nn.Linear(3, 1)
    Method().backward(model(torch.ones(2, 3)).sum())
    assert torch.equal(model.weight.grad, torch.full((1, 3), 2.0))


def test_step_loop_reads_nothing_back_from_the_device(monkeypatch):
    """No host sync inside the step loop: between two training steps no tensor is turned into a number
    (the sampler's index permutation, host-side in torch.utils.data on every device, aside)."""
    import traceback

    reads = {"count": 0}
    for name in ("item", "__float__", "__int__", "__bool__", "tolist"):
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _original=original, **kwargs):
            if not any("torch/utils/data" in frame.filename for frame in traceback.extract_stack()):
                reads["count"] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)

    class Watch(Method):
        marks: list[int] = []

        def training_step(self, model, images, labels, criterion):
            self.marks.append(reads["count"])
            out = super().training_step(model, images, labels, criterion)
            self.marks.append(reads["count"])
            return out

    watch = Watch()
    fit(tiny_model(), tiny_data(), TrainConfig(epochs=1, batch_size=32, lr=0.05, milestones=()), "/tmp/nosync",
        method=watch, progress=False)
    between_steps = [watch.marks[i + 1] - watch.marks[i] for i in range(1, len(watch.marks) - 1, 2)]
    assert len(between_steps) == 2 and between_steps == [0, 0], watch.marks
