"""reproduce CLI and common.reproduction: listing, clear errors, JSON + Markdown with provenance."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from common.reproduction import PRESETS, Cell, Context, Target, markdown_table, update_readme, write_results
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


def test_list_prints_a_rough_time_for_each_preset(capsys):
    assert cli.main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()

    def presets_of(paper, name):
        return lines[next(i for i, line in enumerate(lines) if line.startswith(f"{paper:10s} {name} ")) + 1]

    table1 = presets_of("adanet", "table1")  # trains on every preset
    assert [part.split(":")[0] for part in table1.strip().split(" · ")] == list(PRESETS)
    assert ("smoke: cifar10-sample, ≤ 3 min CPU · mini: cifar10, ≈40 min–2.5 h CPU per row · "
            "short: cifar10, GPU minutes per row · paper: cifar10, GPU hours per row") in table1
    assert presets_of("adanet", "table2").strip() == ("smoke: trains nothing, seconds–minutes · "
                                                      "short: imagenet, GPU hours per row · "
                                                      "paper: imagenet, GPU days per row")
    assert presets_of("adanet", "latency").strip() == "trains nothing on any preset: seconds–minutes"


@pytest.mark.parametrize("args,message", [
    (["nopaper", "table1"], "unknown paper 'nopaper'. Valid choices: baselines, adanet, rdinet, dygraph, adn, compare."),
    (["baselines", "table9"], "unknown target 'table9' for baselines. Valid choices: cifar10-resnet, imagenet-backbones."),
    (["baselines", "cifar10-resnet", "--preset", "long"], "unknown preset 'long'. Valid choices: smoke, mini, short, paper."),
    (["baselines", "cifar10-resnet", "--threads", "0"],
     "argument --threads: --threads '0' is not a whole number ≥ 1. See `python -m reproduce --help`."),
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


def test_provenance_names_the_commit_the_process_started_at_and_is_dirty_if_the_code_moved(monkeypatch):
    from common import reproduction

    states = iter([("a" * 40, False), ("b" * 40, False), ("a" * 40, False)])
    monkeypatch.setattr(reproduction, "code_state", lambda: next(states))
    monkeypatch.setattr(reproduction, "_code_at_start", None)
    ctx = Context(paper="fake", target="t1", preset="smoke", out_dir=Path("."))
    reproduction.remember_code_state()  # a campaign starts at commit a…
    moved = reproduction.provenance(ctx)  # … and writes a result after commit b landed
    assert moved["commit"] == "a" * 40 and moved["dirty"] is True
    assert reproduction.provenance(ctx)["dirty"] is False  # still at a: clean


def test_code_state_is_dirty_for_changed_code_but_not_for_results_weights_benchmark_files_or_prose(tmp_path, monkeypatch):
    import subprocess

    from common import reproduction

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    files = ["model.py", "README.md", "results/a.json", "weights/mini/run/model.safetensors", "benchmarks/speed.json"]
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("0")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "start")
    monkeypatch.setattr(reproduction, "REPO_ROOT", tmp_path)
    for name in files[1:]:  # what runs and benchmarks write, and prose
        (tmp_path / name).write_text("1")
    commit, dirty = reproduction.code_state()
    assert len(commit) == 40 and dirty is False
    (tmp_path / "model.py").write_text("1")
    assert reproduction.code_state() == (commit, True)


def test_run_writes_json_and_markdown_with_provenance(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(cli.PAPERS, "fake", "fake")
    monkeypatch.setattr(cli, "targets", lambda paper: {"t1": Target("fake", "t1", "A fake table", fake_target)})
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "33554432")
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    assert cli.main(["fake", "t1", "--out", str(tmp_path), "--seed", "7"]) == 0
    record = json.loads((tmp_path / "fake-t1-smoke.json").read_text())
    assert record["cells"][0] == {"row": "Net A", "column": "Params", "paper": 1.7, "ours": 1.728, "unit": "M",
                                  "comparable": True, "note": "", "timing": False}
    prov = record["provenance"]
    assert prov["command"] == f"python -m reproduce fake t1 --out {tmp_path} --seed 7"
    assert prov["seed"] == 7 and len(prov["commit"]) == 40 and isinstance(prov["dirty"], bool)
    assert {"torch", "torchvision", "accelerate", "python"} <= set(prov["versions"])
    assert prov["device"].startswith(("cpu", "cuda")) and prov["wall_time_s"] >= 0
    assert prov["malloc_env"] == {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": None}
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


def test_notes_shared_by_rows_print_once():
    cells = [Cell("A", "Top-1", None, 1.0, "%", note="curves only"), Cell("B", "Top-1", None, 2.0, "%", note="curves only"),
             Cell("A", "MACs", 3.0, 3.0, "M", note="counted"), Cell("B", "MACs", 4.0, 4.0, "M"),
             Cell("C", "MACs", 5.0, 5.0, "M", note="counted"), Cell("C", "Top-1", None, 3.0, "%", note="other")]
    notes = markdown_table(cells).split("Notes:\n", 1)[1].splitlines()
    assert notes == ["- A; B / Top-1: curves only", "- A; C / MACs: counted", "- C / Top-1: other"]
    two_rows = markdown_table(cells[:2]).split("Notes:\n", 1)[1].splitlines()
    assert two_rows == ["- every row / Top-1: curves only"]


def test_a_figure_stamp_wraps_to_the_figure_width(tmp_path):
    from PIL import Image

    from common.reproduction import stamp_figure, wrap_to_width

    assert wrap_to_width("aa bb cc", len, 5) == ["aa bb", "cc"] and wrap_to_width("abcdefg h", len, 5) == ["abcdefg", "h"]
    heights = {}
    for width in (600, 1400):
        Image.new("RGB", (width, 100), "white").save(tmp_path / f"{width}.png")
        stamp_figure(tmp_path / f"{width}.png", "mini")
        heights[width] = Image.open(tmp_path / f"{width}.png").height - 100
    assert heights[1400] == max(11, 1400 // 90) + 10  # one line on a wide figure
    assert heights[600] == 2 * (11 + 4) + 6  # the mini stamp needs two lines on a 600-pixel figure


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
                       ("upload", "me/fake-resnet-20", ["README.md", "config.json", "model.safetensors", "run.json"])]
    assert "| Net A | 1.728 (1.7) |" in (tmp_path / "hub" / "resnet-20" / "README.md").read_text()
    assert "pushed me/fake-resnet-20" in capsys.readouterr().out


def _trains_one_row(config):
    """A target that trains one small ResNet-20 row with `config` on 32 sample images."""
    def run(ctx):
        from common.data import build_data
        from common.hub import HubBackbone
        from common.runs import ModelSpec

        data = build_data("cifar10-sample", batch_size=32, train_limit=32, test_limit=32)
        ctx.train("ResNet-20", ModelSpec(HubBackbone, "resnet20_cifar", num_classes=10), data, config)
        return fake_target(ctx)
    return run


def test_help_lists_compile_and_tensorboard(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--compile, --no-compile" in out and "--tensorboard" in out and "run key" in out


def test_compile_and_tensorboard_flags_reach_every_trained_row(tmp_path, monkeypatch):
    import common.runs
    from common.train import FitResult, TrainConfig

    seen = []

    def fake_fit(model, data, config, out_dir, **kwargs):  # what fit is handed; no epoch trained
        seen.append(config)
        (Path(out_dir) / "metrics.jsonl").write_text("")
        return FitResult(model, [], {})

    monkeypatch.setattr(common.runs, "fit", fake_fit)
    monkeypatch.setattr(cli, "_tensorboard_installed", lambda: True)
    monkeypatch.setitem(cli.PAPERS, "fake", "fake")
    recipe = TrainConfig(epochs=1, batch_size=32, compile=True)
    monkeypatch.setattr(cli, "targets", lambda paper: {"t1": Target("fake", "t1", "A fake table",
                                                                    _trains_one_row(recipe))})

    def run(*flags):
        assert cli.main(["fake", "t1", "--out", str(tmp_path), *flags]) == 0
        return json.loads((tmp_path / "fake-t1-smoke.json").read_text())["runs"]["ResNet-20"]

    first = run("--tensorboard", "--no-compile")
    assert seen[-1].tensorboard is True and seen[-1].compile is False
    again = run("--no-compile")  # tensorboard is not in the key: the finished run is reused
    assert again["reused"] and again["key"] == first["key"] and len(seen) == 1
    recipes = run()  # no flag: the recipe's compile=True, another key
    assert len(seen) == 2 and seen[-1].compile is True and seen[-1].tensorboard is False
    assert recipes["key"] != first["key"] and not recipes["reused"]


def test_tensorboard_without_the_package_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "_tensorboard_installed", lambda: False)
    assert cli.main(["baselines", "cifar10-resnet", "--tensorboard", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --tensorboard needs the tensorboard package") and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


def test_tensorboard_run_writes_an_events_file_in_its_run_folder(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from common.train import TrainConfig

    monkeypatch.setitem(cli.PAPERS, "fake", "fake")
    monkeypatch.setattr(cli, "targets", lambda paper: {"t1": Target(
        "fake", "t1", "A fake table", _trains_one_row(TrainConfig(epochs=1, batch_size=32)))})
    assert cli.main(["fake", "t1", "--out", str(tmp_path), "--tensorboard"]) == 0
    folder = json.loads((tmp_path / "fake-t1-smoke.json").read_text())["runs"]["ResNet-20"]["folder"]
    assert list((tmp_path / "runs" / folder).rglob("events.out.tfevents.*"))


# ------------------------------------------------------------------ bad invocations: one line, no traceback

def _bad_invocations(tmp_path: Path) -> list[list[str]]:
    """At least 100 seeded invocations that must fail before any work."""
    import random

    rng = random.Random(0)
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    empty_results = tmp_path / "no-results"
    empty_results.mkdir()
    broken_results = tmp_path / "broken-results"
    broken_results.mkdir()
    (broken_results / "adanet-table1-smoke.json").write_text("{not json")
    out = ["--out", str(tmp_path / "out")]
    words = ["", "x", "table", "Table1", "adanet ", "--", "ü", "1e3", "../", "-1"]
    cases: list[list[str]] = []
    for _ in range(12):
        junk = "".join(rng.choice("abcxyz_-19") for _ in range(rng.randint(1, 12)))
        cases += [[junk, "table1", *out], ["adanet", junk, *out], ["adanet", "table1", "--preset", junk, *out],
                  ["rdinet", "table3", f"--{junk}", *out]]
    for seed in ["-1", "4294967296", "abc", "1.5", "", "0x10", "99999999999999999999"]:
        cases.append(["baselines", "cifar10-resnet", "--seed", seed, *out])
    for bad_out in [str(a_file), "", "   ", str(a_file / "below"), str(tmp_path / ("d" * 300) / "x")]:
        cases.append(["baselines", "cifar10-resnet", "--out", bad_out])
    for paper, target in [("baselines", "cifar10-resnet"), ("adanet", "fig8"), ("rdinet", "table3"),
                          ("dygraph", "fig-edges"), ("adn", "table3")]:
        cases += [
            [paper, target, "--data-dir", str(tmp_path), *out],                        # smoke reads no --data-dir
            [paper, target, "--preset", "short", "--data-dir", "/nonexistent", *out],
            [paper, target, "--preset", "short", "--data-dir", str(a_file), *out],
            [paper, target, "--preset", "short", "--data-dir", str(empty_results), *out],
            [paper, target, "--push-to-hub", "me/x", *out],                            # smoke weights
            [paper, target, "--preset", "short", "--push-to-hub", "bad id!", *out],
            [paper, target, "--preset", "short", "--push-to-hub", "no-namespace", *out],
            [paper, target, "--preset", "short", "--push-to-hub", "me/x", *out],        # no token
            [paper, target, "--private", *out],
            [paper, target, "--resume", "--restart", *out],
            [paper, target, "--compile=yes", *out],
        ]
    for paper, target in [("baselines", "imagenet-backbones"), ("adanet", "latency"), ("dygraph", "table3"),
                          ("adn", "table4")]:
        cases += [[paper, target, "--preset", "short", "--data-dir", str(tmp_path), *out],
                  [paper, target, "--preset", "short", "--push-to-hub", "me/x", *out]]
    cases += [["list", "adanet"], ["list", "--all"], ["readme"], ["readme", "nopaper"], ["readme", "compare"],
              ["readme", "adanet", "--results", str(empty_results)],
              ["readme", "adanet", "--results", str(broken_results)], ["readme", "adanet", "extra"],
              ["adanet"], ["adanet", "table1", "extra", *out]]
    cases += [[rng.choice(words), rng.choice(words), rng.choice(["--seed", "--preset", "--out"])] for _ in range(6)]
    return cases


def test_fuzzed_bad_invocations_fail_fast_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no stored token either
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    status_before = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout
    cases = _bad_invocations(tmp_path)
    assert len(cases) >= 100
    for argv in cases:
        status = cli.main(argv)
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert status != 0, argv
        assert len(lines) == 1 and lines[0].startswith("error: "), (argv, captured.err)
        assert "Traceback" not in captured.err
    assert not (tmp_path / "out" / "runs").exists(), "a bad invocation started training"
    status_after = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout
    assert status_after == status_before, "a bad invocation changed the repository"


def test_sigterm_during_training_prints_one_line_and_exits_non_zero(tmp_path):
    import os
    import signal
    import time

    process = subprocess.Popen([sys.executable, "-m", "reproduce", "baselines", "cifar10-resnet", "--out",
                                str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while len(list(tmp_path.glob("runs/*/run.json"))) < 2 and time.time() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    # it names the run that was training (the second), not the last one that wrote a checkpoint (the first)
    match = re.fullmatch(r"error: interrupted (?:after epoch \d+ of|before the first epoch of) (\S+?)"
                         r"(?: finished)?; finished runs are kept: rerun with --resume to continue\.", last)
    assert match, last
    assert not json.loads((Path(match.group(1)) / "run.json").read_text())["finished"]
    assert "rerun with --resume" in err


def test_full_disk_says_so_and_leaves_no_partial_file(tmp_path, monkeypatch):
    import torch

    from common.train import OutputError, atomic_save

    def full(obj, path):
        Path(path).write_bytes(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0: file write failed")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OutputError, match=f"no space left on {tmp_path}"):
        atomic_save({"x": 1}, tmp_path / "checkpoint.pt")
    assert list(tmp_path.iterdir()) == []


def test_results_name_no_local_data_folder():
    from common.reproduction import REPO_ROOT, public_command, public_source

    assert public_command("python -m reproduce", ["adanet", "table1", "--data-dir", "/home/me/c10", "--preset",
                                                  "mini"]) == "python -m reproduce adanet table1 --data-dir DATA_DIR --preset mini"
    assert public_command("python -m reproduce eval", ["x", "--data-dir=../d"]) == "python -m reproduce eval x --data-dir=DATA_DIR"
    assert public_source(str(REPO_ROOT / "common" / "sample" / "cifar10")) == "common/sample/cifar10"
    assert public_source("../elsewhere/cifar10") == "DATA_DIR" and public_source("uoft-cs/cifar10") == "uoft-cs/cifar10"


def test_committed_results_show_no_local_data_folder():
    import shlex

    from common.reproduction import REPO_ROOT, public_command

    for path in sorted((REPO_ROOT / "results").rglob("*.json")):
        record = json.loads(path.read_text())
        command = record.get("provenance", {}).get("command", "") if isinstance(record, dict) else ""
        argv = shlex.split(command)  # a command as results show it: public_command leaves it as it is
        assert public_command("", argv) == shlex.join(argv), f"{path.name}: {command}"


def test_an_imagenet_target_refuses_the_mini_preset_in_one_line(capsys):
    assert cli.main(["adanet", "table2", "--preset", "mini"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no mini preset" in err and "--preset smoke or short or paper" in err


def test_compare_latency_is_an_alias_and_records_ratio_beside_macs_fraction(monkeypatch, tmp_path):
    from reproduce import compare

    row = next(r for r in compare.ROWS if "ResNet-20" in r.label)
    monkeypatch.setattr(compare, "ROWS", [row])
    assert cli.main(["compare-latency", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "compare-latency-smoke.json").read_text())
    cells = {(c["row"], c["column"]): c for c in record["cells"]}
    label = f"{row.label} vs {row.baseline}"
    for batch in (1, 64):
        ratio, macs = cells[(label, f"cpu batch {batch} ratio")], cells[(label, f"cpu batch {batch} MACs fraction")]
        assert ratio["unit"] == macs["unit"] == "× static"
        static_ms = cells[(label, f"cpu batch {batch} static ms")]["ours"]
        assert ratio["ours"] == pytest.approx(cells[(label, f"cpu batch {batch} ms")]["ours"] / static_ms)
        assert ratio["timing"] and ratio["ours"] > 0 and "CPU threads" in ratio["note"]
        assert 1.0 < macs["ours"] < 1.05 and not macs["timing"]   # all edges open: backbone + aggregation + routers


def test_compare_figure_draws_every_row_in_both_panels(tmp_path, monkeypatch):
    from reproduce import comparison

    drawn = []
    import matplotlib.axes
    real_scatter = matplotlib.axes.Axes.scatter
    monkeypatch.setattr(matplotlib.axes.Axes, "scatter",
                        lambda ax, x, y, **kw: drawn.append((x[0], y[0])) or real_scatter(ax, x, y, **kw))
    points = {"ResNet-20": {"top1": 88.5, "macs": 40.5, "latency": 1.0},
              "Adanet 20": {"top1": 84.9, "macs": 24.4, "latency": 0.85}}
    comparison._plot(points, tmp_path / "figure.png")
    assert (tmp_path / "figure.png").stat().st_size > 0
    assert sorted(drawn) == [(0.85, 84.9), (1.0, 88.5), (24.4, 84.9), (40.5, 88.5)]


def test_data_dir_on_smoke_names_the_presets_that_read_it(tmp_path, capsys):
    out = ["--out", str(tmp_path / "out")]
    assert cli.main(["adanet", "table1", "--data-dir", str(tmp_path), *out]) != 0
    assert capsys.readouterr().err.strip().endswith("drop it, or choose --preset mini or short or paper.")
    assert cli.main(["rdinet", "imagenet", "--data-dir", str(tmp_path), *out]) != 0
    assert capsys.readouterr().err.strip().endswith("drop it, or choose --preset paper.")
