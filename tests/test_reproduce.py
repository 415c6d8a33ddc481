"""reproduce CLI and common.reproduction: listing, clear errors, JSON + Markdown with provenance."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from common.reproduction import Cell, Context, Target, markdown_table, update_readme, write_results
from reproduce import cli

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "reproduce", *args], cwd=REPO, capture_output=True, text=True)


def test_list_prints_every_target(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "baselines  cifar10-resnet" in out and "baselines  imagenet-backbones" in out
    for paper, found in cli.all_targets().items():
        for name in found:
            assert f"{paper:10s} {name}" in out


@pytest.mark.parametrize("args,message", [
    (["nopaper", "table1"], "unknown paper 'nopaper'. Valid choices: baselines, adanet, rdinet, dygraph, adn."),
    (["baselines", "table9"], "unknown target 'table9' for baselines. Valid choices: cifar10-resnet, imagenet-backbones."),
    (["baselines", "cifar10-resnet", "--preset", "long"], "unknown preset 'long'. Valid choices: smoke, short, paper."),
])
def test_wrong_names_give_one_line_without_traceback(args, message):
    out = run_cli(*args)
    assert out.returncode == 2
    assert out.stderr.strip() == f"error: {message}"
    assert "Traceback" not in out.stderr


def test_missing_offline_dataset_gives_instructions_without_traceback(tmp_path):
    out = run_cli("baselines", "cifar10-resnet", "--preset", "short", "--data-dir", str(tmp_path), "--out", str(tmp_path))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "No cifar10 data under" in out.stderr and "--data-dir" in out.stderr


def fake_target(ctx: Context) -> list[Cell]:
    ctx.extra["answer"] = 42
    return [Cell("Net A", "Params", 1.7, 1.728, "M"), Cell("Net A", "Error", 6.43, 80.0, "%", comparable=False),
            Cell("Net B", "Params", None, 0.27, "M", note="no paper number")]


def test_run_writes_json_and_markdown_with_provenance(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(cli.PAPERS, "fake", "fake")
    monkeypatch.setattr(cli, "targets", lambda paper: {"t1": Target("fake", "t1", "A fake table", fake_target)})
    assert cli.main(["fake", "t1", "--out", str(tmp_path), "--seed", "7"]) == 0
    record = json.loads((tmp_path / "fake-t1-smoke.json").read_text())
    assert record["cells"][0] == {"row": "Net A", "column": "Params", "paper": 1.7, "ours": 1.728, "unit": "M",
                                  "comparable": True, "note": "", "timing": False}
    prov = record["provenance"]
    assert prov["command"] == f"python -m reproduce fake t1 --out {tmp_path} --seed 7"
    assert prov["seed"] == 7 and len(prov["commit"]) == 40 and isinstance(prov["dirty"], bool)
    assert {"torch", "torchvision", "accelerate", "python"} <= set(prov["versions"])
    assert prov["device"].startswith(("cpu", "cuda")) and prov["wall_time_s"] >= 0
    assert record["extra"] == {"answer": 42} and record["runs"] == {}
    markdown = (tmp_path / "fake-t1-smoke.md").read_text()
    assert "| Net A | 1.728 (1.7) | 80† (6.43) |" in markdown
    assert "| Net B | 0.27 (—) |  |" in markdown
    assert "fake-t1-smoke.md" in capsys.readouterr().out


def test_update_readme_fills_marked_block(tmp_path):
    ctx = Context("fake", "t1", "smoke", tmp_path)
    json_path, _ = write_results(ctx, Target("fake", "t1", "A fake table", fake_target), fake_target(ctx))
    readme = tmp_path / "README.md"
    readme.write_text("# Fake\n<!-- results:start -->\nold\n<!-- results:end -->\ntail\n")
    update_readme(readme, [json_path])
    text = readme.read_text()
    assert "old" not in text and "| Net A | 1.728 (1.7) |" in text and text.endswith("tail\n")
    assert "python -m reproduce" not in markdown_table([])  # empty table renders without commands


def test_every_registered_target_is_well_formed():
    for paper, found in cli.all_targets().items():
        for name, target in found.items():
            assert target.paper == paper and target.name == name and callable(target.run), (paper, name)


def test_push_to_hub_saves_card_and_uploads_each_trained_row(tmp_path, monkeypatch, capsys):
    import huggingface_hub

    from common.hub import HubBackbone

    uploads = []

    class FakeApi:
        def whoami(self, token):
            return {"name": "me"}

        def create_repo(self, repo_id, exist_ok, private=False):
            uploads.append(("create", repo_id))

        def upload_folder(self, folder_path, repo_id):
            uploads.append(("upload", repo_id, sorted(p.name for p in Path(folder_path).iterdir())))

    def trains(ctx):
        from common.data import build_data
        from common.runs import ModelSpec
        from common.train import TrainConfig

        data = build_data("cifar10-sample", batch_size=32, train_limit=32, test_limit=32)
        ctx.train("ResNet-20", ModelSpec(HubBackbone, "resnet20_cifar", num_classes=10), data,
                  TrainConfig(epochs=1, batch_size=32))
        return fake_target(ctx)

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setenv("HF_TOKEN", "hf_fake")
    monkeypatch.setitem(cli.PAPERS, "fake", "fake")
    monkeypatch.setattr(cli, "targets", lambda paper: {"t1": Target("fake", "t1", "A fake table", trains,
                                                                    data={"short": "cifar10"})})
    assert cli.main(["fake", "t1", "--preset", "short", "--out", str(tmp_path), "--push-to-hub", "me/fake"]) == 0
    assert uploads == [("create", "me/fake-resnet-20"),
                       ("upload", "me/fake-resnet-20", ["README.md", "config.json", "model.safetensors"])]
    assert "| Net A | 1.728 (1.7) |" in (tmp_path / "hub" / "resnet-20" / "README.md").read_text()
    assert "pushed me/fake-resnet-20" in capsys.readouterr().out
