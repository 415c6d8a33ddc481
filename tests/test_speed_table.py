"""benchmarks/speed_table.py: the README's speed table comes from the committed measurement files."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def speed_table():
    spec = importlib.util.spec_from_file_location("speed_table", ROOT / "benchmarks" / "speed_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_verdict_is_met_at_or_below_the_goal_and_otherwise_says_where_the_floor_lies(speed_table):
    assert speed_table.verdict(1.10, 1.10, 1.2) == "met"
    assert speed_table.verdict(1.2, 1.10, 1.15) == "missed; floor above the goal"
    assert speed_table.verdict(1.2, 1.10, 1.05) == "missed; floor below the goal"
    assert speed_table.verdict(1.2, 1.10, None) == "missed"


def test_every_goal_finds_its_measurement_and_floor_in_the_committed_files(speed_table):
    lines = speed_table.table().splitlines()
    rows = [line for line in lines[2:] if line.startswith("| ")]
    assert len(rows) == len(speed_table.GOALS)
    floors_given = sum(floor_name is not None for *_, floor_name in speed_table.GOALS)
    assert sum(row.split(" | ")[5] != "—" for row in rows) == floors_given  # no floor row silently missing


def test_the_readme_shows_the_table_of_the_committed_files(speed_table):
    readme = (ROOT / "README.md").read_text()
    block = readme.split(speed_table.START, 1)[1].split(speed_table.END, 1)[0]
    assert block.strip() == speed_table.table().strip(), "run python benchmarks/speed_table.py --readme"


def test_write_readme_replaces_only_the_block_and_names_missing_markers(speed_table, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"head\n{speed_table.START}\nold\n{speed_table.END}\ntail\n")
    speed_table.write_readme("new", readme)
    assert readme.read_text() == f"head\n{speed_table.START}\nnew\n{speed_table.END}\ntail\n"
    readme.write_text("no markers\n")
    with pytest.raises(SystemExit, match="speed:start"):
        speed_table.write_readme("new", readme)


def test_the_goals_agree_with_the_goals_latency_floors_measured_against(speed_table):
    floors = {row["row"]: row for row in json.loads(speed_table.FLOORS.read_text())["rows"]}
    for model, setting, goal, _, floor_name in speed_table.GOALS:
        if floor_name is not None:
            assert floors[floor_name]["goal"] == goal, (model, setting)
