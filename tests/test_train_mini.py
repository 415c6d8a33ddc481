"""scripts/train_mini.sh: parked runs restored, then LANES campaign processes over every mini target, skipping
those whose results exist."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from reproduce.campaign import ORDER

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "train_mini.sh"


def test_lanes_share_every_campaign_target_and_skip_written_ones(tmp_path):
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(SCRIPT, repo / "scripts" / "train_mini.sh")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "uv").write_text(f'#!/bin/sh\necho "$*" >> {tmp_path}/calls\n')
    (fake / "uv").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}
    subprocess.run(["bash", "scripts/train_mini.sh", "DATA", "2"], cwd=repo, env=env, check=True, timeout=60)
    restore, *calls = (tmp_path / "calls").read_text().splitlines()
    assert restore == "run python scripts/park_runs.py restore"  # parked runs continue before any lane starts
    assert len(calls) == 2 and (repo / "mini-lane1.log").exists() and (repo / "mini-lane2.log").exists()
    threads = max(len(os.sched_getaffinity(0)) // 2, 1)  # nproc
    for call in calls:
        options, targets = call.split(" --targets ")
        assert options.startswith(f"run python -m reproduce campaign --preset mini --data-dir DATA --out results "
                                  f"--threads {threads} --skip-written --then ")
        assert "scripts/collect_runs.py mini" in options  # each written target's runs are shipped at once
        targets = targets.split()
        assert sorted(targets) == sorted(ORDER)  # every CIFAR target, once
        assert targets.index("rdinet/fig5") < targets.index("rdinet/table2")  # the headline sweep before ablations


def test_lanes_must_be_a_positive_whole_number(tmp_path):
    result = subprocess.run(["bash", str(SCRIPT), "DATA", "0"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "LANES is a whole number ≥ 1, not '0'" in result.stderr


def test_stop_ends_only_this_checkouts_lanes_then_parks(tmp_path):
    repo, elsewhere = tmp_path / "repo", tmp_path / "elsewhere"
    (repo / "scripts").mkdir(parents=True)
    elsewhere.mkdir()
    shutil.copy(SCRIPT.parent / "stop_mini.sh", repo / "scripts" / "stop_mini.sh")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "uv").write_text(f'#!/bin/sh\necho "$*" >> {tmp_path}/calls\n')
    (fake / "uv").chmod(0o755)
    lane = [sys.executable, "-c", "import time; time.sleep(120)", "python", "-m", "reproduce", "campaign"]
    ours, other = subprocess.Popen(lane, cwd=repo), subprocess.Popen(lane, cwd=elsewhere)
    try:
        env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}
        result = subprocess.run(["bash", "scripts/stop_mini.sh"], cwd=repo, env=env, capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, result.stderr
        assert ours.wait(timeout=10) == -15 and other.poll() is None  # SIGTERM here, the other checkout's lane runs on
        assert (tmp_path / "calls").read_text().splitlines() == ["run python scripts/park_runs.py save"]
    finally:
        ours.kill()
        other.kill()


def test_without_uv_it_says_how_to_get_it(tmp_path):
    bare = tmp_path / "bin"
    bare.mkdir()
    for tool in ("nproc", "dirname"):
        (bare / tool).symlink_to(shutil.which(tool))
    result = subprocess.run(["/bin/bash", str(SCRIPT), "DATA"], capture_output=True, text=True, timeout=60,
                            env={"PATH": str(bare)})
    assert result.returncode == 2 and "uv is not on PATH; install it first (pip install uv)" in result.stderr
