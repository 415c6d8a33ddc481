"""Copy finished runs of a preset from results/runs into weights/<preset>/ (what the repository commits).

    python scripts/collect_runs.py mini

Only runs that a results file of the preset names are shipped (a run of an earlier recipe is not). Each
run keeps its Hub layout (config.json, model.safetensors), run.json (the key's content),
metrics.jsonl and a model card (README.md, from a results file that names it: the paper target that
trained it where that file exists, never the cross-paper comparison where a paper target names it);
checkpoints are not copied. Targets reuse these runs by key on any clone.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FILES = ("config.json", "model.safetensors", "run.json", "metrics.jsonl")


def _results(stem: str) -> dict:
    return json.loads((REPO / "results" / f"{stem}.json").read_text())


def _is_comparison(stem: str) -> bool:
    """A results file of the cross-paper comparison (which cites no paper), not of a paper's target."""
    return stem.startswith("compare-")


def write_card(destination: Path, record: dict, stem: str, row: str) -> None:
    """The run's model card, from results/<stem>.json, which names the run as `row`; an existing card is kept
    unless it came from the cross-paper comparison and a paper target now names the run."""
    from common.hub import model_card

    existing = destination / "README.md"
    if existing.exists() and (_is_comparison(stem) or "python -m reproduce compare " not in existing.read_text()):
        return
    paper = stem.split("-")[0]
    bibtex = REPO / paper / "CITATION.bib"
    results = _results(stem)
    card = model_card(record, results, row, f"weights/{destination.parent.name}/{destination.name}",
                      bibtex.read_text() if bibtex.exists() else "")
    (destination / "README.md").write_text(card)


def referenced_runs(preset: str) -> dict[str, dict[str, str]]:
    """Run folder → {results stem: row} of every results/*-<preset>.json that names it: the runs of the
    current recipe."""
    folders: dict[str, dict[str, str]] = {}
    for path in sorted((REPO / "results").glob(f"*-{preset}.json")):
        for row, run in json.loads(path.read_text()).get("runs", {}).items():
            folders.setdefault(run["folder"], {})[path.stem] = row
    return folders


def main(preset: str) -> int:
    """Copy every finished run that a results file of the preset names into weights/<preset>/."""
    from common.hub import row_top1
    from common.runs import is_finished

    if preset != "mini":
        raise SystemExit(f"only mini runs are committed; got {preset!r} (short/paper weights go to the Hub)")
    target = REPO / "weights" / preset
    current = referenced_runs(preset)
    copied = 0
    for run in sorted((REPO / "results" / "runs").glob("*/run.json")):
        folder = run.parent
        record = json.loads(run.read_text())
        if not is_finished(folder) or not record["requested_by"].get("target", "").endswith(f"-{preset}"):
            continue
        names = current.get(folder.name)
        if not names:  # no results file names it yet, or an earlier recipe trained it
            continue
        destination = target / folder.name
        if not (destination / "model.safetensors").exists():
            destination.mkdir(parents=True, exist_ok=True)
            for name in FILES:
                shutil.copyfile(folder / name, destination / name)
            copied += 1
            print(f"copied {folder.name}")
        # the card reads the results of the paper target that trained the run, or else of the first paper target
        # that gives its row an accuracy (a table rather than a figure of rates), or else of the first that names
        # it: the cross-paper comparison only where no paper target does (a card cites its paper)
        stem = record["requested_by"]["target"]
        if stem not in names or _is_comparison(stem):
            own = [s for s in names if not _is_comparison(s)] or list(names)
            with_accuracy = [s for s in own if row_top1(_results(s), names[s]) is not None]
            stem = (with_accuracy or own)[0]
        write_card(destination, record, stem, names[stem])
    print(f"{copied} new run(s) in {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "mini"))
