"""adn: sub-path split, skip-aware norms, Eq. (8), Algorithm 1 through common.train, counts vs the paper."""
import math

import pytest
import torch
from torch import nn

from adn import ADNet, BaseNet, all_configs, convert_sync_batchnorm, create_model, list_models
from adn.counting import attention_macs, elementwise_ops
from adn.detection import adn_detector
from adn.losses import adn_loss, distillation, joint_ce_loss, kl_distill
from adn.method import ADNMethod
from adn.model import SkipAwareBatchNorm2d, SkipAwareLayerNorm, SkipAwareSyncBatchNorm, parse_skip, split_stages
from adn.tables import TABLE1, bn_mean_distances
from common.backbones import create_backbone
from common.data import build_data
from common.metrics import count_params, model_macs
from common.train import TrainConfig, fit

IMAGENET = (3, 224, 224)


@pytest.fixture(scope="module")
def resnet50():
    torch.manual_seed(0)
    return create_model("resnet50_adn")


def tiny_adn(backbone="resnet20_cifar", **kwargs):
    torch.manual_seed(0)
    return ADNet(backbone, 10, **kwargs)


# --- Sub-path split (Sec. 3.1, Eq. 1; authors' split rule) -------------------------------------

@pytest.mark.parametrize("backbone,skippable", [
    ("resnet50", [[2], [2, 3], [3, 4, 5], [2]]),                    # [3,4,6,3] → skippable [1,2,3,1]
    ("resnet56_cifar", [[5, 6, 7, 8]] * 3),                        # 9 blocks: first 5 kept
    ("mobilenet_v2", [[3], [6], [9, 10], [13], [16]]),             # features.i; 1-block stages not adaptive
    ("vit_b_32", [[2], [5], [8], [11]]),                           # 4 groups of 3, the last skippable
])
def test_split_follows_the_authors_rule(backbone, skippable):
    plan = split_stages(create_backbone(backbone))
    assert [s.skippable for s in plan] == skippable


def test_parse_skip_accepts_the_papers_notation_and_rejects_the_rest():
    assert parse_skip("TTFF", 4) == (True, True, False, False)
    assert parse_skip("base", 3) == (True,) * 3 and parse_skip(None, 2) == (False, False)
    with pytest.raises(ValueError, match="4 letters"):
        parse_skip("TTF", 4)
    with pytest.raises(ValueError, match="3 adaptive stages"):
        parse_skip([True], 3)
    assert all_configs(2) == ["FF", "FT", "TF", "TT"]


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="resnet50_adn"):
        create_model("resnet51_adn")
    assert {"resnet50_adn", "mobilenetv2_adn", "vit_b32_adn", "resnet56_cifar_adn", "resnet110_cifar_adn",
            "resnet50_base", "resnet50"} <= set(list_models())


# --- Skipping is real; weights are shared but for the skip-aware norms --------------------------

def test_base_net_executes_no_skippable_block():
    model = tiny_adn("resnet32_cifar").eval()  # 5 blocks per stage: 2 skippable
    calls = {id(b): 0 for b in model.skippable_blocks}
    for block in model.skippable_blocks:
        block.register_forward_hook(lambda m, i, o: calls.__setitem__(id(m), calls[id(m)] + 1))
    x = torch.randn(2, 3, 32, 32)
    model(x, skip="base")
    assert sum(calls.values()) == 0
    model(x, skip="TFT")  # only stage 2's skippable blocks run
    stage_of = {id(b): s for s, sub in enumerate(split_stages(model.net)) for b in
                [sub.container[i] for i in sub.skippable]}
    assert all(n == (1 if stage_of[k] == 1 else 0) for k, n in calls.items())
    model(x)
    assert all(n == 2 if stage_of[k] == 1 else n == 1 for k, n in calls.items())


def _used_parameters(model, skip):
    model.zero_grad(set_to_none=True)
    model(torch.randn(4, 3, 32, 32), skip=skip).square().sum().backward()
    return {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_super_and_base_share_every_weight_but_the_skip_aware_norms():
    model = tiny_adn().train()
    names = {id(p): n for n, p in model.named_parameters()}
    skippable = {names[id(p)] for b in model.skippable_blocks for p in b.parameters()}
    twins = {names[id(p)] for p in model.skip_norm_parameters()}
    main_norms = {names[id(p)] for norms in model.norms for n in norms for p in n.parameters(recurse=False)}
    used_super, used_base = _used_parameters(model, "super"), _used_parameters(model, "base")
    assert twins and twins == used_base - used_super          # the base-net's own weights: the twins only
    assert used_super - used_base == skippable | main_norms    # the super-net's own: skippable blocks + main norms
    assert used_super | used_base == set(names.values())       # every weight is used by one of them
    shared = used_super & used_base
    assert all(".skip_norm." not in n for n in shared) and not shared & skippable


def test_skip_aware_norm_off_shares_the_norms_too():
    model = tiny_adn(skip_aware_norm=False).train()
    assert count_params(model) == count_params(create_backbone("resnet20_cifar"))
    assert _used_parameters(model, "base") < _used_parameters(model, "super")


def test_torchvision_parameter_names_are_kept(resnet50):
    reference = set(create_backbone("resnet50").state_dict())
    ours = set(resnet50.net.state_dict())
    assert reference <= ours and all(".skip_norm." in k for k in ours - reference)


def test_skip_aware_norm_overhead_resnet50(resnet50):
    # Twins of the residual-branch norms of the always-executed blocks, as the authors' code: blocks
    # kept [2,2,3,2] at widths 64..512 (bn1, bn2: w; bn3: 4w), γ and β each. The projection
    # shortcut's BN of each stage's first block stays shared.
    kept, widths = [2, 2, 3, 2], [64, 128, 256, 512]
    expected = sum(2 * k * (w + w + 4 * w) for k, w in zip(kept, widths))
    assert expected == 26_112
    assert count_params(resnet50) - count_params(create_backbone("resnet50")) == expected
    assert sum(p.numel() for p in resnet50.skip_norm_parameters()) == expected
    shortcuts = [m for n, m in resnet50.named_modules() if ".downsample." in n and isinstance(m, nn.BatchNorm2d)]
    assert len(shortcuts) == 4 and not any(isinstance(m, SkipAwareBatchNorm2d) for m in shortcuts)


def test_resnet50_adn_has_the_papers_parameter_count():
    assert count_params(create_model("resnet50_adn")) == 25_583_144  # Table 1: 25.58 M


def test_vit_gets_switchable_layer_norms():
    model = create_model("vit_b32_adn")
    norms = [n for stage in model.norms for n in stage]
    assert len(norms) == 16 and all(isinstance(n, SkipAwareLayerNorm) for n in norms)  # ln_1, ln_2 of 8 blocks
    assert count_params(model) - count_params(create_backbone("vit_b_32")) == 16 * 2 * 768


def test_skip_aware_bn_sets_learn_their_own_statistics():
    model = tiny_adn().train()
    assert max(d for _, _, d in bn_mean_distances(model)) == 0.0  # both sets start equal
    model(torch.randn(8, 3, 32, 32) * 3 + 1, skip="base")
    distances = [d for _, _, d in bn_mean_distances(model)]
    assert all(d > 0 for d in distances)


# --- Counts against Table 1 and the paper's conventions ----------------------------------------

def test_resnet50_adn_counts_match_table1(resnet50):
    _, p_params, p_super, *_ = TABLE1[("resnet50", "super")]
    _, _, p_base, *_ = TABLE1[("resnet50", "base")]
    assert count_params(resnet50) / 1e6 == pytest.approx(p_params, rel=0.02)
    assert model_macs(resnet50, IMAGENET) / 1e9 == pytest.approx(p_super, rel=0.02)
    resnet50.set_skip("base")
    base_macs = model_macs(resnet50, IMAGENET)
    assert base_macs / 1e9 == pytest.approx(p_base, rel=0.02)
    # the paper's ResNet numbers are a ptflops-style count (BN, ReLU, pooling charged per element)
    assert (base_macs + elementwise_ops(resnet50, IMAGENET)) / 1e9 == pytest.approx(p_base, abs=0.005)
    resnet50.set_skip(None)
    individual_base = BaseNet("resnet50")  # the "-Base" network: exactly the base-net's computation
    assert model_macs(individual_base, IMAGENET) == base_macs
    assert count_params(individual_base) / 1e6 == pytest.approx(TABLE1[("resnet50", "individual-base")][1], abs=0.005)


def test_vit_counts_and_the_papers_missing_attention():
    model = create_model("vit_b32_adn")
    full = attention_macs(model, IMAGENET)
    assert full["total"] / 1e9 == pytest.approx(4.41, abs=0.005)                        # ours, attention counted
    assert (full["total"] - full["multihead_attention"]) / 1e9 == pytest.approx(2.95, abs=0.005)  # the paper's
    model.set_skip("base")
    base = attention_macs(model, IMAGENET)
    assert (base["total"] - base["multihead_attention"]) / 1e9 == pytest.approx(2.00, abs=0.01)
    assert count_params(model) / 1e6 == pytest.approx(88.25, abs=0.005)


def test_mobilenetv2_counts():
    model = create_model("mobilenetv2_adn")
    macs = model_macs(model, IMAGENET)
    assert macs / 1e9 == pytest.approx(0.3008, abs=5e-4)
    assert (macs + elementwise_ops(model, IMAGENET)) / 1e9 == pytest.approx(0.32, abs=0.002)  # paper's convention
    # authors' code: twins in the adaptive stages' kept blocks (15,472) and in the stem (64), the
    # one-block stages features.1 (96) and features.17 (4,480) and the head conv (2,560)
    assert count_params(model) - count_params(create_backbone("mobilenet_v2")) == 15_472 + 64 + 96 + 4_480 + 2_560
    assert count_params(model) == 3_527_544


@pytest.mark.parametrize("twin,stage", [("features.0.1", 0), ("features.1.conv.2", 0),
                                        ("features.17.conv.3", 4), ("features.18.1", 4)])
def test_mobilenetv2_outer_twins_switch_with_the_neighbouring_stage(twin, stage):
    torch.manual_seed(0)
    model = create_model("mobilenetv2_adn", num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    configs = ["".join("T" if s == k else "F" for k in range(5)) for s in (stage, 4 - stage)]
    before = {c: model(x, skip=c) for c in configs}
    with torch.no_grad():
        model.net.get_submodule(twin).skip_norm.bias.add_(1.0)
    own, other = configs  # the twin is in use exactly when its stage skips
    assert not torch.equal(model(x, skip=own), before[own])
    assert torch.equal(model(x, skip=other), before[other])


@pytest.mark.parametrize("backbone,size", [("resnet20_cifar", (3, 32, 32)), ("mobilenet_v2", (3, 32, 32))])
def test_every_configuration_runs_and_its_macs_lie_between_base_and_super(backbone, size):
    model = ADNet(backbone).eval()
    macs = {}
    for config in all_configs(model.num_stages):
        model.set_skip(config)
        macs[config] = model_macs(model, size)  # runs the configuration
    model.set_skip(None)
    super_, base = macs["F" * model.num_stages], macs["T" * model.num_stages]
    saved = [super_ - macs["F" * s + "T" + "F" * (model.num_stages - s - 1)] for s in range(model.num_stages)]
    assert all(s > 0 for s in saved)
    for config, value in macs.items():
        assert base <= value <= super_
        if config not in ("F" * model.num_stages, "T" * model.num_stages):
            assert base < value < super_
        # stages are independent: skipping saves the sum of what each stage's sub-path costs
        assert value == super_ - sum(s for s, c in zip(saved, config) if c == "T")


# --- Eq. (8) and Algorithm 1 -------------------------------------------------------------------

def _kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def _softmax(v):
    e = [math.exp(x) for x in v]
    return [x / sum(e) for x in e]


def test_loss_equals_eq8_on_a_hand_computed_example():
    labels = torch.tensor([0])
    super_logits, base_logits = torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 1.0]])
    # two stages; 2×2 feature maps whose spatial means are (1, 3) / (2, 2) and (0, 1) / (1, 0)
    s1 = torch.tensor([[[[0.0, 2.0], [1.0, 1.0]], [[3.0, 3.0], [2.0, 4.0]]]])
    b1 = torch.full((1, 2, 2, 2), 2.0)
    s2, b2 = torch.tensor([[0.0, 1.0]]).view(1, 2, 1, 1), torch.tensor([[1.0, 0.0]]).view(1, 2, 1, 1)
    loss, parts = adn_loss(labels, super_logits, base_logits, [s1, s2], [b1, b2], alpha=0.5)
    ce = -math.log(_softmax([2, 0])[0])
    kl_feat = _kl(_softmax([1, 3]), _softmax([2, 2])) + _kl(_softmax([0, 1]), _softmax([1, 0]))
    kl_logit = _kl(_softmax([2, 0]), _softmax([1, 1]))
    expected = 0.5 * ce + 0.5 * (kl_feat + kl_logit)
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert float(parts["kl_logits"]) == pytest.approx(0.3278, abs=1e-4)  # 0.8808·ln 1.7616 + 0.1192·ln 0.2384
    # temperature T: KL of the softened distributions times T²
    assert float(kl_distill(base_logits, super_logits, 2.0)) == pytest.approx(4 * _kl(_softmax([1, 0]), _softmax([.5, .5])))
    assert float(joint_ce_loss(labels, super_logits, base_logits)) == pytest.approx(
        0.5 * (ce - math.log(0.5)))


def test_distillation_over_the_teachers_top_classes_on_a_hand_computed_example():
    # image 1: the teacher's top 2 of (2, 0, 1) are classes 0 and 2; image 2: of (0, 3, 1), classes 1 and 2
    teacher = torch.tensor([[2.0, 0.0, 1.0], [0.0, 3.0, 1.0]])
    student = torch.tensor([[0.0, 5.0, 1.0], [1.0, 0.0, 2.0]])
    expected = (_kl(_softmax([2, 1]), _softmax([0, 1])) + _kl(_softmax([3, 1]), _softmax([0, 2]))) / 2
    assert float(kl_distill(student, teacher, topk=2)) == pytest.approx(expected, rel=1e-6)
    everything = (_kl(_softmax([2, 0, 1]), _softmax([0, 5, 1])) + _kl(_softmax([0, 3, 1]), _softmax([1, 0, 2]))) / 2
    assert float(kl_distill(student, teacher, topk=3)) == pytest.approx(everything, rel=1e-6)
    assert float(kl_distill(student, teacher)) == pytest.approx(everything, rel=1e-6)


def test_distillation_of_chosen_stages_on_a_hand_computed_example():
    labels, super_logits, base_logits = torch.tensor([0]), torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 1.0]])
    s1, b1 = torch.tensor([[1.0, 3.0]]), torch.tensor([[2.0, 2.0]])  # pooled stage outputs
    s2, b2 = torch.tensor([[0.0, 1.0]]).view(1, 2, 1, 1), torch.tensor([[1.0, 0.0]]).view(1, 2, 1, 1)
    kl1, kl2 = _kl(_softmax([1, 3]), _softmax([2, 2])), _kl(_softmax([0, 1]), _softmax([1, 0]))
    kl_logit = _kl(_softmax([2, 0]), _softmax([1, 1]))
    for stages, expected in [(None, kl1 + kl2), ((1, 2), kl1 + kl2), ((2,), kl2), ((), 0.0)]:
        feature_kl, logit_kl = distillation(super_logits, base_logits, [s1, s2], [b1, b2], feature_stages=stages)
        assert float(feature_kl) == pytest.approx(expected, abs=1e-7) and float(logit_kl) == pytest.approx(kl_logit)
    # the authors' README command, scaled down: the top-1 class only (a one-class distribution: KL 0), no features
    ce = -math.log(_softmax([2, 0])[0])
    loss, _ = adn_loss(labels, super_logits, base_logits, [s1, s2], [b1, b2], topk_classes=1, feature_stages=())
    assert float(loss) == pytest.approx(0.5 * ce, rel=1e-6)
    with pytest.raises(ValueError, match=r"\(3,\) must lie in 1\.\.2"):
        distillation(super_logits, base_logits, [s1, s2], [b1, b2], feature_stages=(3,))
    with pytest.raises(ValueError, match="got 0"):
        ADNMethod(topk_classes=0)


def test_distillation_options_enter_the_run_key():
    method = ADNMethod(topk_classes=500, feature_stages=[1, 2, 3], eval_configs=("TTF",))
    assert method.hparams() == {"alpha": 0.5, "temperature": 1.0, "specialize": True, "topk_classes": 500,
                                "feature_stages": (1, 2, 3)}


def test_teacher_gets_no_gradient_from_the_distillation_term():
    model = tiny_adn().train()
    images = torch.randn(4, 3, 32, 32)
    super_logits, super_features = model(images, skip="super", return_features=True)
    base_logits, base_features = model(images, skip="base", return_features=True)
    no_ce = lambda logits, labels: torch.zeros(())  # noqa: E731 — leaves the distillation term of Eq. (8) alone
    distill, _ = adn_loss(torch.zeros(4, dtype=torch.long), super_logits, base_logits, super_features,
                          base_features, alpha=0.0, criterion=no_ce)
    grads = torch.autograd.grad(distill, [super_logits, *super_features, base_logits], allow_unused=True,
                                retain_graph=True)
    assert all(g is None for g in grads[:-1]) and grads[-1].abs().sum() > 0
    distill.backward()
    assert all(p.grad is None for b in model.skippable_blocks for p in b.parameters())  # super-only weights
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.skip_norm_parameters())


def test_training_step_runs_both_subnetworks_and_the_ablation():
    model, images, labels = tiny_adn().train(), torch.randn(4, 3, 32, 32), torch.arange(4)
    criterion = nn.CrossEntropyLoss()
    torch.manual_seed(1)
    out = ADNMethod().training_step(model, images, labels, criterion)
    torch.manual_seed(1)
    s_logits, s_feats = model(images, skip="super", return_features=True)
    b_logits, b_feats = model(images, skip="base", return_features=True)
    expected = adn_loss(labels, s_logits, b_logits, s_feats, b_feats)[0].detach()
    assert float(out.loss) == pytest.approx(float(expected), rel=1e-5)
    assert set(out.logs) == {"ce_super", "ce_base", "kl_features", "kl_logits"} and out.backward_done
    ablation = ADNMethod(specialize=False).training_step(model, images, labels, criterion)
    assert float(ablation.loss) == pytest.approx(0.5 * float(out.logs["ce_super"] + out.logs["ce_base"]), rel=1e-4)


@pytest.mark.parametrize("options", [{}, {"specialize": False}, {"topk_classes": 3, "feature_stages": (2,)}])
def test_backward_per_subnetwork_gives_the_gradients_of_one_backward_on_the_sum(options):
    torch.manual_seed(0)
    images, labels, criterion = torch.randn(4, 3, 32, 32), torch.arange(4), nn.CrossEntropyLoss()
    two, one = tiny_adn().train(), tiny_adn().train()  # the same weights
    order = []  # (configuration, gradients already there?) at the start of each forward
    two.net.register_forward_pre_hook(lambda m, i: order.append((two.skip, two.net.fc.weight.grad is not None)))
    method = ADNMethod(**options)
    out = method.training_step(two, images, labels, criterion)
    assert order == [((False,) * 3, False), ((True,) * 3, True)]  # the super-net's backward ran before the base-net
    s_logits, s_feats = one(images, skip="super", return_features=True)
    b_logits, b_feats = one(images, skip="base", return_features=True)
    if method.specialize:
        total, _ = adn_loss(labels, s_logits, b_logits, s_feats, b_feats, criterion=criterion,
                            topk_classes=method.topk_classes, feature_stages=method.feature_stages)
    else:
        total = joint_ce_loss(labels, s_logits, b_logits, criterion)
    total.backward()  # Alg. 1, line 8: one backward on the sum
    assert float(out.loss) == pytest.approx(float(total.detach()), rel=1e-6) and out.backward_done
    assert method.unused_parameters  # each backward leaves some weights out: DDP must look for them
    for (name, a), (_, b) in zip(two.named_parameters(), one.named_parameters()):
        assert a.grad is not None and b.grad is not None, name
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7, msg=name)


def test_tiny_cifar_adn_trains_with_decreasing_loss_for_both_subnetworks(tmp_path):
    data = build_data("cifar10-sample", batch_size=16, eval_batch_size=50, train_limit=64, test_limit=50)
    config = TrainConfig(epochs=3, batch_size=16, lr=0.05, milestones=(), weight_decay=0.0, seed=0)
    result = fit(tiny_adn(), data, config, tmp_path, method=ADNMethod(), progress=False)
    first, last = result.history[0], result.history[-1]
    assert last["ce_super"] < first["ce_super"] and last["ce_base"] < first["ce_base"]
    assert result.evaluation["logits_base"].shape == result.evaluation["logits"].shape == (50, 10)


def test_torchs_sync_batchnorm_conversion_is_refused():
    model = tiny_adn()
    nn.SyncBatchNorm.convert_sync_batchnorm(model)  # rebuilds every skip-aware BN as a plain SyncBatchNorm
    with pytest.raises(RuntimeError, match="adn.convert_sync_batchnorm"):
        model(torch.randn(2, 3, 32, 32), skip="base")
    with pytest.raises(RuntimeError, match="skip-aware twin"):
        model.eval()


def test_convert_sync_batchnorm_keeps_the_twins():
    model = tiny_adn()
    with torch.no_grad():
        for p in model.skip_norm_parameters():
            p.add_(torch.rand_like(p))
    model.set_skip("TFT")
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    expected = {config: model(x, skip=config) for config in ("super", "base", "TFT")}
    assert convert_sync_batchnorm(model) is model
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and all(isinstance(m, nn.SyncBatchNorm) for m in norms)
    twins = [n for stage in model.norms for n in stage]
    assert len(twins) == 12 and all(isinstance(n, SkipAwareSyncBatchNorm) for n in twins)
    assert [n.skipping for n in twins] == [True] * 4 + [False] * 4 + [True] * 4  # the set configuration survives
    for config, logits in expected.items():  # the base-net's output needs the (perturbed) twins
        assert torch.equal(model(x, skip=config), logits), config
    model.train()(x, skip="base").sum().backward()  # trains (one process: no synchronisation needed)
    assert all(p.grad is not None for p in model.skip_norm_parameters())


def test_save_and_load_keep_both_norm_sets(tmp_path):
    model = tiny_adn()
    with torch.no_grad():
        for p in model.skip_norm_parameters():
            p.add_(torch.rand_like(p))
    model.save_pretrained(tmp_path)
    loaded = create_model("resnet20_cifar_adn", pretrained=str(tmp_path), num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    assert torch.equal(model(x, skip="base"), loaded(x, skip="base"))


# --- Table 4: detection backbone ---------------------------------------------------------------

@pytest.mark.parametrize("kind", ["faster", "mask"])
def test_detectors_build_and_run_on_both_depths(kind):
    torch.manual_seed(0)
    detector, adn = adn_detector(kind, min_size=64, max_size=96)
    detector.eval()
    for config in ("super", "base"):
        adn.set_skip(config)
        with torch.no_grad():
            (out,) = detector([torch.rand(3, 64, 96)])
        assert {"boxes", "labels", "scores"} <= set(out) and ("masks" in out) == (kind == "mask")
        features = detector.backbone(torch.rand(1, 3, 64, 96))
        assert [f.shape[1] for f in features.values()] == [256] * 5
