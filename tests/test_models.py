"""reproduce models: every model of every paper, counted when a PATTERN selects it, with its pretrained tags."""
import json

import pytest

from reproduce.cli import main
from reproduce.models import all_models, select


def test_every_paper_model_and_baseline_is_listed():
    import adanet
    import adn
    import dygraph
    import rdinet
    from common.backbones import list_backbones

    keys = {entry.key for entry in all_models()}
    for paper, package in (("adanet", adanet), ("rdinet", rdinet), ("dygraph", dygraph), ("adn", adn)):
        assert {f"{paper}/{name}" for name in package.list_models()} <= keys
    assert {f"baselines/{name}" for name in list_backbones()} <= keys


def test_patterns_match_paper_slash_name_or_a_part_of_the_name():
    entries = all_models()
    assert {e.key for e in select(entries, "adanet/adanet2*")} == {"adanet/adanet20"}
    assert {e.paper for e in select(entries, "rdinet/*")} == {"rdinet"}
    assert "adn/resnet20_cifar_adn" in {e.key for e in select(entries, "_adn")}
    assert select(entries, "*_adn") == select(entries, "_adn")
    assert select(entries, "zzz") == []


def test_counts_the_selected_models_only(tmp_path, monkeypatch, capsys):
    import common.hub
    from adanet import create_model
    from common.metrics import count_params, model_macs

    monkeypatch.setattr(common.hub, "WEIGHTS_ROOT", tmp_path)  # no committed weights: the tags are tested below
    assert main(["models", "adanet/adanet20"]) == 0
    out = capsys.readouterr().out
    model = create_model("adanet20")
    row = next(line for line in out.splitlines() if "| adanet20 |" in line)
    assert row == (f"| adanet | adanet20 | Adanet | 3×32×32 | {count_params(model) / 1e6:.2f} | "
                   f"{model_macs(model, (3, 32, 32)) / 1e9:.3f} | — |")
    assert "adanet110" not in out


def test_lists_all_uncounted_without_pattern(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "| dygraph | randwire_ws | RandWireNet | 3×224×224 | — | — |" in out
    assert "| baselines | vit_b_32 |" in out and "Give a PATTERN" in out


def test_pattern_matching_nothing_is_one_line_error(capsys):
    assert main(["models", "resnet9000"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no model matches 'resnet9000'") and err.count("\n") == 1


def test_shows_the_tags_of_committed_weights(tmp_path, monkeypatch, capsys):
    import common.hub
    from adanet import create_model

    monkeypatch.setattr(common.hub, "WEIGHTS_ROOT", tmp_path)
    folder = tmp_path / "mini" / "adanet20-0123456789ab"
    create_model("adanet20").save_pretrained(folder)
    (folder / "run.json").write_text(json.dumps({"finished": True, "class": "adanet.model.Adanet", "content": {
        "model": {"factory": "adanet.model.create_model", "args": ["adanet20"], "kwargs": {}}}}))
    assert main(["models", "adanet/adanet*"]) == 0
    rows = {line.split(" | ")[1]: line for line in capsys.readouterr().out.splitlines() if line.startswith("| adanet")}
    assert rows["adanet20"].endswith("| mini |")
    assert rows["adanet110"].endswith("| — |") and rows["adanet50"].endswith("| — |")


@pytest.mark.parametrize("argv", [["models", "a", "b"], ["models", "--count"]])
def test_bad_arguments_are_one_line_errors(argv, capsys):
    assert main(argv) == 2
    assert capsys.readouterr().err.count("\n") == 1
