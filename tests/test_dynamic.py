"""common.dynamic: masked and skipping modes agree, skipping saves MACs, expected MACs are exact."""
import pytest
import torch
from torch import nn

from common.backbones import create_backbone, residual_stages
from common.dynamic import (GatedBlock, decisions, expected_macs_of, gated_blocks, macs_profile,
                            probabilities, set_mode, set_rates, undecided)
from common.metrics import count_macs


class FixedGate(nn.Module):
    """Executes image b iff pattern[b] (cycled over the batch); a linear layer so it has MACs."""

    def __init__(self, channels: int, pattern: list[int]):
        super().__init__()
        self.fc = nn.Linear(channels, 1)
        self.pattern = pattern

    def forward(self, x):
        self.fc(x.mean(dim=(2, 3)))
        z = torch.tensor([self.pattern[i % len(self.pattern)] for i in range(x.shape[0])], dtype=x.dtype)
        return z, z


def gated_resnet20(patterns):
    torch.manual_seed(0)
    model = create_backbone("resnet20_cifar")
    index = 0
    for stage in residual_stages(model):
        for position, block in enumerate(stage.blocks()):
            stage.replace(position, GatedBlock(block, FixedGate(block.conv1.in_channels, patterns[index])))
            index += 1
    return model.eval()


PATTERNS = [[1, 0], [0, 1], [1, 1], [0, 0], [1, 0], [1, 1], [0, 1], [1, 0], [0, 0]]


def test_skip_and_masked_modes_give_same_logits():
    model = gated_resnet20(PATTERNS)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        masked = model(x)
        set_mode(model, "skip")
        skipped = model(x)
    torch.testing.assert_close(skipped, masked)
    assert decisions(model).shape == (4, 9)
    assert torch.equal(decisions(model)[0], torch.tensor([float(p[0]) for p in PATTERNS]))
    assert probabilities(model).shape == (4, 9)


def test_closed_gate_costs_no_residual_macs_at_batch_one():
    model = gated_resnet20([[0]] * 9)
    set_mode(model, "skip")
    always, overhead, branch = macs_profile(model, (3, 32, 32))
    assert count_macs(model, torch.zeros(1, 3, 32, 32)) == always + overhead
    assert (branch > 0).all()


def test_expected_macs_match_counted_skipped_execution():
    model = gated_resnet20(PATTERNS)
    set_mode(model, "skip")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        model(x)
    taken = decisions(model)
    expected = expected_macs_of(model, (3, 32, 32), taken)
    counted = count_macs(model, x[:1])  # image 0 alone takes the same path as in the batch
    assert decisions(model)[0].tolist() == taken[0].tolist()
    assert counted == expected.per_image[0]
    assert expected.per_image[0] != expected.per_image[1]
    assert expected.mean == pytest.approx(float(expected.per_image.mean()))
    assert torch.equal(expected.rates, taken.mean(0).double())
    summary = expected.summary()
    assert summary["min"] <= summary["median"] <= summary["max"]


def test_scaled_mode_multiplies_residual_by_rate():
    model = gated_resnet20([[1]] * 9)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        full = model(x)
        set_rates(model, torch.ones(9))
        set_mode(model, "scaled")
        torch.testing.assert_close(model(x), full)
        set_rates(model, torch.zeros(9))
        zero_rate = model(x)
        set_mode(model, "skip")
        for block in gated_blocks(model):
            block.override = lambda inp: torch.zeros(inp.shape[0])
        torch.testing.assert_close(model(x), zero_rate)


def test_masked_mode_passes_gradient_to_the_decision():
    block = create_backbone("resnet20_cifar").layer1[0]

    class LearnedGate(nn.Module):
        def __init__(self):
            super().__init__()
            self.logit = nn.Parameter(torch.zeros(()))

        def forward(self, x):
            prob = torch.sigmoid(self.logit).expand(x.shape[0])
            hard = (prob > 0.4).float()
            return hard + prob - prob.detach(), prob

    gated = GatedBlock(block, LearnedGate())
    gated(torch.randn(2, 16, 8, 8)).sum().backward()
    assert gated.gate.logit.grad is not None and gated.gate.logit.grad != 0


def test_unknown_mode_names_choices():
    with pytest.raises(ValueError, match="masked, skip, scaled"):
        set_mode(gated_resnet20(PATTERNS), "sometimes")


def test_skip_mode_with_projection_shortcut_and_inplace_relu_matches_masked():
    # Bottleneck blocks with projection shortcuts: the in-place ReLU must not clip the shortcut
    # before the executed images' branch is added, nor write into the block's input.
    torch.manual_seed(0)
    model = create_backbone("bottleneck89_cifar")
    stage = residual_stages(model)[1]
    block = stage.blocks()[0]
    gated = GatedBlock(block, FixedGate(block.conv1.in_channels, [1, 0, 1])).eval()
    x = torch.randn(3, block.conv1.in_channels, 8, 8)
    before = x.clone()
    with torch.no_grad():
        masked = gated(x)
        gated.mode = "skip"
        skipped = gated(x)
        identity_block = GatedBlock(residual_stages(model)[1].blocks()[1], FixedGate(512, [0, 1])).eval()
        identity_block.mode = "skip"
        y = torch.randn(2, 512, 4, 4)
        y_before = y.clone()
        identity_block(y)
    torch.testing.assert_close(skipped, masked)
    assert torch.equal(x, before) and torch.equal(y, y_before)


def test_macs_profile_counts_gates_in_eval_mode_and_restores_training():
    class BatchNormGate(FixedGate):
        def __init__(self, channels, pattern):
            super().__init__(channels, pattern)
            self.bn = nn.BatchNorm1d(1)

        def forward(self, x):
            self.bn(self.fc(x.mean(dim=(2, 3))))  # fails at batch 1 in training mode
            return super().forward(x)

    torch.manual_seed(0)
    model = create_backbone("resnet20_cifar")
    for stage in residual_stages(model):
        for position, block in enumerate(stage.blocks()):
            stage.replace(position, GatedBlock(block, BatchNormGate(block.conv1.in_channels, [1])))
    model.train()
    always, overhead, branch = macs_profile(model, (3, 32, 32))
    assert overhead > 0 and len(branch) == 9 and model.training


def test_output_mix_blends_whole_outputs_without_clipping_a_projection_shortcut():
    torch.manual_seed(0)
    block = residual_stages(create_backbone("resnet50"))[1].blocks()[0].eval()

    class Soft(nn.Module):
        def forward(self, x):
            v = torch.full((x.shape[0],), 0.25)
            return v, v

    x = torch.randn(2, block.conv1.in_channels, 8, 8)
    with torch.no_grad():
        shortcut = block.downsample(x)
        expected = 0.25 * block(x) + 0.75 * torch.relu(shortcut)
        torch.testing.assert_close(GatedBlock(block, Soft(), mix="output")(x), expected)
    with pytest.raises(ValueError, match="residual, output"):
        GatedBlock(block, Soft(), mix="input")


def test_output_mix_traced_by_torch_compile_gives_eager_values_and_gradients():
    """Under torch.compile Eq. (9) is written as two products (Inductor's lerp is slow): same numbers."""
    torch.manual_seed(0)
    block = residual_stages(create_backbone("resnet20_cifar"))[0].blocks()[1]

    class Soft(nn.Module):
        def __init__(self):
            super().__init__()
            self.logit = nn.Parameter(torch.linspace(-2, 2, 4))

        def forward(self, x):
            v = torch.sigmoid(self.logit)
            return v, v

    gated = GatedBlock(block, Soft(), mix="output").train()
    results = []
    for run in (gated, torch.compile(gated, backend="aot_eager")):  # traced by Dynamo: the compiled branch
        x = torch.randn(4, 16, 8, 8, generator=torch.Generator().manual_seed(1), requires_grad=True)
        gated.zero_grad()
        out = run(x)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        results.append((out.detach(), x.grad, gated.gate.logit.grad.clone(), block.conv1.weight.grad.clone()))
    for eager, compiled in zip(*results):
        torch.testing.assert_close(compiled, eager)


def test_undecided_marks_gates_strictly_between_0_2_and_0_8():
    probs = torch.tensor([[0.1, 0.2, 0.5], [0.8, 0.79, 0.95]])
    assert undecided(probs).tolist() == [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
