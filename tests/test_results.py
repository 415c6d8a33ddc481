"""The committed results: every smoke cell that moves with the seed is marked not comparable (†)."""
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SMOKE = sorted((REPO / "results").glob("*-smoke.json"))


def test_every_smoke_target_has_a_seed_1_twin():
    """`scripts/regenerate_results.sh` writes each smoke target at --seed 0 and, under results/seed1, --seed 1."""
    assert SMOKE, "no smoke results committed"
    missing = [p.name for p in SMOKE if not (REPO / "results" / "seed1" / p.name).exists()]
    assert not missing


@pytest.mark.parametrize("path", SMOKE, ids=lambda p: p.stem)
def test_no_smoke_cell_that_depends_on_training_is_marked_comparable(path):
    """A cell whose value changes with the seed depends on training (or on chance): it must carry †."""
    twin = REPO / "results" / "seed1" / path.name
    if not twin.exists():
        pytest.skip("no seed-1 twin")
    ours, other = json.loads(path.read_text()), json.loads(twin.read_text())
    assert ours["provenance"]["commit"] == other["provenance"]["commit"], "the two seeds ran at different commits"
    assert [(c["row"], c["column"]) for c in ours["cells"]] == [(c["row"], c["column"]) for c in other["cells"]]
    wrong = [f"{a['row']} / {a['column']}: {a['ours']} vs {b['ours']}" for a, b in zip(ours["cells"], other["cells"])
             if not a["timing"] and a["ours"] != b["ours"] and a["comparable"]]
    assert not wrong, wrong


@pytest.mark.parametrize("path", SMOKE, ids=lambda p: p.stem)
def test_results_carry_provenance_and_run_keys(path):
    record = json.loads(path.read_text())
    prov = record["provenance"]
    assert len(prov["commit"]) == 40 and prov["dirty"] is False and prov["command"].startswith("python -m reproduce")
    for row, run in record.get("runs", {}).items():
        assert len(run["key"]) == 64 and run["folder"].endswith(run["key"][:12]), row
