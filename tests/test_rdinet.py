"""rdinet: relation graph (Eq. 4, causal), Eq. 7 by hand, γ = 0 ≡ vanilla, L_rank vs a loop, USW,
L_cost, gradients, parameter and MAC counts, the paper's cost convention."""
from pathlib import Path

import pytest
import torch
from torch import nn

from common.backbones import create_backbone
from common.dynamic import GatedBlock, decisions, expected_macs_of, set_mode
from common.metrics import count_macs, count_params, model_macs
from rdinet import create_model, list_models
from rdinet.losses import colour_histogram, cost_loss, rank_loss, sample_distances
from rdinet.method import RDIMethod, uniform_path
from rdinet.model import RDINet, RelationalRouter, RouterMemory, relation_matrix, router_param_formula
from rdinet.tables import FULL_RESNET110_GMACS, PAPER_FLOPS_PER_MAC, TABLE2, TABLE3

README = Path(__file__).resolve().parent.parent / "rdinet" / "README.md"


def eq4_as_printed(position: int, r: int, gamma: float) -> torch.Tensor:
    """Eq. (4) literally: A[m, n] = γ^(n−m) for n ≥ m, 0 otherwise, over the k+1 routers n−k … n."""
    k = min(r, position)
    a = torch.zeros(k + 1, k + 1)
    for m in range(k + 1):
        for n in range(k + 1):
            if n >= m:
                a[m, n] = gamma ** (n - m)
    return a


@pytest.mark.parametrize("gamma", [1.0, 0.5, 0.25, 0.0])
@pytest.mark.parametrize("r", [0, 1, 2, 6])
@pytest.mark.parametrize("position", [0, 1, 2, 3, 10])
def test_relation_matrix_is_eq4_transposed_and_truncated(gamma, r, position):
    a = relation_matrix(position, r, gamma)
    k = min(r, position)
    assert a.shape == (k + 1, k + 1)  # truncated at the start of the network
    torch.testing.assert_close(a, eq4_as_printed(position, r, gamma).T)
    # the current router's row weights the router m steps back by γ^m (γ^0 = 1, also for γ = 0)
    torch.testing.assert_close(a[-1], torch.tensor([gamma ** m for m in range(k, -1, -1)]))


def test_relation_matrix_rejects_bad_arguments():
    with pytest.raises(ValueError, match="γ in"):
        relation_matrix(3, 2, 1.5)


def _hand_router(index: int, memory: RouterMemory) -> RelationalRouter:
    router = RelationalRouter(2, index, memory, d=2, r=2, gamma=0.5)
    with torch.no_grad():
        router.align.weight.copy_(torch.eye(2))
        router.align.bias.zero_()
        router.gcn.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    return router


def test_eq7_on_a_hand_computed_three_router_example():
    memory = RouterMemory()
    routers = [_hand_router(i, memory) for i in range(3)]
    pooled = [torch.tensor([1.0, 2.0]), torch.tensor([3.0, 0.0]), torch.tensor([0.0, 1.0])]  # ŝ_n (Eq. 5)
    # s̃ = ŝ; s_0 = W s̃_0 = (1, 4); s_1 = W(½ s_0 + s̃_1) = W(3.5, 2) = (3.5, 4);
    # s_2 = W(¼ s_0 + ½ s_1 + s̃_2) = W(2, 4) = (2, 8).
    expected = [torch.tensor([1.0, 4.0]), torch.tensor([3.5, 4.0]), torch.tensor([2.0, 8.0])]
    for router, p, e in zip(routers, pooled, expected):
        x = p.view(1, 2, 1, 1).expand(1, 2, 3, 3)
        torch.testing.assert_close(router.features(x)[0], e)
    # the same as the whole matrix product of Eq. (7), row r, with the causal A
    stack = torch.stack([expected[0], expected[1], pooled[2]])
    full = torch.relu(relation_matrix(2, 2, 0.5) @ stack @ routers[2].gcn.weight.T)
    torch.testing.assert_close(full[2], expected[2])


def _twin_models(**first):
    torch.manual_seed(0)
    a = create_model("rdinet32", d=16, **first)
    b = create_model("rdinet32", d=16, r=0)
    b.load_state_dict(a.state_dict())
    return a, b


def test_gamma_zero_gives_the_decisions_of_a_router_without_relation():
    relational, vanilla = _twin_models(r=2, gamma=0.0)
    x = torch.randn(6, 3, 32, 32)
    relational.eval(), vanilla.eval()
    with torch.no_grad():
        torch.testing.assert_close(relational(x), vanilla(x))
        assert torch.equal(decisions(relational), decisions(vanilla))
    relational.train(), vanilla.train()
    with torch.no_grad():
        torch.manual_seed(1)
        relational(x)
        torch.manual_seed(1)
        vanilla(x)
    torch.testing.assert_close(decisions(relational), decisions(vanilla))


def test_gamma_changes_the_current_routers_feature_when_r_is_positive():
    torch.manual_seed(0)
    half = create_model("rdinet32", d=16, r=2, gamma=0.5).eval()
    quarter = create_model("rdinet32", d=16, r=2, gamma=0.25).eval()
    quarter.load_state_dict(half.state_dict())
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        half(x)
        quarter(x)
    torch.testing.assert_close(half.memory.features[0], quarter.memory.features[0])  # no predecessor
    for n in (1, 5, 14):
        assert not torch.allclose(half.memory.features[n], quarter.memory.features[n])


def test_auto_relation_uses_cosine_similarity_edges():
    memory = RouterMemory()
    first = RelationalRouter(2, 0, memory, d=2, r=1, relation="auto")
    second = RelationalRouter(2, 1, memory, d=2, r=1, relation="auto")
    x0, x1 = torch.rand(4, 2, 3, 3), torch.rand(4, 2, 3, 3)
    s0 = first.features(x0)
    s1 = second.features(x1)
    s_tilde = torch.relu(second.align(x1.mean(dim=(2, 3))))
    cosine = torch.nn.functional.cosine_similarity(s0, s_tilde, dim=1)
    torch.testing.assert_close(s1, torch.relu(second.gcn(cosine[:, None] * s0 + s_tilde)))


def test_router_alone_needs_the_forward_of_its_predecessors():
    model = create_model("rdinet32", d=16).eval()
    router = model.routers()[3]
    with pytest.raises(RuntimeError, match="Router 2's features"):
        router(torch.randn(1, 16, 32, 32))
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
        decision, prob = router(torch.randn(1, 16, 32, 32))  # as macs_profile calls it
    assert decision.shape == prob.shape == (1,)


def test_eq9_mixes_block_outputs_and_matches_the_hard_gated_block():
    block = create_backbone("resnet20_cifar").layer1[0].eval()

    class Fixed(nn.Module):
        def __init__(self, v):
            super().__init__()
            self.v = v

        def forward(self, x):
            v = torch.full((x.shape[0],), self.v)
            return v, v

    x = torch.relu(torch.randn(2, 16, 8, 8))
    with torch.no_grad():
        full = block(x)
        soft = GatedBlock(block, Fixed(0.3), mix="output")(x)
        torch.testing.assert_close(soft, 0.3 * full + 0.7 * x)  # Eq. (9)
        for v in (0.0, 1.0):
            torch.testing.assert_close(GatedBlock(block, Fixed(v), mix="output")(x), GatedBlock(block, Fixed(v))(x))


def test_colour_histogram_counts_joint_colour_cells():
    image = torch.zeros(1, 3, 2, 2)
    image[0, :, 0, 0] = torch.tensor([0.9, 0.1, 0.1])   # cell (3, 0, 0)
    image[0, :, 0, 1] = torch.tensor([0.9, 0.1, 0.1])
    image[0, :, 1, 0] = torch.tensor([1.0, 1.0, 1.0])   # cell (3, 3, 3)
    hist = colour_histogram(image, bins=4)               # pixel (1,1) black: cell (0, 0, 0)
    assert hist.shape == (1, 64)
    expected = torch.zeros(64)
    expected[3 * 16], expected[63], expected[0] = 0.5, 0.25, 0.25
    torch.testing.assert_close(hist[0], expected)


def rank_loss_loop(paths, distances, margin, tie_tol):
    """Eq. (12) written out: anchors i, adjacent pairs of the anchor's sorted neighbours."""
    total, count = 0.0, 0
    batch = len(paths)
    for i in range(batch):
        others = sorted((j for j in range(batch) if j != i), key=lambda j: (float(distances[i, j]), j))
        for pos, neg in zip(others[:-1], others[1:]):
            if float(distances[i, neg] - distances[i, pos]) <= tie_tol * float(distances[i, neg]):
                continue  # "about the same" distance: ignored (Sec. 4.1)
            d_pos = float(torch.linalg.norm(paths[i] - paths[pos]))
            d_neg = float(torch.linalg.norm(paths[i] - paths[neg]))
            total += max(0.0, d_pos - d_neg + margin)
            count += 1
    return total, count


def test_rank_loss_equals_a_loop_over_eq12():
    torch.manual_seed(0)
    paths = torch.rand(10, 7)
    features = torch.rand(10, 5)
    features[7] = features[2]  # a tie: two samples at the same distance from every anchor
    distances = sample_distances(features)
    total, count = rank_loss_loop(paths, distances, 0.5, 1e-3)
    assert count < 10 * 8  # the ties were skipped
    torch.testing.assert_close(rank_loss(paths, distances, 0.5, 1e-3, reduction="sum"),
                               torch.tensor(total), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rank_loss(paths, distances, 0.5, 1e-3), torch.tensor(total / count),
                               rtol=1e-5, atol=1e-5)


def test_rank_loss_pulls_close_samples_paths_together():
    distances = torch.tensor([[0.0, 1.0, 2.0], [1.0, 0.0, 1.5], [2.0, 1.5, 0.0]])
    paths = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.2, 0.2]], requires_grad=True)
    rank_loss(paths, distances, 0.5).backward()
    # anchor 0: positive 1 (far path) should move toward 0, negative 2 (near path) away
    assert paths.grad[1].sum() > 0 and paths.grad[2].sum() < 0


def test_cost_loss_is_eq15_in_both_readings():
    v = torch.tensor([[1.0, 0.0, 0.5], [0.0, 0.0, 0.5]])  # batch means 0.5, 0.0, 0.5
    assert float(cost_loss(v, 0.6)) == pytest.approx(0.1 ** 2 + 0.6 ** 2 + 0.1 ** 2)            # 0.38
    assert float(cost_loss(v, 0.6, "batch")) == float(cost_loss(v, 0.6))
    image0, image1 = 0.4 ** 2 + 0.6 ** 2 + 0.1 ** 2, 0.6 ** 2 + 0.6 ** 2 + 0.1 ** 2          # 0.53, 0.73
    assert float(cost_loss(v, 0.6, "image")) == pytest.approx((image0 + image1) / 2)            # 0.63
    # the readings differ only by the spread of v across images: equal on identical rows
    same = torch.tensor([[0.2, 0.9, 0.5]] * 4)
    assert float(cost_loss(same, 0.6, "image")) == pytest.approx(float(cost_loss(same, 0.6, "batch")))
    with pytest.raises(ValueError, match="'mean'.*batch, image"):
        cost_loss(v, 0.6, "mean")


@pytest.mark.parametrize("reading", ["batch", "image"])
def test_training_step_uses_the_chosen_cost_reading(reading):
    torch.manual_seed(0)
    model = create_model("rdinet32", d=16).train()
    method = RDIMethod(target=0.6, alpha=0.0, dataset="cifar10", cost=reading)
    out = method.training_step(model, torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)), nn.CrossEntropyLoss())
    v = decisions(model).detach()
    by_hand = ((v.mean(0) - 0.6) ** 2).sum() if reading == "batch" else ((v - 0.6) ** 2).sum(1).mean()
    assert float(out.logs["cost"]) == pytest.approx(float(by_hand), rel=1e-5)
    assert float(out.loss.detach()) == pytest.approx(float(out.logs["ce"]) + float(by_hand), rel=1e-5)
    with pytest.raises(ValueError, match="'sum'.*batch, image"):
        RDIMethod(target=0.6, dataset="cifar10", cost="sum")


def test_histogram_normalisation_comes_from_the_dataset():
    from common.data import DataError, dataset_info, normalize

    for name in ("cifar10", "cifar10-sample", "cifar100", "fashion_mnist"):
        method = RDIMethod(target=0.6, dataset=name)
        info = dataset_info(name)
        assert (method.mean, method.std) == (info.mean, info.std)
    # pixels() undoes exactly the normalisation the data pipeline applied
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    pixels = RDIMethod(target=0.6, dataset="cifar10").pixels(normalize(images, "cifar10"))
    torch.testing.assert_close(pixels, images.float() / 255, rtol=0, atol=1e-6)
    explicit = RDIMethod(target=0.6, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    assert explicit.mean == (0.5, 0.5, 0.5) and explicit.std == (0.25, 0.25, 0.25)
    with pytest.raises(ValueError, match="dataset=<name> or mean and std"):
        RDIMethod(target=0.6)                                   # no silent (0,)/(1,) default
    with pytest.raises(ValueError, match="dataset=<name> or mean and std"):
        RDIMethod(target=0.6, mean=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="not both"):
        RDIMethod(target=0.6, dataset="cifar10", mean=(0.5,), std=(0.5,))
    with pytest.raises(DataError, match="cifar10"):
        RDIMethod(target=0.6, dataset="cifar11")


def test_uniform_sampling_draws_execute_and_skip_with_equal_probability():
    torch.manual_seed(0)
    draws = torch.stack([uniform_path(torch.zeros(20000, 1)) for _ in range(8)], dim=1).float()  # [N, 8]
    assert set(draws.unique().tolist()) == {0.0, 1.0}
    sigma = (0.25 / len(draws)) ** 0.5
    assert ((draws.mean(0) - 0.5).abs() < 4 * sigma).all()
    # independent across blocks and images: P(both executed) = ¼ for a pair of blocks
    assert abs(float((draws[:, 0] * draws[:, 1]).mean()) - 0.25) < 4 * (0.1875 / len(draws)) ** 0.5
    assert abs(float((draws[1:, 0] * draws[:-1, 0]).mean()) - 0.25) < 4 * (0.1875 / len(draws)) ** 0.5


def test_usw_replaces_router_decisions_and_trains_only_the_backbone():
    torch.manual_seed(0)
    model = create_model("rdinet32", d=16).train()
    method = RDIMethod(target=0.6, alpha=0.2, warmup_epochs=1, dataset="cifar10")
    method.on_epoch_start(model, 0)
    out = method.training_step(model, torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,)), nn.CrossEntropyLoss())
    taken = decisions(model)
    assert set(taken.unique().tolist()) == {0.0, 1.0}
    assert abs(float(taken.mean()) - 0.5) < 0.05  # 64 × 15 draws
    out.loss.backward()
    assert all(p.grad is None for r in model.routers() for p in r.parameters())
    assert model.net.layer2[1].block.conv1.weight.grad.abs().sum() > 0
    method.on_epoch_start(model, 1)  # warm-up over: the routers decide again
    model(torch.randn(2, 3, 32, 32))
    assert not set(decisions(model).unique().tolist()) <= {0.0, 1.0}


def test_gradients_reach_routers_and_backbone_through_the_gumbel_relaxation():
    torch.manual_seed(0)
    model = create_model("rdinet32", d=16).train()
    method = RDIMethod(target=0.3, alpha=0.2, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    images = torch.randn(8, 3, 32, 32)
    out = method.training_step(model, images, torch.randint(0, 10, (8,)), nn.CrossEntropyLoss())
    assert {"ce", "cost", "rank"} <= set(out.logs)
    out.loss.backward()
    routers = model.routers()
    for router in (routers[0], routers[7], routers[-1]):
        for param in (router.align.weight, router.gcn.weight, router.decide.weight):
            assert param.grad is not None and param.grad.abs().sum() > 0
    assert model.net.conv1.weight.grad.abs().sum() > 0
    assert model.net.layer3[4].block.conv2.weight.grad.abs().sum() > 0


def test_router_parameter_counts_of_rdinet110_match_formula_and_readme():
    model = create_model("rdinet110")
    routers = model.routers()
    channels = [r.align.in_features for r in routers]
    assert len(routers) == 54 and sum(channels) == 1968
    router_params = sum(count_params(r) for r in routers)
    formula = router_param_formula(channels, 256)
    assert router_params == formula == 4_084_332
    backbone = count_params(create_backbone("resnet110_cifar"))
    assert count_params(model) == pytest.approx(backbone + formula, rel=0.01)
    text = README.read_text()
    assert "4,084,332" in text and f"{count_params(model):,}" in text


def test_expected_macs_match_a_skipped_execution_at_batch_one():
    torch.manual_seed(0)
    model = create_model("rdinet32", d=32).eval()
    set_mode(model, "skip")
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        model(x)
    taken = decisions(model)
    expected = expected_macs_of(model, (3, 32, 32), taken)
    with torch.no_grad():
        counted = count_macs(model, x[:1])
        assert torch.equal(decisions(model)[0], taken[0])
    assert counted == expected.per_image[0]
    assert expected.overhead > 0  # the routers are counted


def test_paper_gflops_are_twice_macs():
    full = model_macs(create_backbone("resnet110_cifar"), (3, 32, 32)) / 1e9
    assert full == pytest.approx(FULL_RESNET110_GMACS, abs=0.001)
    printed = [g for row in TABLE2.values() for g, _ in row.values()] + [g for g, _ in TABLE3.values()]
    assert max(printed) > full             # impossible as MACs of a sub-network of ResNet-110
    assert max(printed) <= 2 * full        # fine as 2 × MACs
    assert PAPER_FLOPS_PER_MAC == 2


def test_cifar100_code_path_trains():
    torch.manual_seed(0)
    model = create_model("rdinet32", num_classes=100, d=16).train()
    method = RDIMethod(target=0.6, alpha=0.2, dataset="cifar100")
    out = method.training_step(model, torch.randn(4, 3, 32, 32), torch.randint(0, 100, (4,)), nn.CrossEntropyLoss())
    assert out.logits.shape == (4, 100)
    out.loss.backward()


def test_data_parallel_replicas_refuse_to_run():
    model = create_model("rdinet32", d=16).eval()
    replica = model._replicate_for_data_parallel()  # what nn.DataParallel runs on each GPU
    with pytest.raises(RuntimeError, match="DataParallel"):
        replica(torch.randn(1, 3, 32, 32))
    model(torch.randn(1, 3, 32, 32))  # the model itself runs


def test_models_by_name_and_hub_round_trip(tmp_path):
    assert list_models() == ["rdinet101", "rdinet110", "rdinet20", "rdinet32", "rdinet50"]
    with pytest.raises(ValueError, match="rdinet110"):
        create_model("rdinet56")
    model = create_model("rdinet32", d=16, r=3, gamma=0.25).eval()
    model.save_pretrained(tmp_path)
    loaded = create_model("rdinet32", pretrained=str(tmp_path))
    assert (loaded.r, loaded.gamma, loaded.d) == (3, 0.25, 16)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


@pytest.mark.parametrize("name,blocks", [("rdinet50", 16), ("rdinet101", 33)])
def test_imagenet_models_gate_every_bottleneck(name, blocks):
    model = create_model(name)
    assert isinstance(model, RDINet) and model.num_blocks == blocks
    channels = [r.align.in_features for r in model.routers()]
    assert sum(count_params(r) for r in model.routers()) == router_param_formula(channels, 256)


def test_every_table_and_figure_is_a_reproduce_target():
    from reproduce.cli import targets

    assert set(targets("rdinet")) == {"table2", "table3", "fig5", "fig7", "fig9", "imagenet"}
