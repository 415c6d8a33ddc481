"""adanet: the gate (Eq. 4–7), the target-rate loss (Eq. 8–9), real skipping, counting, the models."""
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from adanet import Adanet, Gate, create_model, list_models
from adanet.experiments import (expected_macs_over, fgsm, fgsm_direction, force_decisions, forced_macs,
                                forced_pattern, gate_profile, jpeg, macs_at_rates, scaled_macs)
from adanet.losses import AdanetMethod, imagenet_targets, target_rate_loss
from adanet.model import DroppedBlock, StochasticDepth
from adanet.tables import TABLE1, TABLE2, TARGETS
from common.dynamic import decisions, gated_blocks, probabilities
from common.metrics import count_macs, count_params


def test_straight_through_forward_is_exactly_binary_and_gradients_reach_the_gate():
    torch.manual_seed(0)
    gate = Gate(16, reduction=2).train()
    x = torch.randn(64, 16, 4, 4)
    decision, prob = gate(x)
    assert set(decision.tolist()) == {0.0, 1.0}       # exactly 0/1, both present
    assert torch.all((prob > 0) & (prob < 1))
    (decision * torch.arange(64.0)).sum().backward()
    for param in (gate.fc1.weight, gate.fc2.weight, gate.fc2.bias):
        assert param.grad is not None and param.grad.abs().sum() > 0


def test_gate_is_deterministic_at_eval_and_stochastic_on_request():
    torch.manual_seed(0)
    gate = Gate(16, reduction=2)
    torch.nn.init.normal_(gate.fc2.weight, std=1.0)  # decisions that depend on the input
    gate.fc2.bias.data.zero_()
    gate.eval()
    x = torch.randn(256, 16, 4, 4)
    first, prob = gate(x)
    assert torch.equal(first, gate(x)[0])
    assert torch.equal(first, (prob > 0.5).float())
    gate.stochastic = True
    assert not torch.equal(gate(x)[0], gate(x)[0])


def test_set_stochastic_switches_every_gate_of_a_model():
    model = create_model("adanet20").eval()
    model.set_stochastic(True)
    assert all(block.gate.stochastic for block in gated_blocks(model))
    model.set_stochastic(False)
    assert not any(block.gate.stochastic for block in gated_blocks(model))


def test_target_rate_loss_equals_eq8_by_hand():
    taken = torch.tensor([[1, 0, 1], [1, 1, 0], [0, 1, 1], [1, 1, 1.0]])  # z̄ = 0.75 for each layer
    assert target_rate_loss(taken, 0.6).item() == pytest.approx(3 * 0.15 ** 2)
    assert target_rate_loss(taken, [1.0, 0.5, 0.6]).item() == pytest.approx(0.25 ** 2 + 0.25 ** 2 + 0.15 ** 2)
    assert target_rate_loss(taken, [1.0, 0.5, 0.6], leave_out_full=True).item() == pytest.approx(0.25 ** 2 + 0.15 ** 2)
    with pytest.raises(ValueError, match="targets"):
        target_rate_loss(taken, [0.6, 0.6])
    assert len(imagenet_targets()) == 16


def test_initial_execution_rate_is_085_on_random_input():
    torch.manual_seed(0)
    model = create_model("adanet110").train()
    inputs = {}
    for index, block in enumerate(gated_blocks(model)):
        block.register_forward_pre_hook(lambda m, args, i=index: inputs.__setitem__(i, args[0]))
    with torch.no_grad():
        model(torch.randn(8, 3, 32, 32))
        assert decisions(model).shape == (8, 54)
        assert probabilities(model).mean().item() == pytest.approx(0.85, abs=0.01)
        # 20 more Gumbel draws of every gate on its own input: 8 × 54 × 20 decisions
        draws = torch.stack([torch.stack([b.gate(inputs[i])[0] for i, b in enumerate(gated_blocks(model))])
                             for _ in range(20)])
    assert draws.mean().item() == pytest.approx(0.85, abs=0.03)
    assert set(draws.unique().tolist()) == {0.0, 1.0}


def _varied_images(batch: int) -> torch.Tensor:
    """Random images whose channel means differ, so that the gates' decisions differ between them."""
    return torch.randn(batch, 3, 32, 32) + torch.linspace(-2, 2, batch).view(batch, 1, 1, 1)


def _mixed_gates(model: Adanet) -> Adanet:
    """Gates whose eval decisions differ between images and layers."""
    torch.manual_seed(1)
    for block in gated_blocks(model):
        torch.nn.init.normal_(block.gate.fc2.weight, std=3.0)
        block.gate.fc2.bias.data.zero_()
    return model.eval()


@pytest.mark.parametrize("name, batch", [("adanet110", 8), ("wide_adanet89", 4)])
def test_skip_and_masked_modes_give_the_same_logits(name, batch):
    model = _mixed_gates(create_model(name))
    torch.manual_seed(2)
    x = _varied_images(batch)
    with torch.no_grad():
        masked, masked_taken = model(x), decisions(model)
        model.set_mode("skip")
        skipped, skipped_taken = model(x), decisions(model)
    # layers where some images execute and others skip: the sub-batch path is exercised
    assert (masked_taken.min(0).values != masked_taken.max(0).values).sum() >= 3
    assert torch.equal(masked_taken, skipped_taken)
    torch.testing.assert_close(skipped, masked, rtol=1e-4, atol=1e-4)


def test_real_skipping_costs_and_expected_macs_match_counted_ones():
    model = _mixed_gates(create_model("adanet110"))
    always, overhead, branch = gate_profile(model, (3, 32, 32))
    assert 100 * overhead / (always + float(branch.sum())) < 0.05   # paper: 0.01 % of the computation
    model.set_mode("skip")
    # At batch size 1 a closed gate computes nothing: all closed leaves the stem's convolution alone.
    force_decisions(model, torch.zeros(1, 54))
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, 3, 32, 32))
    convolution = sum(v for op, v in counter.get_flop_counts()["Global"].items() if "convolution" in str(op))
    assert convolution // 2 == 3 * 16 * 9 * 32 * 32
    assert counter.get_total_flops() // 2 == always + overhead
    force_decisions(model, None)
    # Expected MACs of the gates' own decisions equal the MACs counted for each image alone.
    torch.manual_seed(2)
    x = _varied_images(2)
    with torch.no_grad():
        model(x)
    taken = decisions(model)
    expected = expected_macs_over(model, (3, 32, 32), taken)
    assert expected.per_image[0] != expected.per_image[1]
    for image in range(2):
        assert count_macs(model, x[image:image + 1]) == expected.per_image[image]
    counted, forced = forced_macs(model, 0.6)           # 32 of 54 layers, forced
    assert counted == forced
    assert macs_at_rates(model, (3, 32, 32), torch.ones(54)) == scaled_macs(model) + overhead


@pytest.mark.parametrize("name, row, table, tolerance", [
    ("adanet110", "Adanet 110", TABLE1, 0.02), ("wide_adanet89", "Wide Adanet 89", TABLE1, 0.03),
    ("adanet50", "Adanet 50", TABLE2, 0.02), ("stochastic_depth110", "Stochastic Depth", TABLE1, 0.02),
    ("resnet18", "ResNet 18", TABLE2, 0.02),
    ("resnet34", "ResNet 34", TABLE2, 0.02), ("resnet50", "ResNet 50", TABLE2, 0.02)])
def test_parameters_match_the_paper(name, row, table, tolerance):
    ours = count_params(create_model(name)) / 1e6
    assert ours == pytest.approx(table[row]["Params"], rel=tolerance)


def test_create_model_rejects_unknown_names_and_round_trips_weights(tmp_path):
    assert {"adanet110", "wide_adanet89", "adanet50", "resnet110", "resnet50"} <= set(list_models())
    with pytest.raises(ValueError, match="adanet110"):
        create_model("adanet111")
    model = _mixed_gates(create_model("adanet110"))
    model.set_rates(torch.linspace(0.5, 1.0, 54))
    model.save_pretrained(tmp_path)
    loaded = create_model("adanet110", pretrained=str(tmp_path)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert torch.equal(loaded.net.layer3[17].rate, torch.tensor(1.0))


def test_training_step_adds_lambda_times_target_loss_and_gates_get_their_own_group():
    torch.manual_seed(0)
    model = create_model("adanet110").train()
    method = AdanetMethod(lam=2.0, target=0.6)
    images, labels = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    torch.manual_seed(3)
    out = method.training_step(model, images, labels, torch.nn.CrossEntropyLoss())
    expected = out.logs["ce"] + 2.0 * target_rate_loss(decisions(model), 0.6).item()
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    assert [f"rate_{i:02d}" for i in range(54)] == [k for k in out.logs if k.startswith("rate_")]
    (group,) = method.param_groups(model)
    gate_params = [n for n, p in model.named_parameters() if group.selects(n, p)]
    assert len(gate_params) == 54 * 6 and all(".gate." in n for n in gate_params)
    assert group.lr == 2e-4 and group.gamma == 0.4
    out.loss.backward()
    assert model.net.layer1[0].gate.fc2.bias.grad.abs().sum() > 0


def test_code_variant_rate_term_is_one_over_l_of_the_papers_on_the_same_decisions():
    torch.manual_seed(0)
    cifar = (torch.rand(32, 54) < 0.7).float()
    paper, code = AdanetMethod(variant="paper"), AdanetMethod(variant="code")
    by_hand = ((cifar.mean(0) - 0.6) ** 2).sum()                      # Eq. (8) as printed
    assert paper.rate_term(cifar).item() == pytest.approx(by_hand.item(), rel=1e-6)
    assert torch.equal(code.rate_term(cifar), paper.rate_term(cifar) / 54)
    # ImageNet: 16 gated layers, the 6 with target 1 left out of the sum but still counted in L
    imagenet = (torch.rand(32, 16) < 0.7).float()
    targets = imagenet_targets(0.6)
    paper = AdanetMethod(target=targets, leave_out_full=True, variant="paper")
    code = AdanetMethod(target=targets, leave_out_full=True, variant="code")
    kept = torch.tensor(targets) < 1
    by_hand = ((imagenet.mean(0) - torch.tensor(targets)) ** 2)[kept].sum()
    assert int(kept.sum()) == 10
    assert paper.rate_term(imagenet).item() == pytest.approx(by_hand.item(), rel=1e-6)
    assert code.rate_term(imagenet).item() == pytest.approx(by_hand.item() / 16, rel=1e-6)


@pytest.mark.parametrize("variant", ["paper", "code"])
def test_training_step_of_each_variant_adds_lambda_times_its_rate_term(variant):
    torch.manual_seed(0)
    model = create_model("adanet110").train()
    method = AdanetMethod(lam=2.0, target=0.6, variant=variant)
    out = method.training_step(model, torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,)),
                               torch.nn.CrossEntropyLoss())
    summed = target_rate_loss(decisions(model), 0.6).item()
    term = summed / 54 if variant == "code" else summed
    assert out.logs["target_loss"] == pytest.approx(term, rel=1e-5)
    assert out.loss.item() == pytest.approx(out.logs["ce"] + 2.0 * term, rel=1e-5)


def _groups_after(optimizer, scheduler, steps: int) -> dict[str, tuple[float, float, set[int]]]:
    """{group name: (LR after `steps` scheduler steps, weight decay, ids of its parameters)}."""
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
    return {g["name"]: (g["lr"], g["weight_decay"], {id(p) for p in g["params"]}) for g in optimizer.param_groups}


def test_optimizer_groups_of_each_variant_follow_their_source():
    from common.train import TrainConfig, build_optimizer

    model = Adanet("resnet20_cifar", reduction=2)
    gates = {id(p) for n, p in model.named_parameters() if ".gate." in n}
    everything = {id(p) for p in model.parameters()}
    assert len(gates) == 9 * 6                                   # fc1 (W, b), bn (γ, β), fc2 (W, b) of 9 gates
    config = TrainConfig(lr=0.1, milestones=(2,), gamma=0.1, weight_decay=5e-4)
    # "paper" (Sec. 4.1): every gate parameter at 2e-4, ×0.4 at the network's milestones
    optimizer, scheduler = build_optimizer(model, config, AdanetMethod(variant="paper").param_groups(model), 1)
    start = _groups_after(optimizer, scheduler, 0)
    assert list(start) == ["gates", "default"]
    assert start["gates"][:2] == (2e-4, 5e-4) and start["gates"][2] == gates
    assert start["default"][:2] == (0.1, 5e-4) and start["default"][2] == everything - gates
    decayed = _groups_after(optimizer, scheduler, 2)
    assert decayed["gates"][0] == pytest.approx(2e-4 * 0.4) and decayed["default"][0] == pytest.approx(0.1 * 0.1)
    # "code" (the authors' --lrfact 1): the gates at the network's LR, decayed with it, weight decay too
    optimizer, scheduler = build_optimizer(model, config, AdanetMethod(variant="code").param_groups(model), 1)
    start = _groups_after(optimizer, scheduler, 0)
    assert list(start) == ["default"] and start["default"] == (0.1, 5e-4, everything)
    assert _groups_after(optimizer, scheduler, 2)["default"][0] == pytest.approx(0.1 * 0.1)


def test_variant_arguments_are_checked():
    from adanet.tables import CIFAR_METHOD, IMAGENET_METHOD

    assert AdanetMethod().hparams()["variant"] == "paper"
    for recipe in (CIFAR_METHOD, IMAGENET_METHOD):  # the tables train the paper's variant
        hparams = AdanetMethod(**recipe).hparams()
        assert (hparams["variant"], hparams["gate_lr"], hparams["gate_gamma"]) == ("paper", 2e-4, 0.4)
    assert AdanetMethod(variant="code").hparams()["gate_lr"] is None
    with pytest.raises(ValueError, match="'cod'.*paper, code"):
        AdanetMethod(variant="cod")
    with pytest.raises(ValueError, match="gate_lr=0.1"):
        AdanetMethod(variant="code", gate_lr=0.1)


def test_data_parallel_replicas_refuse_to_run():
    model = create_model("adanet110").eval()
    replica = model._replicate_for_data_parallel()  # what nn.DataParallel runs on each GPU
    with pytest.raises(RuntimeError, match="DataParallel"):
        replica(torch.randn(1, 3, 32, 32))
    model(torch.randn(1, 3, 32, 32))  # the model itself runs


def test_fgsm_and_jpeg():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
    ramp = torch.linspace(0.2, 0.8, 8)
    pixels = (ramp[None, None, :, None] * ramp[None, None, None, :]).repeat(16, 3, 1, 1)  # smooth images
    labels = torch.randint(0, 10, (16,))
    direction = fgsm_direction(model, pixels, labels, "cifar10")
    adversarial = fgsm(pixels, direction, 8 / 255)
    assert (adversarial - pixels).abs().max() <= 8 / 255 + 1e-6
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    from common.data import normalize
    loss = torch.nn.functional.cross_entropy
    with torch.no_grad():
        before = loss(model(normalize(pixels * 255, "cifar10")), labels)
        assert loss(model(normalize(adversarial * 255, "cifar10")), labels) > before
    compressed = jpeg(adversarial, 75)
    assert compressed.shape == adversarial.shape and compressed.dtype == torch.float32
    assert 0 < (compressed - adversarial).abs().mean() < 0.05


def test_forced_pattern_executes_the_asked_share():
    pattern = forced_pattern(64, 54, 0.6)
    assert torch.all(pattern.sum(1) == 32)
    assert not torch.equal(pattern[0], pattern[1])


def test_every_table_and_figure_has_a_target():
    assert {"table1", "table2", "fig3", "fig4", "fig6", "fig7", "fig8", "latency"} <= set(TARGETS)


def test_eval_gate_folds_batch_norm_exactly_and_refreshes_after_updates():
    from adanet.model import Gate

    torch.manual_seed(0)
    gate = Gate(16, 2)
    gate.train()
    for _ in range(3):
        gate.logits(torch.randn(8, 16, 4, 4))  # move the running statistics
    gate.eval()
    x = torch.randn(5, 16, 4, 4)
    z = x.mean(dim=(2, 3))
    reference = gate.fc2(torch.relu(gate.bn(gate.fc1(z))))
    torch.testing.assert_close(gate.logits(x), reference)
    state = {k: v * 2 if k == "fc1.weight" else v for k, v in gate.state_dict().items()}
    gate.load_state_dict(state)  # loading drops the folded weights
    torch.testing.assert_close(gate.logits(x), gate.fc2(torch.relu(gate.bn(gate.fc1(z)))))
    gate.double()  # moving the module drops the folded weights too
    torch.testing.assert_close(gate.logits(x.double()), gate.fc2(torch.relu(gate.bn(gate.fc1(z.double())))))
    gate.float()
    gate.train()
    gate.logits(torch.randn(8, 16, 4, 4))  # training moves the statistics; eval() folds anew
    gate.eval()
    torch.testing.assert_close(gate.logits(x), gate.fc2(torch.relu(gate.bn(gate.fc1(z)))))


# ------------------------------------------------------------------ runs shared by targets (the run layer)

def test_figures_reuse_table1_runs_and_a_new_lambda_makes_new_runs(tmp_path, monkeypatch):
    """`adanet table1` then `adanet fig3`: fig3 trains nothing; changing λ makes new Adanet runs."""
    import json as _json

    import huggingface_hub

    from adanet import tables
    from reproduce import cli

    assert cli.main(["adanet", "table1", "--out", str(tmp_path)]) == 0
    table1 = _json.loads((tmp_path / "adanet-table1-smoke.json").read_text())["runs"]
    assert set(table1) == {"ResNet 110", "Adanet 110", "Wide Adanet 89"}
    assert cli.main(["adanet", "fig3", "--out", str(tmp_path)]) == 0
    fig3 = _json.loads((tmp_path / "adanet-fig3-smoke.json").read_text())["runs"]
    assert all(run["reused"] and run["key"] == table1[row]["key"] for row, run in fig3.items())

    uploads = []

    class FakeApi:
        def create_repo(self, repo_id, exist_ok, private=False):
            uploads.append(repo_id)

        def upload_folder(self, folder_path, repo_id):
            assert {"config.json", "model.safetensors", "README.md"} <= {p.name for p in Path(folder_path).iterdir()}

    # fig8's one trained row is pushed (it was silently skipped before). The CLI pushes no smoke weights,
    # so the push itself is called here on the smoke target's context.
    from common.reproduction import Context, push_trained, write_results

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    ctx = Context("adanet", "fig8", "smoke", tmp_path, push_to_hub="me/x")
    json_path, _ = write_results(ctx, tables.TARGETS["fig8"], tables.TARGETS["fig8"].run(ctx))
    assert push_trained(ctx, json_path) == ["me/x-adanet-110"] and uploads == ["me/x-adanet-110"]

    monkeypatch.setitem(tables.CIFAR_METHOD, "lam", 1.0)
    assert cli.main(["adanet", "fig3", "--out", str(tmp_path)]) == 0
    changed = _json.loads((tmp_path / "adanet-fig3-smoke.json").read_text())["runs"]
    for row, run in changed.items():
        assert not run["reused"] and run["key"] != table1[row]["key"], row


@pytest.mark.parametrize("batch_norm", [True, False])
def test_eval_gate_folded_margin_gives_the_decisions_and_probabilities_of_eq5(batch_norm):
    from adanet.model import Gate

    torch.manual_seed(0)
    gate = Gate(16, 2, batch_norm=batch_norm)
    torch.nn.init.normal_(gate.fc2.weight, std=1.0)  # decisions that depend on the input
    gate.fc2.bias.data.zero_()
    gate.train()
    gate.logits(torch.randn(8, 16, 4, 4))  # move the running statistics
    gate.eval()
    x = torch.randn(64, 16, 4, 4)
    beta = gate.fc2(torch.relu(gate.bn(gate.fc1(x.mean(dim=(2, 3))))))   # Eq. (5), unfolded
    decision, prob = gate(x)
    assert torch.equal(decision, (beta[:, 0] > beta[:, 1]).float())
    assert 0 < decision.sum() < 64
    torch.testing.assert_close(prob, beta.softmax(dim=1)[:, 0])


def test_stochastic_depth_survival_decays_linearly_to_p_last():
    model = create_model("stochastic_depth20")
    # Huang et al.'s linear decay rule: p_l = 1 − (l / L)(1 − p_L), L = 9 blocks, p_L = 0.5
    assert model.survival() == pytest.approx([1 - l / 9 * 0.5 for l in range(1, 10)])
    assert len(create_model("stochastic_depth110").survival()) == 54
    with pytest.raises(ValueError, match="last_survival"):
        StochasticDepth("resnet20_cifar", last_survival=0.0)


def _block_by_hand(block, x: torch.Tensor, scale: float) -> torch.Tensor:
    """post(shortcut + scale · F) of a torchvision BasicBlock, written out."""
    residual = block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(x)))))
    shortcut = x if block.downsample is None else block.downsample(x)
    return torch.relu(shortcut + scale * residual)


def test_stochastic_depth_scales_each_branch_by_its_survival_at_test_time():
    torch.manual_seed(0)
    model = create_model("stochastic_depth20").eval()
    block = model.net.layer2[0]  # the downsampling block: its projection shortcut always runs
    assert isinstance(block, DroppedBlock)
    x = torch.randn(3, 16, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(block(x), _block_by_hand(block.block, x, block.survival))
        # p_L = 1 keeps every block: the plain ResNet 20 on the same weights
        full = create_model("stochastic_depth20", last_survival=1.0).eval()
        plain = create_model("resnet20").eval()
        plain.load_state_dict({k.replace(".block.", "."): v for k, v in full.state_dict().items()})
        images = torch.randn(2, 3, 32, 32)
        torch.testing.assert_close(full(images), plain(images))


def test_stochastic_depth_drops_a_block_for_the_whole_mini_batch_and_then_trains_none_of_it():
    torch.manual_seed(0)
    block = create_model("stochastic_depth20").net.layer3[2].train()  # p = 0.5
    x = torch.randn(4, 64, 8, 8)
    with torch.no_grad():
        executed, skipped = _block_by_hand(block.block, x, 1.0), torch.relu(x)
    outcomes = []
    for _ in range(200):
        block.zero_grad()
        out = block(x)
        ran = torch.allclose(out, executed)
        assert ran or torch.equal(out, skipped)  # every image of the batch, or none
        out.sum().backward()
        assert (block.block.conv1.weight.grad.abs().sum() > 0) == ran
        outcomes.append(ran)
    assert 0.4 < sum(outcomes) / len(outcomes) < 0.6
