"""scripts/train_mini.sh: every mini target once, in two lanes, skipping the targets whose results exist."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "train_mini.sh"


def test_lanes_run_each_target_once_and_skip_those_with_results(tmp_path):
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    (repo / "results").mkdir()
    shutil.copy(SCRIPT, repo / "scripts" / "train_mini.sh")
    (repo / "results" / "adanet-table1-mini.json").write_text("{}")  # a finished target
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "uv").write_text(f'#!/bin/sh\necho "$*" >> {tmp_path}/calls\n')
    (fake / "flock").write_text('#!/bin/sh\nshift; exec "$@"\n')
    for tool in ("uv", "flock"):
        (fake / tool).chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}
    subprocess.run(["bash", "scripts/train_mini.sh", "DATA", "2"], cwd=repo, env=env, check=True, timeout=60)
    calls = (tmp_path / "calls").read_text().splitlines()
    targets = [c.split("-m reproduce ")[1].split(" --preset")[0] for c in calls if "-m reproduce" in c]
    assert "adanet table1" not in targets  # its results exist
    assert len(targets) == len(set(targets)) and {"baselines cifar10-resnet", "rdinet fig5", "rdinet fig7"} <= set(targets)
    assert all("--preset mini --data-dir DATA --out results --resume --threads" in c for c in calls if "-m reproduce" in c)
    lane1 = (repo / "mini-lane1.log").read_text()
    assert "adanet table1: results/adanet-table1-mini.json exists, skipped" in lane1 and "== rdinet fig7" in lane1
    assert "== rdinet fig5" in (repo / "mini-lane2.log").read_text()  # the RDI-Net targets split between lanes
