"""The shipped `mini` weights: Hub layout and cards, `reproduce eval` reproducing the committed numbers, the demo."""
from __future__ import annotations

import json
from pathlib import Path

import importlib

import pytest
import torch

from common.data import build_data
from common.dynamic import gated_blocks
from common.hub import HubBackbone, WeightsError
from common.metrics import accuracy
from common.reproduction import WEIGHTS_DIR
from common.train import evaluate
from reproduce.demo import demo_runs, run_demo, shipped_runs, table
from reproduce.evaluation import load_model, measure, trained_precision

REPO = Path(__file__).resolve().parent.parent
SHIPPED = shipped_runs(WEIGHTS_DIR / "mini")
EVALS = sorted((REPO / "results" / "eval").glob("eval-*.json"))


def test_some_weights_and_a_committed_evaluation_ship():
    assert SHIPPED, "weights/mini holds no finished run"
    assert EVALS, "results/eval holds no committed `reproduce eval` record"


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_run_is_in_hub_layout_with_a_card(folder):
    for name in ("config.json", "model.safetensors", "run.json", "metrics.jsonl", "README.md"):
        assert (folder / name).is_file(), name
    card = (folder / "README.md").read_text()
    assert "model-index" in card and "shared/" not in card
    assert json.loads((folder / "run.json").read_text())["finished"] is True


def _training_method(folder: Path):
    """The `Method` the run in `folder` trained with, and its hyperparameters (its evaluation step is the
    training-time one)."""
    method = json.loads((folder / "run.json").read_text())["content"]["method"]
    module, _, name = method["class"].rpartition(".")
    return getattr(importlib.import_module(module), name)(**method["hparams"])


def _near_ties(model, folder: Path, data, precision: str) -> int:
    """Test images whose two largest logits lie within one rounding step of `precision` of each other.

    Their order is all a CPU's kernels decide: oneDNN's bf16 convolutions give other logits under another
    instruction set (here ONEDNN_MAX_CPU_ISA=AVX2 against AVX-512) or cache blocking, and the 1,000-image
    sample holds 3 exact bf16 ties for the zero-γ ResNet-20. On the machine that committed a record the
    numbers are equal to the byte; on another one such images may flip, and nothing else may.
    """
    logits = evaluate(model, data, _training_method(folder), bf16=precision == "bf16")["logits"]
    top2 = logits.topk(2, dim=1).values
    step = torch.finfo(torch.bfloat16 if precision == "bf16" else torch.float32).eps * top2[:, 0].abs()
    return int((top2[:, 0] - top2[:, 1] <= step).sum())


@pytest.mark.parametrize("path", EVALS, ids=lambda p: p.stem)
def test_reproduce_eval_on_shipped_weights_gives_the_committed_accuracy_and_macs(path):
    record = json.loads(path.read_text())
    folder = REPO / record["weights"]
    model = load_model(record["model"], str(folder))
    data = build_data("cifar10-sample")
    precision = record["measurements"][0]["precision"]
    assert precision == trained_precision(folder)  # `--precision auto`, as committed
    measured = [m.summary() for m in measure(model, data, latency=False, progress=False, precision=precision)]
    assert [m["mode"] for m in measured] == [m["mode"] for m in record["measurements"]]
    for ours, committed in zip(measured, record["measurements"]):
        assert ours["macs_mean"] == committed["macs_mean"]  # every gate decision as committed
        if ours["top1"] != committed["top1"]:  # only images the CPU's rounding decides may differ
            flipped = round(abs(ours["top1"] - committed["top1"]) * len(data.test_loader.dataset) / 100)
            assert flipped <= _near_ties(model, folder, data, precision), (ours["top1"], committed["top1"])


def test_reproduce_eval_counts_top1_as_training_does_when_logits_tie():
    model = HubBackbone("resnet20_cifar", 10)
    torch.nn.init.zeros_(model.net.fc.weight)
    torch.nn.init.zeros_(model.net.fc.bias)  # every logit 0: which tied class is "the" prediction?
    data = build_data("cifar10-sample", test_limit=50)
    trained = evaluate(model, data)
    expected = accuracy(trained["logits"], trained["labels"], (1,))[1]
    by_argmax = 100 * float((trained["logits"].argmax(1) == trained["labels"]).float().mean())
    assert expected != by_argmax  # the two tie-breaks pick classes that these 50 images hold unequally
    assert measure(model, data, latency=False, progress=False)[0].top1 == expected


def test_reproduce_eval_of_a_shipped_gated_run_is_its_training_time_evaluation():
    folder = next(f for f in SHIPPED if gated_blocks(load_model("auto", str(f))))
    model = load_model("auto", str(folder))
    method = _training_method(folder)
    data = build_data("cifar10-sample")
    precision = trained_precision(folder)
    trained = evaluate(model, data, method, bf16=precision == "bf16")  # what `fit` runs after each epoch
    ours = measure(model, data, latency=False, progress=False, precision=precision)[0]
    assert precision == "bf16" and ours.top1 == accuracy(trained["logits"], trained["labels"], (1,))[1]


def test_reproduce_eval_reports_each_gated_blocks_executed_share_and_undecided_share():
    folder = next(f for f in SHIPPED if gated_blocks(load_model("auto", str(f))))
    model = load_model("auto", str(folder))
    data = build_data("cifar10-sample", test_limit=100)
    precision = trained_precision(folder)
    trained = evaluate(model, data, _training_method(folder), bf16=precision == "bf16")
    ours = measure(model, data, latency=False, progress=False, precision=precision)[0].summary()
    probs = trained["probs"]
    assert ours["block_rates"] == trained["decisions"].mean(0).tolist()
    assert ours["block_undecided"] == ((probs > 0.2) & (probs < 0.8)).float().mean(0).tolist()
    assert len(ours["block_rates"]) == len(gated_blocks(model)) and 0 < sum(ours["block_undecided"])


def test_reproduce_eval_samples_adanet_gates_from_their_probabilities_with_a_seed():
    folder = next(f for f in SHIPPED if json.loads((f / "run.json").read_text())["class"].startswith("adanet."))
    model = load_model("auto", str(folder))
    data = build_data("cifar10-sample")
    argmax, sampled = measure(model, data, latency=False, progress=False, sample_gates=3)
    again = measure(model, data, latency=False, progress=False, sample_gates=3)[1]
    other = measure(model, data, latency=False, progress=False, sample_gates=4)[1]
    trained = evaluate(model, data, _training_method(folder))
    assert sampled.mode == "skip, sampled gates (seed 3)" and argmax.mode == "skip"
    assert argmax.block_rates == trained["decisions"].mean(0).tolist()  # the argmax mode is left as it was
    assert sampled.summary() == again.summary() and sampled.block_rates != other.block_rates
    # The first gate sees the same input in both modes: sampled, it runs for about its mean P(execute) over
    # the 1,000 images (0.60; 4σ of a Bernoulli mean: 0.063), not for every image as its argmax does.
    first_prob = trained["probs"][:, 0].mean().item()
    assert argmax.block_rates[0] == 1.0 and abs(sampled.block_rates[0] - first_prob) < 0.07


def test_reproduce_eval_refuses_to_sample_a_model_without_sampled_gates():
    with pytest.raises(WeightsError, match="only Adanet models"):
        measure(HubBackbone("resnet20_cifar", 10), build_data("cifar10-sample", test_limit=8), latency=False,
                progress=False, sample_gates=0)


@pytest.mark.parametrize("model, message", [
    ("adanet/adanet99", "Unknown model 'adanet99'.*Valid for adanet: .*adanet20"),
    ("nopaper/resnet20", "Unknown paper 'nopaper'.*Valid: baselines, adanet"),
    ("adanet20", "neither PAPER/NAME nor an importable class.*did you mean adanet/adanet20\\?"),
    ("resnet21", "neither PAPER/NAME nor an importable class.*give PAPER/NAME .* or auto"),
    ("resnet20_cifar", "did you mean adn/resnet20_cifar or baselines/resnet20_cifar\\?"),
])
def test_reproduce_eval_names_the_valid_models_for_a_bad_model(model, message):
    with pytest.raises(WeightsError, match=message):
        load_model(model, str(SHIPPED[0]))


def test_reproduce_eval_says_which_model_weights_of_another_model_are():
    adanet = next(f for f in SHIPPED if f.name.startswith("adanet20-"))
    with pytest.raises(WeightsError, match="not an argument of RDINet.*run.json says these weights are "
                                           r"adanet\.model\.Adanet: give MODEL auto"):
        load_model("rdinet/rdinet20", str(adanet))


def test_reproduce_eval_reports_no_blocks_for_a_static_network():
    data = build_data("cifar10-sample", test_limit=8)
    summary = measure(HubBackbone("resnet20_cifar", 10), data, latency=False, progress=False)[0].summary()
    assert summary["block_rates"] == [] and summary["block_undecided"] == []


def test_demo_runs_are_the_comparisons_headline_models_or_with_all_every_shipped_run():
    comparison = json.loads((REPO / "results" / "compare-methods-mini.json").read_text())
    named = sorted(run["folder"] for run in comparison["runs"].values())
    assert sorted(folder.name for folder in demo_runs(WEIGHTS_DIR / "mini")) == named
    assert demo_runs(WEIGHTS_DIR / "mini", every=True) == SHIPPED


def test_demo_measures_the_static_resnet_first_and_every_demo_run():
    results = run_demo(WEIGHTS_DIR / "mini", rounds=1, repeats=1)
    rows = {row for row, _ in results}
    assert results[0][0] == "ResNet-20" and len(rows) == len(demo_runs(WEIGHTS_DIR / "mini"))
    markdown = table(results)
    assert markdown.count("\n") == len(results) + 2
    assert all(0 <= m.top1 <= 100 and m.latency_ms for _, m in results)
