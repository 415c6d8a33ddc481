"""common.hub: save/load round trips (local dir, offline Hub cache), strict loading, model cards."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from common.hub import HubBackbone, WeightsError, upload_run

REPO = Path(__file__).resolve().parent.parent


def saved_model(tmp_path):
    torch.manual_seed(0)
    model = HubBackbone("resnet20_cifar", num_classes=10).eval()
    model.save_pretrained(tmp_path / "model")
    return model, tmp_path / "model"


def test_round_trip_through_local_directory(tmp_path):
    model, directory = saved_model(tmp_path)
    assert json.loads((directory / "config.json").read_text()) == {"name": "resnet20_cifar", "num_classes": 10, "in_chans": 3}
    loaded = HubBackbone.from_pretrained(directory)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model(x))


def test_round_trip_through_offline_hub_cache(tmp_path):
    model, directory = saved_model(tmp_path)
    snapshot = tmp_path / "hub" / "models--dynnets--resnet20-cifar10"
    revision = "0" * 40
    (snapshot / "snapshots" / revision).mkdir(parents=True)
    (snapshot / "refs").mkdir()
    (snapshot / "refs" / "main").write_text(revision)
    for name in ("model.safetensors", "config.json"):
        (snapshot / "snapshots" / revision / name).write_bytes((directory / name).read_bytes())
    torch.save(model(torch.ones(1, 3, 32, 32)), tmp_path / "expected.pt")
    script = (
        "import torch; from common.hub import HubBackbone;"
        "m = HubBackbone.from_pretrained('dynnets/resnet20-cifar10');"
        f"torch.testing.assert_close(m(torch.ones(1, 3, 32, 32)), torch.load(r'{tmp_path / 'expected.pt'}'));"
        "print('loaded', type(m).__name__)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "loaded HubBackbone" in out.stdout


@pytest.mark.parametrize("change,message", [("drop", "missing"), ("add", "unexpected"), ("reshape", "mis-shaped")])
def test_loading_wrong_keys_fails_clearly(tmp_path, change, message):
    _, directory = saved_model(tmp_path)
    state = load_file(directory / "model.safetensors")
    if change == "drop":
        state.pop("net.fc.bias")
    elif change == "add":
        state["net.extra.weight"] = torch.zeros(2)
    else:
        state["net.fc.bias"] = torch.zeros(3)
    save_file(state, directory / "model.safetensors")
    with pytest.raises(WeightsError, match=message):
        HubBackbone.from_pretrained(directory)


def test_truncated_weights_fail_clearly(tmp_path):
    _, directory = saved_model(tmp_path)
    path = directory / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(WeightsError, match="truncated"):
        HubBackbone.from_pretrained(directory)


def test_model_card_from_results_json_and_run(tmp_path):
    from common.data import build_data
    from common.runs import ModelSpec, train
    from common.train import Method, TrainConfig

    data = build_data("cifar10-sample", batch_size=32, train_limit=32, test_limit=32)
    run = train("ResNet-20", ModelSpec(HubBackbone, "resnet20_cifar", num_classes=10), data,
                TrainConfig(epochs=1, batch_size=32, milestones=()), Method(), tmp_path / "runs", progress=False)
    results = {"paper": "baselines", "target": "cifar10-resnet", "title": "CIFAR ResNets", "preset": "short",
               "cells": [{"row": "ResNet-20", "column": "Error", "paper": 8.75, "ours": 8.9, "unit": "%",
                          "comparable": True, "note": ""},
                         {"row": "ResNet-32", "column": "Error", "paper": 7.51, "ours": 7.9, "unit": "%",
                          "comparable": True, "note": ""}],
               "provenance": {"command": "python -m reproduce baselines cifar10-resnet --preset short",
                              "commit": "abc", "dirty": False, "device": "cuda: H100", "seed": 0,
                              "data": {"cifar10": "/home/me/secret/cifar10 (sha256 1234)"}}}
    upload_run(run.directory, tmp_path / "card", results, "ResNet-20", "dynnets/resnet20",
               bibtex="@article{he2016}", push=False)
    card = (tmp_path / "card" / "README.md").read_text()
    from huggingface_hub import ModelCard

    parsed = ModelCard(card).data.to_dict()
    result = parsed["model-index"][0]["results"][0]
    assert result["dataset"]["type"] == "uoft-cs/cifar10" and result["metrics"][0]["type"] == "accuracy"
    assert result["metrics"][0]["value"] == round(run.history[-1]["test_top1"], 2)
    assert "| ResNet-20 | 8.9 (8.75) |" in card and "ResNet-32" not in card  # this row's cells only
    assert "python -m reproduce baselines cifar10-resnet --preset short" in card and run.key in card
    assert "@article{he2016}" in card and "license: mit" in card
    assert "from common.hub import HubBackbone as Model" in card
    assert "/home/me" not in card and str(tmp_path) not in card  # no local paths
    assert (tmp_path / "card" / "model.safetensors").exists()


# ------------------------------------------------------------------ broken weights: one WeightsError each

def _saved(tmp_path):
    folder = tmp_path / "weights"
    HubBackbone("resnet20_cifar").save_pretrained(folder)
    return folder


@pytest.mark.parametrize("case,message", [
    ("missing", r"No weights folder .*nope: the path does not exist"),
    ("no-safetensors", r"has no model\.safetensors \(found: README\.md, config\.json, notes\.txt\)"),
    ("bad-json", r"config\.json is not valid JSON"),
    ("bad-field", r"config\.json: field 'depth' is not an argument of HubBackbone \(valid: in_chans, name, num_classes\)"),
    ("dtype", r"other dtypes than HubBackbone: net\.conv1\.weight \(torch\.float16 vs torch\.float32\)"),
    ("nan", r"NaN or infinite values in 1 tensor\(s\) \(e\.g\. net\.fc\.bias\)"),
])
def test_broken_weights_give_one_named_error(tmp_path, case, message):
    folder = _saved(tmp_path)
    if case == "missing":
        folder = tmp_path / "nope"
    elif case == "no-safetensors":
        (folder / "model.safetensors").unlink()
        (folder / "notes.txt").write_text("x")
    elif case == "bad-json":
        (folder / "config.json").write_text('{"name": ')
    elif case == "bad-field":
        (folder / "config.json").write_text(json.dumps({"name": "resnet20_cifar", "depth": 20}))
    else:
        state = load_file(folder / "model.safetensors")
        if case == "dtype":
            state["net.conv1.weight"] = state["net.conv1.weight"].half()
        else:
            state["net.fc.bias"][0] = float("nan")
        save_file(state, folder / "model.safetensors")
    with pytest.raises(WeightsError, match=message) as raised:
        HubBackbone.from_pretrained(str(folder))
    assert "\n" not in str(raised.value)


def test_unknown_model_names_list_the_valid_ones():
    import adanet
    import adn
    import dygraph
    import rdinet

    for package in (adanet, rdinet, dygraph, adn):
        with pytest.raises(ValueError, match=r"Unknown model 'resnet9000'\. Valid choices: "):
            package.create_model("resnet9000")


def test_rdinet_pretrained_honours_name_and_arguments(tmp_path):
    import rdinet

    rdinet.create_model("rdinet32", num_classes=10, r=1).save_pretrained(tmp_path / "r")
    assert rdinet.create_model("rdinet32", pretrained=str(tmp_path / "r"), num_classes=10, r=1) is not None
    with pytest.raises(ValueError, match=r"not rdinet110 with these arguments: backbone='resnet32_cifar'"):
        rdinet.create_model("rdinet110", pretrained=str(tmp_path / "r"))
    with pytest.raises(ValueError, match=r"r=1 \(asked 2\)"):
        rdinet.create_model("rdinet32", pretrained=str(tmp_path / "r"), r=2)
