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


def run_offline(script: str, cache: Path) -> str:
    """Run `python -c script` in a fresh process with the Hub offline over `cache`; its stdout."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def fill_hub_cache(cache: Path, repo_id: str, folder: Path) -> None:
    """Put a saved model folder into a Hub cache layout, as a download would (for HF_HUB_OFFLINE=1)."""
    snapshot = cache / f"models--{repo_id.replace('/', '--')}"
    revision = "0" * 40
    (snapshot / "snapshots" / revision).mkdir(parents=True)
    (snapshot / "refs").mkdir()
    (snapshot / "refs" / "main").write_text(revision)
    for name in ("model.safetensors", "config.json"):
        (snapshot / "snapshots" / revision / name).write_bytes((folder / name).read_bytes())


def test_round_trip_through_offline_hub_cache(tmp_path):
    model, directory = saved_model(tmp_path)
    fill_hub_cache(tmp_path / "hub", "dynnets/resnet20-cifar10", directory)
    torch.save(model(torch.ones(1, 3, 32, 32)), tmp_path / "expected.pt")
    script = (
        "import torch; from common.hub import HubBackbone;"
        "m = HubBackbone.from_pretrained('dynnets/resnet20-cifar10');"
        f"torch.testing.assert_close(m(torch.ones(1, 3, 32, 32)), torch.load(r'{tmp_path / 'expected.pt'}'));"
        "print('loaded', type(m).__name__)")
    assert "loaded HubBackbone" in run_offline(script, tmp_path / "hub")


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
                          "comparable": True, "note": ""},
                         {"row": "ResNet-20", "column": "CPU batch 1", "paper": None, "ours": 3.25, "unit": "ms",
                          "comparable": True, "note": "", "timing": True}],
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
    assert result["metrics"][0]["value"] == 91.1  # the results JSON's row: 100 − its 8.9 % error
    assert "| ResNet-20 | 8.9 (8.75) |" in card and "ResNet-32" not in card  # this row's cells only
    assert "python -m reproduce baselines cifar10-resnet --preset short" in card and run.key in card
    assert "@article{he2016}" in card and "license: mit" in card
    threads = json.loads((run.directory / "run.json").read_text())["cpu_threads"]
    assert threads and f"`--threads {threads}`" in card  # a CPU run reproduces bit for bit only at its count
    assert "from common.hub import HubBackbone as Model" in card
    assert "CPU batch 1" not in card and "3.25" not in card  # timings describe the machine, not the weights
    assert "python -m reproduce eval common.hub.HubBackbone --weights dynnets/resnet20" in card
    assert "/home/me" not in card and str(tmp_path) not in card  # no local paths
    assert (tmp_path / "card" / "model.safetensors").exists()
    staged = json.loads((tmp_path / "card" / "run.json").read_text())  # eval reads the recipe's precision there
    assert staged["content"]["recipe"] == json.loads((run.directory / "run.json").read_text())["content"]["recipe"]
    # a run whose rows are its variants (ADN's sub-networks): those rows, not the table's other models
    results["cells"] = [{**results["cells"][0], "row": "ResNet-20 (FF), CIFAR-10"},
                        {**results["cells"][0], "row": "ResNet-20 (TT), CIFAR-10"},
                        {**results["cells"][1], "row": "ResNet-200 (FF)"}]
    upload_run(run.directory, tmp_path / "card3", results, "ResNet-20", "dynnets/resnet20", push=False)
    card = (tmp_path / "card3" / "README.md").read_text()
    assert "ResNet-20 (FF), CIFAR-10" in card and "ResNet-20 (TT), CIFAR-10" in card and "ResNet-200" not in card
    # a row with no accuracy cell: the run's own last test evaluation
    results["cells"] = [{**c, "column": "Params", "unit": "M"} for c in results["cells"]]
    upload_run(run.directory, tmp_path / "card2", results, "ResNet-20", "dynnets/resnet20", push=False)
    parsed = ModelCard((tmp_path / "card2" / "README.md").read_text()).data.to_dict()
    assert parsed["model-index"][0]["results"][0]["metrics"][0]["value"] == round(run.history[-1]["test_top1"], 2)
    # a CPU run from before run.json recorded its thread count: the card says the count matters, names none
    record = json.loads((run.directory / "run.json").read_text())
    del record["cpu_threads"]
    (run.directory / "run.json").write_text(json.dumps(record))
    results["provenance"]["device"] = "cpu: x86_64, 2 cores"
    upload_run(run.directory, tmp_path / "card4", results, "ResNet-20", "dynnets/resnet20", push=False)
    card = (tmp_path / "card4" / "README.md").read_text()
    assert "predates the record of its CPU thread count" in card and "Trained on the CPU with" not in card


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


# ------------------------------------------------------------------ create_model(name, pretrained=…) of every paper

def _commit_mini(root, folder_name, model, factory="adanet.model.create_model", args=("adanet20",), finished=True):
    """A committed run folder as scripts/collect_runs.py writes it: weights + run.json."""
    folder = root / "mini" / folder_name
    model.save_pretrained(folder)
    kind = type(model)
    (folder / "run.json").write_text(json.dumps({
        "key": "0" * 64, "finished": finished, "class": f"{kind.__module__}.{kind.__qualname__}",
        "content": {"model": {"factory": factory, "args": list(args), "kwargs": {}}}}))
    return folder


@pytest.mark.parametrize("package,name", [("adanet", "adanet20"), ("rdinet", "rdinet20"),
                                          ("dygraph", "dygraph_resnet20_cifar"), ("adn", "resnet20_cifar_adn"),
                                          ("adanet", "resnet20")])
def test_every_paper_loads_a_folder_and_an_hf_hub_prefixed_path(tmp_path, package, name):
    import importlib

    create_model = importlib.import_module(package).create_model
    torch.manual_seed(0)
    model = create_model(name, num_classes=10).eval()
    model.save_pretrained(tmp_path / "w")
    x = torch.randn(2, 3, 32, 32)
    for source in (str(tmp_path / "w"), tmp_path / "w", f"hf-hub:{tmp_path / 'w'}"):
        loaded = create_model(name, pretrained=source)
        assert not loaded.training
        torch.testing.assert_close(loaded(x), model(x))


def test_hf_hub_id_loads_from_the_offline_cache(tmp_path):
    import adanet

    torch.manual_seed(0)
    model = adanet.create_model("adanet20", num_classes=10).eval()
    model.save_pretrained(tmp_path / "w")
    fill_hub_cache(tmp_path / "hub", "dynnets/adanet20-mini", tmp_path / "w")
    torch.save(model(torch.ones(1, 3, 32, 32)), tmp_path / "expected.pt")
    script = ("import torch, adanet; m = adanet.create_model('adanet20', pretrained='hf-hub:dynnets/adanet20-mini');"
              f"torch.testing.assert_close(m(torch.ones(1, 3, 32, 32)), torch.load(r'{tmp_path / 'expected.pt'}'));"
              "print('loaded', type(m).__name__)")
    assert "loaded Adanet" in run_offline(script, tmp_path / "hub")


def test_pretrained_true_and_tags_load_the_committed_weights(tmp_path, monkeypatch, capsys):
    import adanet
    import common.hub

    monkeypatch.setattr(common.hub, "WEIGHTS_ROOT", tmp_path / "weights")
    torch.manual_seed(1)
    mini = adanet.create_model("adanet20", num_classes=10).eval()
    _commit_mini(tmp_path / "weights", "adanet20-aaaaaaaaaaaa", mini)
    _commit_mini(tmp_path / "weights", "adanet20-bbbbbbbbbbbb", adanet.create_model("adanet20"), finished=False)
    _commit_mini(tmp_path / "weights", "adanet110-cccccccccccc", adanet.create_model("adanet110"), args=("adanet110",))
    x = torch.randn(2, 3, 32, 32)
    for pretrained in (True, "mini"):
        torch.testing.assert_close(adanet.create_model("adanet20", pretrained=pretrained)(x), mini(x))
    assert "adanet20: mini weights from weights/mini/adanet20-aaaaaaaaaaaa" in capsys.readouterr().out
    assert common.hub.pretrained_tags(*adanet.model.model_spec("adanet20"), "adanet20") == ["mini"]
    assert common.hub.pretrained_tags(*adanet.model.model_spec("wide_adanet89"), "wide_adanet89") == []
    with pytest.raises(ValueError, match=r"^No 'paper' weights for 'adanet20'; tags with weights: mini \(valid tags: "
                                         r"mini, short, paper\)"):
        adanet.create_model("adanet20", pretrained="paper")
    with pytest.raises(ValueError, match=r"^No pretrained weights for 'adanet50'; tags with weights: none yet"):
        adanet.create_model("adanet50", pretrained=True)
    with pytest.raises(ValueError, match=r"No 'mini' weights for 'adanet20'; tags with weights: none yet"):
        adanet.create_model("adanet20", pretrained="mini", reduction=4)  # committed weights are reduction 2


def test_another_num_classes_loads_all_but_a_fresh_head(tmp_path, capsys):
    import adanet

    torch.manual_seed(0)
    model = adanet.create_model("adanet20", num_classes=10)
    model.save_pretrained(tmp_path / "w")
    torch.manual_seed(5)
    loaded = adanet.create_model("adanet20", pretrained=str(tmp_path / "w"), num_classes=100)
    assert f"loaded {tmp_path / 'w'} except the classifier head net.fc (10 → 100 classes, freshly initialised)" \
        in capsys.readouterr().out
    assert loaded.net.fc.out_features == 100 and loaded._hub_mixin_config["num_classes"] == 100
    own, saved = loaded.state_dict(), model.state_dict()
    assert all(torch.equal(own[k], saved[k]) for k in saved if not k.startswith("net.fc."))
    torch.manual_seed(5)
    fresh = adanet.create_model("adanet20", num_classes=100)
    torch.testing.assert_close(loaded.net.fc.weight, fresh.net.fc.weight)  # the head of a fresh model
    assert loaded(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    same = adanet.create_model("adanet20", pretrained=str(tmp_path / "w"), num_classes=10)
    assert "classifier head" not in capsys.readouterr().out
    assert torch.equal(same.net.fc.weight, model.net.fc.weight)


def test_in_chans_builds_and_adapts_the_first_convolution(tmp_path):
    import adanet
    import adn

    assert adanet.create_model("adanet20", in_chans=1)(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    assert adn.create_model("resnet20_cifar", in_chans=4).net.conv1.in_channels == 4
    model = adanet.create_model("resnet20", num_classes=10)
    model.save_pretrained(tmp_path / "w")
    gray = adanet.create_model("resnet20", pretrained=str(tmp_path / "w"), in_chans=1)
    torch.testing.assert_close(gray.net.conv1.weight, model.net.conv1.weight.sum(dim=1, keepdim=True))


def test_pretrained_of_another_model_names_the_difference(tmp_path, monkeypatch):
    import huggingface_hub

    import adanet
    import dygraph

    adanet.create_model("adanet20").save_pretrained(tmp_path / "a")
    with pytest.raises(ValueError, match=r"^The weights in .* are not adanet110 with these arguments: "
                                         r"backbone='resnet20_cifar' \(asked 'resnet110_cifar'\)\.$"):
        adanet.create_model("adanet110", pretrained=str(tmp_path / "a"))
    dygraph.create_model("static_resnet20_cifar").save_pretrained(tmp_path / "d")
    with pytest.raises(ValueError, match=r"wiring='static' \(asked 'dynamic'\)"):
        dygraph.create_model("dygraph_resnet20_cifar", pretrained=str(tmp_path / "d"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no network here
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(WeightsError, match="neither a local weights folder nor reachable"):
        adanet.create_model("adanet20", pretrained="hf-hub:nobody/nothing-here-" + "x" * 8)


def test_reproduce_eval_names_weights_of_another_model_in_one_line(tmp_path, capsys):
    import adanet
    from reproduce.cli import main

    adanet.create_model("adanet20").save_pretrained(tmp_path / "a")
    assert main(["eval", "adanet/adanet110", "--weights", str(tmp_path / "a"), "--no-latency",
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: The weights in ") and "backbone='resnet20_cifar'" in err and err.count("\n") == 1


def _load_cifar10_from_the_hub():
    from common.data import load_tensors

    load_tensors("cifar10", "train")


def _weights_from_the_hub():
    from common.hub import weights_folder

    weights_folder("nobody/adanet20-mini")


@pytest.mark.parametrize("module, function, load, error", [
    ("datasets", "load_dataset", _load_cifar10_from_the_hub, "Could not load cifar10 from the Hub.*--data-dir"),
    ("huggingface_hub", "hf_hub_download", _weights_from_the_hub, "neither a local weights folder"),
])
def test_unreachable_hub_ends_in_one_error_without_the_retry_warnings(monkeypatch, caplog, tmp_path, module,
                                                                     function, load, error):
    import importlib
    import logging

    from common import data

    def unreachable(*args, **kwargs):
        logging.getLogger("huggingface_hub.utils._http").warning("'[Errno -2]' thrown while requesting HEAD")
        raise OSError("Name or service not known")

    monkeypatch.setattr(importlib.import_module(module), function, unreachable)
    monkeypatch.setattr(data, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.delenv("DYNNETS_DATA_DIR", raising=False)
    level = logging.getLogger("huggingface_hub").level
    with caplog.at_level(logging.DEBUG), pytest.raises((WeightsError, data.DataError), match=error):
        load()
    assert not [record for record in caplog.records if record.name.startswith("huggingface_hub")]
    assert logging.getLogger("huggingface_hub").level == level
