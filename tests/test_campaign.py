"""reproduce campaign: a budget stops before any run; a finished campaign trains nothing new on the next call; a busy
target waits its turn."""
import json

from common.runs import RunBusy
from reproduce import campaign, cli

TARGETS = ["--targets", "adanet/fig8"]


def test_campaign_continues_and_then_trains_nothing_new(tmp_path, capsys):
    out = ["--preset", "smoke", "--out", str(tmp_path)]
    assert cli.main(["campaign", *out, "--budget-minutes", "0", *TARGETS]) == 0
    assert "trained 0 run(s), reused 0, wrote 0 results file(s), skipped 0; 1 target(s) wait" in capsys.readouterr().out
    assert cli.main(["campaign", *out, *TARGETS]) == 0
    assert cli.main(["campaign", *out, *TARGETS]) == 0
    calls = json.loads((tmp_path / "campaign-smoke.json").read_text())
    assert [len(c["written"]) for c in calls] == [0, 1, 1]
    assert len(calls[1]["trained"]) == 1 and not calls[1]["pending"]  # fig8 trains Adanet 110
    assert calls[2]["trained"] == [] and len(calls[2]["reused"]) == 1  # the second full call trains nothing new
    assert (tmp_path / "adanet-fig8-smoke.json").exists()


def test_campaign_refuses_unknown_targets(capsys):
    assert cli.main(["campaign", "--targets", "adanet/table9"]) == 2
    assert "'adanet/table9' is not a campaign target" in capsys.readouterr().err


class FakeTarget:
    """A target whose run is busy (another process trains it) for its first `busy_turns` turns that do not wait."""

    title = "fake"

    def __init__(self, name: str, busy_turns: int, turns: list):
        self.name, self.busy_turns, self.turns = name, busy_turns, turns

    def run(self, ctx):
        self.turns.append((self.name, ctx.wait_busy))
        if self.busy_turns and not ctx.wait_busy:
            self.busy_turns -= 1
            raise RunBusy(f"{self.name}: another process is training it")
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


def test_status_lists_written_targets_and_unfinished_runs_of_the_preset(tmp_path, capsys):
    import fcntl

    (tmp_path / "adanet-fig8-smoke.json").write_text("{}")

    def run(folder, target, finished=False, epochs=0):
        (tmp_path / "runs" / folder).mkdir(parents=True)
        record = {"content": {"recipe": {"epochs": 5}}, "finished": finished,
                  "requested_by": {"row": f"row of {folder}", "target": target}}
        (tmp_path / "runs" / folder / "run.json").write_text(json.dumps(record))
        (tmp_path / "runs" / folder / "metrics.jsonl").write_text("{}\n" * epochs)

    run("a-1", "adanet-fig7-smoke", epochs=2)
    run("b-2", "adanet-fig7-smoke", epochs=3)
    run("c-3", "adanet-fig7-smoke", finished=True, epochs=5)
    run("d-4", "adanet-fig7-mini", epochs=1)  # another preset
    (tmp_path / "runs" / ".locks").mkdir()
    with open(tmp_path / "runs" / ".locks" / "b-2.lock", "a") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)  # a process is training b-2
        assert cli.main(["campaign", "--preset", "smoke", "--out", str(tmp_path), "--status",
                         "--targets", "adanet/fig8", "adanet/fig7"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"smoke campaign in {tmp_path}: 1 of 2 targets written; left: adanet/fig7",
        "unfinished runs: 2 (epochs done of planned)",
        "  a-1  2/5  stopped  adanet-fig7-smoke: row of a-1",
        "  b-2  3/5  training now  adanet-fig7-smoke: row of b-2"]
    assert not (tmp_path / "adanet-fig7-smoke.json").exists()  # nothing ran
