"""Rerun the command recorded in each committed results file and compare every cell.

    python scripts/check_results.py [results/adanet-table1-smoke.json ...]

Each file's own command runs again at HEAD into a temporary folder (fresh runs, nothing reused); every
cell must come out the same, except wall-clock measurements (`timing` cells), which no rerun repeats.
The rerun uses the recorded run's torch thread count (its provenance), whatever OMP_NUM_THREADS says.
Prints one line per file and exits non-zero when any cell differs.
"""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def rerun(path: Path) -> list[str]:
    """The cells of `path` that a rerun of its command does not reproduce."""
    record = json.loads(path.read_text())
    argv = shlex.split(record["provenance"]["command"])[3:]  # drop "python -m reproduce"
    if "--out" in argv:
        index = argv.index("--out")
        del argv[index:index + 2]
    threads = re.search(r"(\d+) torch threads", record["provenance"].get("device", ""))
    if threads and not any(arg.startswith("--threads") for arg in argv):
        argv += ["--threads", threads[1]]  # the recorded run's: reductions, hence cells, depend on it
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run([sys.executable, "-m", "reproduce", *argv, "--out", out], cwd=REPO,
                              capture_output=True, text=True)
        if done.returncode:
            return [f"rerun failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}"]
        again = json.loads((Path(out) / path.name).read_text())
    differ = []
    for old, new in zip(record["cells"], again["cells"]):
        if old.get("timing") or new.get("timing"):
            continue
        if old != new:
            differ.append(f"{old['row']} / {old['column']}: {old['ours']} → {new['ours']}")
    if len(record["cells"]) != len(again["cells"]):
        differ.append(f"{len(record['cells'])} cells → {len(again['cells'])}")
    return differ


def main(paths: list[str]) -> int:
    """Check the given results files (default: every results/*.json)."""
    files = [Path(p) for p in paths] or sorted((REPO / "results").glob("*.json"))
    failed = 0
    for path in files:
        differ = rerun(path)
        failed += bool(differ)
        print(f"{path.name}: {'same cells' if not differ else 'DIFFERS: ' + '; '.join(differ[:5])}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
