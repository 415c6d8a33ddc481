"""The speed goals beside the committed measurements: one Markdown table, printed or written into the README.

Reads what the three speed commands wrote (README, Speed): `benchmarks/train_step-speed.json` (training
steps, `vs_static`), `results/compare-latency-mini.json` (inference, ratio and executed-MACs fraction)
and `benchmarks/latency_floors.json` (the floor: what the method's equations alone cost), with the
three-run medians of `benchmarks/latency_floors-repeats.json` where a row has them. Measures nothing
itself:

    python benchmarks/speed_table.py              # print the table
    python benchmarks/speed_table.py --readme     # write it between the README's speed markers
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRAIN_STEP = ROOT / "benchmarks" / "train_step-speed.json"
LATENCY = ROOT / "results" / "compare-latency-mini.json"
FLOORS = ROOT / "benchmarks" / "latency_floors.json"
REPEATS = ROOT / "benchmarks" / "latency_floors-repeats.json"  # the rows within noise of their goal, three runs
START, END = "<!-- speed:start -->", "<!-- speed:end -->"

# model, setting, goal (× the static backbone), where the measurement is, the latency_floors.py row
GOALS = [
    ("Adanet 110, 32/54 blocks forced, skip", "inference batch 1", 0.69,
     ("latency", "Adanet 110 (32/54 blocks forced, skip)", 1), "Adanet 110, 32/54 forced, inference batch 1"),
    ("Adanet 110, 32/54 blocks forced, skip", "inference batch 64", 0.69,
     ("latency", "Adanet 110 (32/54 blocks forced, skip)", 64), "Adanet 110, 32/54 forced, inference batch 64"),
    ("Adanet 110", "training step, batch 128", 1.10, ("train", "adanet110"), "Adanet 110, training step batch 128"),
    ("RDI-Net 110", "training step, batch 128", 1.15, ("train", "rdinet110"), "RDI-Net 110, training step batch 128"),
    ("DY-Graph ResNet-20", "training step, batch 128", 1.10, ("train", "dygraph20"),
     "DY-Graph ResNet-20, training step batch 128"),
    ("DY-Graph ResNet-56", "training step, batch 128", 1.10, ("train", "dygraph56"),
     "DY-Graph ResNet-56, training step batch 128"),
    ("DY-Graph ResNet-110", "training step, batch 128", 1.10, ("train", "dygraph110"),
     "DY-Graph ResNet-110, training step batch 128"),
    ("DY-Graph ResNet-50, all edges open", "inference batch 1", 1.05,
     ("latency", "DY-Graph ResNet-50 (all edges open, skip)", 1), "DY-Graph ResNet-50, inference batch 1"),
    ("DY-Graph ResNet-50, all edges open", "inference batch 8", 1.05,
     ("latency", "DY-Graph ResNet-50 (all edges open, skip)", 8), "DY-Graph ResNet-50, inference batch 8"),
    ("DY-Graph MobileNetV2, all edges open", "inference batch 1", 1.05,
     ("latency", "DY-Graph MobileNetV2 (all edges open, skip)", 1), "DY-Graph MobileNetV2, inference batch 1"),
    ("DY-Graph MobileNetV2, all edges open", "inference batch 8", 1.05,
     ("latency", "DY-Graph MobileNetV2 (all edges open, skip)", 8), "DY-Graph MobileNetV2, inference batch 8"),
    ("ADN ResNet-20", "training step (two passes), batch 128", 2.05, ("train", "adn20"), None),
    ("ADN ResNet-50 base vs super", "inference batch 1", 0.656,
     ("latency", "ADN ResNet-50 base-net", 1), "ADN ResNet-50 base vs super, inference batch 1"),
    ("ADN ResNet-50 base vs super", "inference batch 8", 0.656,
     ("latency", "ADN ResNet-50 base-net", 8), "ADN ResNet-50 base vs super, inference batch 8"),
]


def measured(source: tuple, train_step: dict, latency: dict) -> tuple[float, float | None]:
    """(time ratio against the static backbone, executed-MACs fraction or None) of one goal's row."""
    if source[0] == "train":
        row = next(r for r in train_step["rows"] if r["model"] == source[1] and r["setting"] == "fp32")
        return row["vs_static"], None
    row = next(r for r in latency["extra"]["rows"] if r["row"].startswith(source[1]) and r["batch"] == source[2])
    return row["ratio"], row["macs_fraction"]


def verdict(ratio: float, goal: float, floor: float | None) -> str:
    """Met, or missed with what the floor says of the goal."""
    if ratio <= goal:
        return "met"
    if floor is None:
        return "missed"
    return "missed; floor above the goal" if floor > goal else "missed; floor below the goal"


def where(path: Path, provenance: dict | None) -> str:
    """`file` at its commit, for the table's source line."""
    name = path.relative_to(ROOT).as_posix()
    if not provenance:
        return f"`{name}` (commit not recorded)"
    dirty = " + uncommitted changes" if provenance.get("dirty") else ""
    return f"`{name}` at `{(provenance.get('commit') or '?')[:10]}`{dirty}"


def median_floors() -> dict[str, float]:
    """Each repeated row's median floor over its three runs; a later re-measurement replaces an earlier one."""
    repeats = json.loads(REPEATS.read_text())
    rows = [*repeats["summary"], *repeats.get("remeasured", [])]
    return {row["row"]: row["median_floor"] for row in rows}


def table() -> str:
    """The goals with their measured ratio, MACs fraction, floors and verdict, and the files they come from."""
    train_step, latency, floors = (json.loads(path.read_text()) for path in (TRAIN_STEP, LATENCY, FLOORS))
    floor_rows, floors_of_three = {row["row"]: row for row in floors["rows"]}, median_floors()
    lines = ["| model | setting | measured (× static) | executed MACs | goal | floor | floor, median of 3 runs | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for model, setting, goal, source, floor_name in GOALS:
        ratio, macs = measured(source, train_step, latency)
        floor_row = floor_rows.get(floor_name, {})
        # where per-image routing is part of the work (Adanet at batch 64), the routed floor judges the goal
        floor = floor_row.get("floor_routed", floor_row.get("floor"))
        floor_of_three = floors_of_three.get(floor_name)
        lines.append(f"| {model} | {setting} | {ratio:.2f} | {_number(macs, 3)} | ≤ {goal} | {_number(floor)} | "
                     f"{_number(floor_of_three)} | {verdict(ratio, goal, floor if floor_of_three is None else floor_of_three)} |")
    lines += ["", "_Measured: " + ", ".join(where(path, record.get("provenance")) for path, record in
                                              ((TRAIN_STEP, train_step), (LATENCY, latency))) +
              f"; floors: {where(FLOORS, floors.get('provenance'))} and `{REPEATS.relative_to(ROOT).as_posix()}` "
              "(the verdict takes the three-run median where there is one). One run each: read it with the "
              "Noise paragraph below. Written by `python benchmarks/speed_table.py --readme`._"]
    return "\n".join(lines)


def _number(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def write_readme(text: str, readme: Path = ROOT / "README.md") -> None:
    """Replace what stands between the README's speed markers."""
    content = readme.read_text()
    if START not in content or END not in content:
        raise SystemExit(f"{readme} has no '{START}' … '{END}' block: add the two markers where the table goes")
    head, rest = content.split(START, 1)
    readme.write_text(f"{head}{START}\n{text}\n{END}{rest.split(END, 1)[1]}")


def main() -> None:
    """Print the table, or write it into the README."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--readme", action="store_true", help="write the table into README.md")
    args = parser.parse_args()
    text = table()
    if args.readme:
        write_readme(text)
    print(text)


if __name__ == "__main__":
    main()
