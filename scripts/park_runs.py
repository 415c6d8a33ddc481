"""Carry the `mini` campaign's unshipped runs from one clone to the next through git.

    python scripts/park_runs.py save       # results/runs → weights/mini-in-progress (commit it)
    python scripts/park_runs.py restore    # weights/mini-in-progress → results/runs (train_mini.sh does it)

results/runs is not committed, so a fresh clone would start every unfinished run over and lose a finished
run whose target still trains its other rows (scripts/collect_runs.py ships a run once its target's
results are written). `save` copies each such run of the mini campaign into weights/mini-in-progress/: an
unfinished one with its last checkpoint (it resumes there, bit for bit, with the thread count it started
with), a finished one with its weights; a run with a file over 4 MB (an RDI-Net-20 checkpoint: weights and
momentum of its 0.94 M parameters) is left out, as the repository keeps no larger file. It drops the copies of runs that have since shipped to
weights/mini. `restore` puts back each parked run that is further along than the clone's own copy and
that no process is training.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PRESET = "mini"
MAX_FILE_BYTES = 4 * 1024 * 1024  # the repository tracks no larger file (an RDI-Net-20 checkpoint is 7.6 MB)
FINISHED_FILES = ("run.json", "metrics.jsonl", "config.json", "model.safetensors")
UNFINISHED_FILES = ("run.json", "metrics.jsonl", "checkpoint.pt")


def _paths() -> tuple[Path, Path, Path]:
    """(the campaign's run folders, the shipped runs, the parked runs)."""
    return REPO / "results" / "runs", REPO / "weights" / PRESET, REPO / "weights" / f"{PRESET}-in-progress"


def _epochs(folder: Path) -> int:
    """Epochs a run folder holds: all of them once finished, else those its checkpoint reached."""
    from common.runs import epochs_done, is_finished

    if is_finished(folder):
        return sys.maxsize
    if not (folder / "checkpoint.pt").exists():
        return 0
    return epochs_done(folder)


def _copy(source: Path, destination: Path) -> None:
    """Replace `destination` by the files of run folder `source` that resume or reuse it."""
    from common.runs import is_finished

    names = FINISHED_FILES if is_finished(source) else UNFINISHED_FILES
    if destination.exists():
        shutil.rmtree(destination)
    destination.mkdir(parents=True)
    for name in names:  # the checkpoint before metrics.jsonl: a resume rewrites the log from the checkpoint
        shutil.copyfile(source / name, destination / name)


def _is_campaign_run(folder: Path) -> bool:
    record = json.loads((folder / "run.json").read_text())
    return record["requested_by"].get("target", "").endswith(f"-{PRESET}")


def save() -> int:
    """Park every unshipped mini run that holds a checkpoint or weights; drop parked runs that shipped."""
    runs, shipped, parked = _paths()
    for folder in sorted(p.parent for p in runs.glob("*/run.json")):
        epochs = _epochs(folder)
        if (not _is_campaign_run(folder) or (shipped / folder.name / "model.safetensors").exists()
                or epochs == 0 or epochs <= _epochs(parked / folder.name)):
            continue
        too_big = [p.name for p in folder.iterdir() if p.name in FINISHED_FILES + UNFINISHED_FILES
                   and p.stat().st_size > MAX_FILE_BYTES]
        if too_big:
            print(f"not parked {folder.name}: {', '.join(too_big)} is over {MAX_FILE_BYTES >> 20} MB, more than the "
                  f"repository keeps in one file; a fresh clone starts it over")
            continue
        _copy(folder, parked / folder.name)
        state = "finished" if epochs == sys.maxsize else f"after epoch {epochs}"
        print(f"parked {folder.name} ({state})")
    for folder in sorted(parked.glob("*/")):
        if (shipped / folder.name / "model.safetensors").exists():
            shutil.rmtree(folder)
            print(f"dropped {folder.name}: shipped in {shipped.relative_to(REPO)}")
    return 0


def restore() -> int:
    """Put back every parked run that is further along than results/runs' copy and not training now."""
    from common.runs import training_now

    runs, _, parked = _paths()
    for folder in sorted(p.parent for p in parked.glob("*/run.json")):
        epochs = _epochs(folder)
        if epochs <= _epochs(runs / folder.name):
            continue
        if training_now(runs, folder.name):
            print(f"kept {folder.name} in {parked.relative_to(REPO)}: a process is training it now")
            continue
        _copy(folder, runs / folder.name)
        state = "finished" if epochs == sys.maxsize else f"resumes after epoch {epochs}"
        print(f"restored {folder.name} ({state})")
    return 0


if __name__ == "__main__":
    actions = {"save": save, "restore": restore}
    action = sys.argv[1] if len(sys.argv) > 1 else ""
    if action not in actions:
        raise SystemExit(f"usage: park_runs.py {{save,restore}}; got {action!r}")
    sys.exit(actions[action]())
