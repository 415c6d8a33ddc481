"""Copy finished runs of a preset from results/runs into weights/<preset>/ (what the repository commits).

    python scripts/collect_runs.py mini

Only runs that a results file of the preset names are shipped (a run of an earlier recipe is not). Each
run keeps its Hub layout (config.json, model.safetensors), run.json (the key's content),
metrics.jsonl and a model card (README.md, from the results file of the target that trained it: a run
ships once that file exists); checkpoints are not copied. Targets reuse these runs by key on any clone.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FILES = ("config.json", "model.safetensors", "run.json", "metrics.jsonl")


def write_card(destination: Path, record: dict) -> None:
    """The run's model card, from the results file of the target that trained it (once that exists)."""
    from common.hub import model_card

    stem, row = record["requested_by"]["target"], record["requested_by"]["row"]
    results = REPO / "results" / f"{stem}.json"
    if not results.exists() or (destination / "README.md").exists():
        return
    paper = stem.split("-")[0]
    bibtex = REPO / paper / "CITATION.bib"
    card = model_card(record, json.loads(results.read_text()), row, f"weights/{destination.parent.name}/{destination.name}",
                      bibtex.read_text() if bibtex.exists() else "")
    (destination / "README.md").write_text(card)


def referenced_runs(preset: str) -> set[str]:
    """Run folders that some results/*-<preset>.json names: the runs of the current recipe."""
    folders = set()
    for path in (REPO / "results").glob(f"*-{preset}.json"):
        folders |= {run["folder"] for run in json.loads(path.read_text()).get("runs", {}).values()}
    return folders


def main(preset: str) -> int:
    """Copy every finished run that a results file of the preset names into weights/<preset>/."""
    from common.runs import is_finished

    if preset != "mini":
        raise SystemExit(f"only mini runs are committed; got {preset!r} (short/paper weights go to the Hub)")
    target = REPO / "weights" / preset
    current = referenced_runs(preset)
    copied = 0
    for run in sorted((REPO / "results" / "runs").glob("*/run.json")):
        folder = run.parent
        record = json.loads(run.read_text())
        target_name = record["requested_by"].get("target", "")
        if not is_finished(folder) or not target_name.endswith(f"-{preset}"):
            continue
        if not (REPO / "results" / f"{target_name}.json").exists():  # its card reads them: wait for the target
            print(f"waiting for results/{target_name}.json before shipping {folder.name}")
            continue
        if folder.name not in current:  # e.g. trained under an earlier recipe: no results file names it
            continue
        destination = target / folder.name
        if not (destination / "model.safetensors").exists():
            destination.mkdir(parents=True, exist_ok=True)
            for name in FILES:
                shutil.copyfile(folder / name, destination / name)
            copied += 1
            print(f"copied {folder.name}")
        write_card(destination, record)
    print(f"{copied} new run(s) in {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "mini"))
