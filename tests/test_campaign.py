"""reproduce campaign: a budget stops before any run; a finished campaign trains nothing new on the next call; a busy
target waits its turn."""
import json

from reproduce import campaign, cli

TARGETS = ["--targets", "adanet/fig8"]


def test_campaign_continues_and_then_trains_nothing_new(tmp_path, capsys):
    out = ["--preset", "smoke", "--out", str(tmp_path)]
    assert cli.main(["campaign", *out, "--budget-minutes", "0", *TARGETS]) == 0
    assert "trained 0 run(s), reused 0, wrote 0 results file(s), skipped 0; 1 target(s) wait" in capsys.readouterr().out
    assert cli.main(["campaign", *out, *TARGETS]) == 0
    assert cli.main(["campaign", *out, *TARGETS]) == 0
    calls = json.loads((tmp_path / "campaigns" / "smoke.json").read_text())
    assert [p.name for p in tmp_path.glob("*-smoke.json")] == ["adanet-fig8-smoke.json"]  # the record is no results file
    assert [len(c["written"]) for c in calls] == [0, 1, 1]
    assert len(calls[1]["trained"]) == 1 and not calls[1]["pending"]  # fig8 trains Adanet 110
    assert calls[2]["trained"] == [] and len(calls[2]["reused"]) == 1  # the second full call trains nothing new
    assert (tmp_path / "adanet-fig8-smoke.json").exists()


def test_campaign_refuses_unknown_targets(capsys):
    assert cli.main(["campaign", "--targets", "adanet/table9"]) == 2
    assert "'adanet/table9' is not a campaign target" in capsys.readouterr().err


class FakeTarget:
    """A target whose one run is busy (another process trains it) for its first `busy_turns` turns that do not
    wait: the context then hands it a stand-in, as `Context.train` does."""

    title = "fake"

    def __init__(self, name: str, busy_turns: int, turns: list):
        self.name, self.busy_turns, self.turns = name, busy_turns, turns

    def run(self, ctx):
        self.turns.append((self.name, ctx.wait_busy))
        if self.busy_turns and not ctx.wait_busy:
            self.busy_turns -= 1
            ctx.stand_ins.append(f"row of {self.name}")
        return []


def test_a_busy_target_goes_to_the_back_and_is_waited_for_only_when_all_left_are_busy(tmp_path, monkeypatch):
    turns = []
    fakes = {"a": FakeTarget("a", 2, turns), "b": FakeTarget("b", 0, turns), "c": FakeTarget("c", 1, turns),
             "d": FakeTarget("d", 0, turns)}
    monkeypatch.setattr(cli, "targets", lambda paper: fakes)
    (tmp_path / "fake-d-smoke.json").write_text("{}")  # d's results exist
    summary = campaign.run_campaign(["fake/a", "fake/b", "fake/c", "fake/d"], "smoke", tmp_path, None, 0, None,
                                    "test", skip_written=True, then=f"echo written >> {tmp_path / 'hook'}")
    # a busy, b written, c busy, a busy again: every target left was busy, so c is waited for; then a is free
    assert turns == [("a", False), ("b", False), ("c", False), ("a", False), ("c", True), ("a", False)]
    assert summary["written"] == ["fake-b-smoke.json", "fake-c-smoke.json", "fake-a-smoke.json"]
    assert summary["skipped"] == ["fake/d"] and not summary["pending"]
    assert (tmp_path / "hook").read_text().splitlines() == ["written"] * 3


def test_status_lists_written_targets_and_unfinished_runs_of_the_preset(tmp_path, capsys, monkeypatch):
    import fcntl

    (tmp_path / "adanet-fig8-smoke.json").write_text("{}")
    monkeypatch.setattr(campaign, "WEIGHTS_DIR", tmp_path / "weights")

    def run(folder, target, finished=False, epochs=0, root=tmp_path / "runs"):
        (root / folder).mkdir(parents=True)
        record = {"content": {"recipe": {"epochs": 5}}, "finished": finished,
                  "requested_by": {"row": f"row of {folder}", "target": target}}
        (root / folder / "run.json").write_text(json.dumps(record))
        (root / folder / "metrics.jsonl").write_text("{}\n" * epochs)

    run("a-1", "adanet-fig7-smoke", epochs=2)
    run("b-2", "adanet-fig7-smoke", epochs=3)
    run("c-3", "adanet-fig7-smoke", finished=True, epochs=5)
    run("d-4", "adanet-fig7-mini", epochs=1)  # another preset
    parked = tmp_path / "weights" / "smoke-in-progress"  # what scripts/park_runs.py save commits
    run("a-1", "adanet-fig7-smoke", epochs=4, root=parked)  # further along than the clone's copy
    run("b-2", "adanet-fig7-smoke", epochs=1, root=parked)  # behind it
    run("e-5", "adanet-fig7-smoke", epochs=1, root=parked)  # not in this clone at all
    (tmp_path / "runs" / ".locks").mkdir()
    with open(tmp_path / "runs" / ".locks" / "b-2.lock", "a") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)  # a process is training b-2
        assert cli.main(["campaign", "--preset", "smoke", "--out", str(tmp_path), "--status",
                         "--targets", "adanet/fig8", "adanet/fig7"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"smoke campaign in {tmp_path}: 1 of 2 targets written; left: adanet/fig7",
        "unfinished runs: 2 (epochs done of planned)",
        "  a-1  2/5  stopped  adanet-fig7-smoke: row of a-1",
        "  b-2  3/5  training now  adanet-fig7-smoke: row of b-2",
        f"parked further along in {parked} (`python scripts/park_runs.py restore` puts them back):",
        "  a-1  4/5  adanet-fig7-smoke: row of a-1",
        "  e-5  1/5  adanet-fig7-smoke: row of e-5"]
    assert not (tmp_path / "adanet-fig7-smoke.json").exists()  # nothing ran
    assert not (parked / ".locks").exists()  # a status query writes nothing into the committed folder


def _held_lock(root, spec, data, config, method):
    """Hold the lock a process training this run would hold (the caller closes the returned file)."""
    import fcntl

    from common.runs import run_content, run_key

    folder = f"{spec.name}-{run_key(run_content(spec, method, config, data, 0))[:12]}"
    (root / ".locks").mkdir(parents=True, exist_ok=True)
    holder = open(root / ".locks" / f"{folder}.lock", "a")
    fcntl.flock(holder, fcntl.LOCK_EX)
    return holder


def test_a_busy_row_gets_a_stand_in_and_the_target_trains_its_later_rows(tmp_path):
    from common.data import build_data
    from common.hub import HubBackbone
    from common.reproduction import Context
    from common.runs import ModelSpec
    from common.train import Method, TrainConfig

    data = build_data("cifar10-sample", batch_size=32, train_limit=32, test_limit=32)
    spec = ModelSpec(HubBackbone, "resnet20_cifar", num_classes=10)
    first, second = (TrainConfig(epochs=1, batch_size=32, lr=lr, milestones=()) for lr in (0.05, 0.1))
    ctx = Context("adanet", "fig8", "smoke", tmp_path, wait_busy=False)
    with _held_lock(ctx.runs_root, spec, data, first, Method()):
        stand_in = ctx.train("first", spec, data, first)
        trained = ctx.train("second", spec, data, second)
    assert ctx.stand_ins == ["first"] and list(ctx.runs) == ["second"]
    assert stand_in.history == [] and len(stand_in.evaluation["labels"]) == 32  # evaluated, never trained
    assert not trained.reused and len(trained.history) == 1
    assert [path.parent for path in ctx.runs_root.glob("*/run.json")] == [trained.directory]  # no folder for the first


class StandInTarget:
    """A target whose first row is busy and whose later code fails on the stand-in's untrained model."""

    title = "fake"

    def __init__(self, error: Exception):
        self.error, self.calls = error, 0

    def run(self, ctx):
        self.calls += 1
        if self.calls == 1:
            ctx.stand_ins.append("busy row")
            raise self.error
        return []


def test_a_failure_after_a_stand_in_puts_the_target_back_but_training_errors_stop_the_campaign(tmp_path,
                                                                                             monkeypatch):
    import pytest

    from common.runs import TrainingError

    fakes = {"a": StandInTarget(IndexError("history[-1] of a stand-in"))}
    monkeypatch.setattr(cli, "targets", lambda paper: fakes)
    summary = campaign.run_campaign(["fake/a"], "smoke", tmp_path, None, 0, None, "test")
    assert fakes["a"].calls == 2 and summary["written"] == ["fake-a-smoke.json"]

    fakes["a"] = StandInTarget(TrainingError("the loss became non-finite"))
    with pytest.raises(TrainingError):
        campaign.run_campaign(["fake/a"], "smoke", tmp_path, None, 0, None, "test")


class FigureTarget:
    """A target that saves a figure; on its first turn one of its rows is busy (a stand-in)."""

    title = "fake"

    def __init__(self, out):
        self.out, self.calls = out, 0

    def run(self, ctx):
        from PIL import Image

        self.calls += 1
        assert not (self.out / "fake-a-smoke-fig.png").exists()  # the stand-in turn left no figure in --out
        if self.calls == 1:
            ctx.stand_ins.append("busy row")
        Image.new("RGB", (40, 30), "white").save(ctx.figure_path("fig"))
        return []


def test_figures_reach_the_results_folder_only_with_their_results(tmp_path, monkeypatch):
    fakes = {"a": FigureTarget(tmp_path)}
    monkeypatch.setattr(cli, "targets", lambda paper: fakes)
    summary = campaign.run_campaign(["fake/a"], "smoke", tmp_path, None, 0, None, "test")
    assert fakes["a"].calls == 2 and summary["written"] == ["fake-a-smoke.json"]
    assert (tmp_path / "fake-a-smoke-fig.png").exists()
    assert json.loads((tmp_path / "fake-a-smoke.json").read_text())["figures"] == ["fake-a-smoke-fig.png"]
    assert not list(tmp_path.glob(".staging-*")), "a staging folder was left behind"


def test_results_of_a_campaign_show_no_local_data_folder(tmp_path, monkeypatch):
    fakes = {"a": FigureTarget(tmp_path)}
    monkeypatch.setattr(cli, "targets", lambda paper: fakes)
    data_dir = str(tmp_path / "my-data" / "cifar10")
    campaign.run_campaign(["fake/a"], "smoke", tmp_path, data_dir, 0, None, "test", threads=1)
    command = json.loads((tmp_path / "fake-a-smoke.json").read_text())["provenance"]["command"]
    assert command == f"python -m reproduce fake a --preset smoke --out {tmp_path} --resume --data-dir DATA_DIR --threads 1"


def test_results_of_a_campaign_with_another_seed_record_it_in_their_command(tmp_path, monkeypatch):
    fakes = {"a": FigureTarget(tmp_path)}
    monkeypatch.setattr(cli, "targets", lambda paper: fakes)
    campaign.run_campaign(["fake/a"], "smoke", tmp_path, None, 1, None, "test", threads=1)
    provenance = json.loads((tmp_path / "fake-a-smoke.json").read_text())["provenance"]
    assert provenance["seed"] == 1
    assert provenance["command"] == f"python -m reproduce fake a --preset smoke --out {tmp_path} --resume --seed 1 --threads 1"
