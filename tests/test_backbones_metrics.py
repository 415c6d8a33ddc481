"""common.backbones and common.metrics: shapes, counts against torchvision and the papers, timers."""
import pytest
import torch
from torch import nn
from torchvision import models

from common.backbones import (OptionAShortcut, block_parts, create_backbone, input_size, list_backbones,
                              residual_stages, spatial_mean)
from common.metrics import (accuracy, alternating_latency, count_macs, count_params, measure_latency, model_macs,
                            paired_ratio, topk_correct)

# (params M, GMACs) from torchvision's weight metadata and, where torchvision has none, the RegNet paper.
REFERENCE = {
    "resnet18": "ResNet18_Weights", "resnet34": "ResNet34_Weights", "resnet50": "ResNet50_Weights",
    "resnet101": "ResNet101_Weights", "resnext50_32x4d": "ResNeXt50_32X4D_Weights",
    "mobilenet_v2": "MobileNet_V2_Weights", "regnet_x_1_6gf": "RegNet_X_1_6GF_Weights",
    "vit_b_32": "ViT_B_32_Weights",
}


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_imagenet_backbone_counts_match_torchvision_metadata(name):
    meta = getattr(models, REFERENCE[name]).DEFAULT.meta
    model = create_backbone(name)
    assert count_params(model) == meta["num_params"]
    assert model_macs(model, input_size(name)) / 1e9 == pytest.approx(meta["_ops"], rel=0.01)


def test_vit_b32_counts_attention():
    model = create_backbone("vit_b_32")
    assert model_macs(model, (3, 224, 224)) / 1e9 == pytest.approx(4.41, abs=0.005)


@pytest.mark.parametrize("name,params_m,gmacs", [("regnet_x_600mf", 6.2, 0.60), ("regnet_y_600mf", 6.1, 0.60)])
def test_regnet_600mf_from_block_params(name, params_m, gmacs):
    model = create_backbone(name)
    assert count_params(model) / 1e6 == pytest.approx(params_m, rel=0.01)
    assert model_macs(model, (3, 224, 224)) / 1e9 == pytest.approx(gmacs, rel=0.01)


@pytest.mark.parametrize("depth,params_m", [(20, 0.27), (32, 0.46), (56, 0.85), (110, 1.7)])
def test_cifar_resnet_params_match_he2016(depth, params_m):
    model = create_backbone(f"resnet{depth}_cifar")
    assert count_params(model) / 1e6 == pytest.approx(params_m, rel=0.02)
    stages = residual_stages(model)
    assert [len(s) for s in stages] == [(depth - 2) // 6] * 3
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_cifar_resnet110_macs():
    # 3 stages × 18 blocks × 2 convs; stage 1: 16→16 at 32×32 = 2,359,296 MACs per conv, the others
    # the same (channels ×2, pixels ÷4), minus nothing: 108 convs ≈ 0.2548 G minus the first
    # downsampling convs' halved input channels; the stem (442,368) and fc (640) on top.
    macs = model_macs(create_backbone("resnet110_cifar"), (3, 32, 32))
    per_conv = 16 * 16 * 9 * 32 * 32
    expected = 3 * 36 * per_conv - 2 * per_conv // 2 + 3 * 16 * 9 * 32 * 32 + 64 * 10
    assert macs == expected


def test_option_a_shortcut_pads_and_subsamples():
    x = torch.arange(2 * 4 * 4 * 4, dtype=torch.float32).view(2, 4, 4, 4)
    y = OptionAShortcut(4, 8, 2)(x)
    assert y.shape == (2, 8, 2, 2)
    assert torch.equal(y[:, 2:6], x[:, :, ::2, ::2])
    assert y[:, :2].abs().sum() == 0 and y[:, 6:].abs().sum() == 0


def test_bottleneck89_has_3_4_20_2_blocks():
    model = create_backbone("bottleneck89_cifar")
    assert [len(s) for s in residual_stages(model)] == [3, 4, 20, 2]
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


@pytest.mark.parametrize("name,lengths", [
    ("resnet50", [3, 4, 6, 3]), ("mobilenet_v2", [1, 2, 3, 4, 3, 3, 1]),
    ("regnet_x_600mf", [1, 3, 5, 7]), ("vit_b_32", [12])])
def test_residual_stages(name, lengths):
    assert [len(s) for s in residual_stages(create_backbone(name))] == lengths


@pytest.mark.parametrize("name", ["resnet20_cifar", "resnet18", "resnet50", "mobilenet_v2", "regnet_x_600mf"])
def test_block_parts_reassemble_each_block(name):
    torch.manual_seed(0)
    model = create_backbone(name).eval()
    captured = {}
    stages = residual_stages(model)
    blocks = [b for s in stages for b in s.blocks()
              if not (name == "mobilenet_v2" and not b.use_res_connect)]
    hooks = [b.register_forward_hook(lambda m, a, out, i=i: captured.__setitem__(i, (a[0], out)))
             for i, b in enumerate(blocks)]
    size = 32 if name.endswith("cifar") else 64
    model(torch.randn(2, 3, size, size))
    for hook in hooks:
        hook.remove()
    for i, block in enumerate(blocks):
        x, out = captured[i]
        parts = block_parts(block)
        torch.testing.assert_close(parts.post(parts.shortcut(x) + parts.residual(x)), out)


def test_block_parts_rejects_vit_and_shape_changing_blocks():
    vit = create_backbone("vit_b_32")
    with pytest.raises(ValueError, match="EncoderBlock"):
        block_parts(vit.encoder.layers[0])
    with pytest.raises(ValueError, match="no shortcut"):
        block_parts(create_backbone("mobilenet_v2").features[1])


def test_unknown_backbone_lists_choices():
    with pytest.raises(ValueError, match="resnet50"):
        create_backbone("resnet51")
    assert "vit_b_32" in list_backbones()


def test_count_macs_of_linear_and_conv():
    assert count_macs(nn.Linear(10, 20, bias=False), torch.zeros(3, 10)) == 3 * 10 * 20
    assert count_macs(nn.Conv2d(2, 4, 3, padding=1, bias=False), torch.zeros(1, 2, 5, 5)) == 2 * 4 * 9 * 25


def test_topk_and_accuracy():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.3], [0.2, 0.3, 0.5]])
    labels = torch.tensor([1, 2, 0])
    assert topk_correct(logits, labels, (1, 2)) == {1: 1, 2: 2}
    assert accuracy(logits, labels, (1, 3)) == {1: pytest.approx(100 / 3), 3: 100.0}


def test_measure_latency_reports_median_and_throughput():
    stats = measure_latency(nn.Linear(8, 8), torch.zeros(4, 8), warmup=1, repeats=5)
    assert stats["batch_size"] == 4 and stats["repeats"] == 5
    assert stats["min_ms"] <= stats["median_ms"] <= stats["max_ms"]
    assert stats["images_per_s"] == pytest.approx(4 / (stats["median_ms"] / 1000))


def _runs(calls: list[str]) -> list[str]:
    """Consecutive repeats merged (Timer.timeit runs its statement more than once per timing)."""
    return [name for i, name in enumerate(calls) if i == 0 or calls[i - 1] != name]


@pytest.mark.parametrize("interleave", [False, True])
def test_alternating_latency_orders_calls_by_round_or_slot(interleave):
    calls: list[str] = []
    variants = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    timing = alternating_latency(variants, rounds=2, repeats=2, warmup=1, interleave=interleave)
    if interleave:  # a round: warm a, b, c, then the slots a b c | c b a
        expected = 2 * [*"abc", *"abc", *"cba"]
    else:           # a round: a (warm, timed, timed), then b, then c
        expected = 2 * [*"aaa", *"bbb", *"ccc"]
    assert _runs(calls) == _runs(expected)
    assert all(len(t["calls_ms"]) == 4 for t in timing.values())


def test_paired_ratio_is_the_median_of_slot_ratios():
    # times 2, 9, 3 over 1, 3, 2: slot ratios 2, 3, 1.5 (median 2), while the ratio of medians is 3 / 2
    assert paired_ratio([2.0, 9.0, 3.0], [1.0, 3.0, 2.0]) == 2.0
    with pytest.raises(ValueError, match="equally long"):
        paired_ratio([1.0], [1.0, 2.0])


def test_spatial_mean_is_mean_bit_for_bit_with_a_broadcast_gradient():
    torch.manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):  # 7×9: not a power of two, where sum / (H·W) would differ in bf16
        x = torch.randn(2, 3, 7, 9).to(dtype).requires_grad_()
        grad_out = torch.randn(2, 3).to(dtype)
        ours, = torch.autograd.grad(spatial_mean(x), x, grad_out)
        reference, = torch.autograd.grad(x.mean(dim=(2, 3)), x, grad_out)
        assert torch.equal(spatial_mean(x), x.mean(dim=(2, 3))) and torch.equal(ours, reference)
        assert ours.stride()[2:] == (0, 0)  # broadcast, not a written [B, C, H, W] tensor
        with torch.no_grad():
            assert torch.equal(spatial_mean(x), x.mean(dim=(2, 3)))
    expected = grad_out.float()[:, :, None, None].expand(2, 3, 7, 9) / 63  # ∂/∂x of Σ g·mean(x) is g / (H·W)
    assert torch.allclose(ours.float(), expected, rtol=1e-2)
