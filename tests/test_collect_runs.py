"""scripts/collect_runs.py: which finished runs ship, and which results file writes each model card."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.data import build_data
from common.hub import HubBackbone
from common.runs import ModelSpec, train
from common.train import Method, TrainConfig



@pytest.fixture
def collect(load_script):
    """The script's module with its repository root at tmp_path."""
    return load_script("collect_runs")


def _results(root: Path, stem: str, row: str, folder: str, command: str) -> None:
    record = {"paper": stem.split("-")[0], "target": stem, "title": f"title of {stem}", "preset": "mini",
              "cells": [{"row": row, "column": "Top-1", "paper": None, "ours": 80.0, "unit": "%",
                         "comparable": True, "note": ""}],
              "runs": {row: {"key": "k", "folder": folder, "reused": False}},
              "provenance": {"command": command, "commit": "abc", "dirty": False, "device": "cpu", "seed": 0,
                             "data": {}}}
    (root / "results" / f"{stem}.json").write_text(json.dumps(record))


def test_cards_come_from_the_paper_target_and_replace_a_comparison_card(tmp_path, collect):
    data = build_data("cifar10-sample", batch_size=32, train_limit=32, test_limit=32)
    run = train("ResNet-20", ModelSpec(HubBackbone, "resnet20_cifar", num_classes=10), data,
                TrainConfig(epochs=1, batch_size=32, milestones=()), Method(), tmp_path / "results" / "runs",
                progress=False, requested_by={"row": "ResNet-20", "target": "compare-methods-mini"})
    unfinished = tmp_path / "results" / "runs" / "resnet20_cifar-unfinished"
    unfinished.mkdir()
    (unfinished / "run.json").write_text(json.dumps({"finished": False, "requested_by": {"target": "x-mini"}}))
    folder = run.directory.name
    _results(tmp_path, "compare-methods-mini", "ResNet-20", folder, "python -m reproduce compare methods --preset mini")
    assert collect.main("mini") == 0
    card = tmp_path / "weights" / "mini" / folder / "README.md"
    assert "python -m reproduce compare methods" in card.read_text()  # only the comparison names the run
    assert sorted(p.name for p in (tmp_path / "weights" / "mini").iterdir()) == [folder]  # unfinished: not shipped

    _results(tmp_path, "baselines-cifar10-resnet-mini", "ResNet-20", folder,
             "python -m reproduce baselines cifar10-resnet --preset mini")
    assert collect.main("mini") == 0
    text = card.read_text()
    assert "python -m reproduce baselines cifar10-resnet" in text and "compare methods" not in text

    _results(tmp_path, "compare-methods-mini", "ResNet-20", folder, "python -m reproduce compare methods --preset mini")
    assert collect.main("mini") == 0
    assert card.read_text() == text  # a paper target's card stays
