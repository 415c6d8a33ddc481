"""reproduce campaign: a budget stops before any run; a finished campaign trains nothing new on the next call."""
import json

from reproduce import cli

TARGETS = ["--targets", "adanet/fig8"]


def test_campaign_continues_and_then_trains_nothing_new(tmp_path, capsys):
    out = ["--preset", "smoke", "--out", str(tmp_path)]
    assert cli.main(["campaign", *out, "--budget-minutes", "0", *TARGETS]) == 0
    assert "trained 0 run(s), reused 0, wrote 0 results file(s); 1 target(s) wait" in capsys.readouterr().out
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
