"""The shipped `mini` weights: Hub layout and cards, `reproduce eval` reproducing the committed numbers, the demo."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.data import build_data
from common.reproduction import WEIGHTS_DIR
from reproduce.demo import run_demo, shipped_runs, table
from reproduce.evaluation import load_model, measure

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


@pytest.mark.parametrize("path", EVALS, ids=lambda p: p.stem)
def test_reproduce_eval_on_shipped_weights_gives_the_committed_accuracy_and_macs(path):
    record = json.loads(path.read_text())
    model = load_model(record["model"], str(REPO / record["weights"]))
    data = build_data("cifar10-sample", eval_batch_size=500)
    measured = [m.summary() for m in measure(model, data, latency=False, progress=False)]
    assert [m["mode"] for m in measured] == [m["mode"] for m in record["measurements"]]
    for ours, committed in zip(measured, record["measurements"]):
        assert ours["top1"] == committed["top1"]
        assert ours["macs_mean"] == committed["macs_mean"]


def test_demo_measures_the_static_resnet_first_and_every_shipped_run():
    results = run_demo(WEIGHTS_DIR / "mini", rounds=1, repeats=1)
    rows = {row for row, _ in results}
    assert results[0][0] == "ResNet-20" and len(rows) == len(SHIPPED)
    markdown = table(results)
    assert markdown.count("\n") == len(results) + 2
    assert all(0 <= m.top1 <= 100 and m.latency_ms for _, m in results)
