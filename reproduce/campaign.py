"""`python -m reproduce campaign --preset short [--budget-minutes N] [--jobs K] [--targets P/T …]`.

Every CIFAR target, headline rows first, run within a time budget: their distinct runs (one per run
key, however many targets share it) train until the budget runs out; a run cut short keeps its
epoch checkpoint. Finished runs are files, so the next call (or the next session, or a new lease of
a GPU) continues where this one stopped, and every target whose runs are all finished writes its
results from them. With `--jobs K`, K processes share the target list and one device: a run folder
is locked while it trains, so no key is trained twice. A process that reaches a run another one is
training goes on with the target's later rows (the busy one gets an untrained stand-in, and the cells
are not written), then puts the target at the back of its queue and goes on with the next; it waits
for a lock only when every target it has left was busy since it last trained or wrote anything.
`--skip-written` leaves out targets whose results exist; `--then CMD` runs a shell command after
each results file is written; `--status` prints what is written and where each unfinished run
stands. `campaigns/<preset>.json` (a folder apart, so no `*-<preset>.json` glob for results files
meets it) records what each call trained, reused and wrote.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

from common.reproduction import WEIGHTS_DIR, Context, discard_staging, public_command, write_results
from common.runs import RunError, TrainingError, unfinished_runs
from common.train import BudgetExhausted, atomic_write_text

# Headline rows first: the tables whose runs the figures and other tables reuse.
ORDER = ["baselines/cifar10-resnet", "adanet/table1", "rdinet/table2", "dygraph/table6", "adn/table3",
         "adn/table1", "rdinet/fig9", "rdinet/fig5", "rdinet/table3", "dygraph/table1", "adanet/fig3",
         "adanet/fig4", "adanet/fig6", "adanet/fig7", "adanet/fig8", "adn/fig3a", "adn/fig3b",
         "dygraph/fig-edges", "rdinet/fig7", "compare/methods"]


def _results_json(out: Path, name: str, preset: str) -> Path:
    """The results JSON that target `name` (PAPER/TARGET) writes for `preset` into `out`."""
    paper, target_name = name.split("/")
    return out / f"{Context(paper, target_name, preset, out).stem}.json"


def _put_back(name: str, ctx: Context, queue: deque, busy_in_a_row: int) -> int:
    """Queue target `name` again, its busy rows being trained elsewhere; the new count of turns without progress."""
    print(f"campaign: {name} goes to the back of the queue (busy: {', '.join(ctx.stand_ins)})")
    queue.append(name)
    trained_now = any(not run.reused for run in ctx.runs.values())
    return 0 if trained_now else busy_in_a_row + 1


def _target_command(paper: str, target_name: str, preset: str, out: Path, data_dir: str | None,
                    threads: int | None, seed: int) -> str:
    """The command that reruns one target as the campaign runs it, as results show it (a local data folder: DATA_DIR)."""
    argv = [paper, target_name, "--preset", preset, "--out", str(out), "--resume"]
    argv += ["--seed", str(seed)] if seed else []  # the default, 0, stays implicit as in the committed results
    argv += ["--data-dir", data_dir] if data_dir else []
    argv += ["--threads", str(threads)] if threads is not None else []
    return public_command("python -m reproduce", argv)


def run_campaign(targets: list[str], preset: str, out: Path, data_dir: str | None, seed: int,
                 budget_minutes: float | None, command: str, threads: int | None = None,
                 skip_written: bool = False, then: str | None = None) -> dict:
    """Run `targets` in order within the budget, a busy one later; what trained, was reused, was written."""
    from .cli import targets as paper_targets

    deadline = None if budget_minutes is None else time.time() + 60 * budget_minutes
    summary = {"preset": preset, "command": command, "trained": [], "reused": [], "written": [], "pending": [],
               "skipped": []}
    queue, busy_in_a_row = deque(targets), 0
    while queue:
        name = queue.popleft()
        paper, target_name = name.split("/")
        target = paper_targets(paper)[target_name]
        everything_busy = busy_in_a_row > len(queue)  # since the last progress, every target left was busy
        command = _target_command(paper, target_name, preset, out, data_dir, threads, seed)
        ctx = Context(paper, target_name, preset, out, data_dir, resume=True, seed=seed, command=command,
                      deadline=deadline, wait_busy=everything_busy)
        if skip_written and _results_json(out, name, preset).exists():
            print(f"campaign: {name} skipped: {_results_json(out, name, preset)} exists (delete it to run the target "
                  f"again)")
            summary["skipped"].append(name)
            continue
        try:
            cells = target.run(ctx)
        except BudgetExhausted as stop:
            print(f"campaign: {name} waits for the next call ({stop})")
            summary["pending"].append(name)
            busy_in_a_row = 0
        except (RunError, TrainingError):
            raise
        except Exception as error:  # computing on a stand-in's untrained model may fail: the cells are discarded anyway
            if not ctx.stand_ins:
                raise
            print(f"campaign: {name} stopped on a stand-in for its busy rows ({type(error).__name__}: {error})")
            busy_in_a_row = _put_back(name, ctx, queue, busy_in_a_row)
        else:
            if ctx.stand_ins:
                busy_in_a_row = _put_back(name, ctx, queue, busy_in_a_row)
            else:
                json_path, _ = write_results(ctx, target, cells)
                summary["written"].append(json_path.name)
                busy_in_a_row = 0
                if then and (code := subprocess.run(then, shell=True).returncode):
                    print(f"campaign: --then {then!r} exited with {code}")
        finally:
            discard_staging(ctx)  # figures of a target that wrote no results (stand-ins, budget, an error)
        for row, run in ctx.runs.items():
            summary["reused" if run.reused else "trained"].append(f"{run.directory.name} ({name}: {row})")
    # a target put back reuses on its next turn what it trained or reused before: list each run once
    trained = {entry.split(" ")[0] for entry in summary["trained"]}
    summary["reused"] = list(dict.fromkeys(e for e in summary["reused"] if e.split(" ")[0] not in trained))
    return summary


def status(targets: list[str], preset: str, out: Path) -> str:
    """Which targets have results of `preset` in `out`, and where each unfinished run of the preset stands."""
    left = [name for name in targets if not _results_json(out, name, preset).exists()]
    lines = [f"{preset} campaign in {out}: {len(targets) - len(left)} of {len(targets)} targets written"
             + (f"; left: {', '.join(left)}" if left else "")]
    runs = [run for run in unfinished_runs(out / "runs") if run.get("target", "").endswith(f"-{preset}")]
    lines.append(f"unfinished runs: {len(runs)}" + (" (epochs done of planned)" if runs else ""))
    lines += [f"  {run['folder']}  {run['epochs']}/{run['planned']}  {'training now' if run['training'] else 'stopped'}"
              f"  {run['target']}: {run['row']}" for run in runs]
    here = {run["folder"]: run["epochs"] for run in runs}
    parked_root = WEIGHTS_DIR / f"{preset}-in-progress"  # committed by scripts/park_runs.py save
    parked = [run for run in unfinished_runs(parked_root) if run["epochs"] > here.get(run["folder"], -1)]
    if parked:
        lines.append(f"parked further along in {parked_root} (`python scripts/park_runs.py restore` puts them back):")
        lines += [f"  {run['folder']}  {run['epochs']}/{run['planned']}  {run['target']}: {run['row']}" for run in parked]
    return "\n".join(lines)


def main(argv: list[str], parser_cls: type[argparse.ArgumentParser]) -> int:
    """Parse the campaign's arguments and run it (or its K jobs)."""
    from .cli import PRESETS, UsageError, _out_dir, check_local, set_threads, threads_arg

    parser = parser_cls(prog="python -m reproduce campaign", description=__doc__.split("\n\n")[1])
    parser.add_argument("--preset", default="short", help=f"one of {', '.join(PRESETS)} (default short)")
    parser.add_argument("--budget-minutes", type=float, default=None, help="no run starts after this many minutes")
    parser.add_argument("--jobs", type=int, default=1, help="processes sharing the device (default 1)")
    parser.add_argument("--targets", nargs="+", default=ORDER, help="PAPER/TARGET … in order (default: every CIFAR target)")
    parser.add_argument("--out", default="results")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-written", action="store_true",
                        help="leave out every target whose results JSON of this preset is in --out (delete it to rerun)")
    parser.add_argument("--status", action="store_true",
                        help="print which targets have results and where each unfinished run stands; train nothing")
    parser.add_argument("--then", default=None, metavar="CMD", help="a shell command to run after each results file")
    parser.add_argument("--threads", type=threads_arg, default=None,
                        help="torch CPU threads of each job (default: one per core; on a CPU give cores/jobs)")
    args = parser.parse_args(argv)
    if args.preset not in PRESETS:
        raise UsageError(f"unknown preset {args.preset!r}. Valid choices: {', '.join(PRESETS)}.")
    unknown = [t for t in args.targets if t not in ORDER]
    if unknown:
        raise UsageError(f"{unknown[0]!r} is not a campaign target. Valid: {', '.join(ORDER)}.")
    if args.jobs < 1:
        raise UsageError(f"--jobs {args.jobs}: give at least 1 process.")
    if args.budget_minutes is not None and args.budget_minutes < 0:
        raise UsageError(f"--budget-minutes {args.budget_minutes}: give a number of minutes ≥ 0.")
    if args.data_dir is not None and args.preset != "smoke":
        check_local("cifar10", args.data_dir)
    out = _out_dir(args.out)
    if args.status:
        print(status(args.targets, args.preset, out))
        return 0
    command = "python -m reproduce campaign " + " ".join(argv)
    if args.jobs > 1:  # K processes over the same list: the run locks share the work out
        base = [sys.executable, "-m", "reproduce", "campaign", "--preset", args.preset, "--out", str(out),
                "--seed", str(args.seed), *(["--data-dir", args.data_dir] if args.data_dir else []),
                *(["--budget-minutes", str(args.budget_minutes)] if args.budget_minutes is not None else []),
                *(["--threads", str(args.threads)] if args.threads is not None else []),
                *(["--skip-written"] if args.skip_written else []), *(["--then", args.then] if args.then else [])]
        shares = [args.targets[i::args.jobs] for i in range(args.jobs)]
        jobs = [subprocess.Popen([*base, "--targets", *share, *(t for t in args.targets if t not in share)])
                for share in shares]
        return max(job.wait() for job in jobs)
    set_threads(args.threads)
    summary = run_campaign(args.targets, args.preset, out, args.data_dir, args.seed, args.budget_minutes, command,
                           args.threads, args.skip_written, args.then)
    record_path = out / "campaigns" / f"{args.preset}.json"
    record_path.parent.mkdir(parents=True, exist_ok=True)
    history = json.loads(record_path.read_text()) if record_path.exists() else []
    atomic_write_text(json.dumps(history + [summary], indent=2) + "\n", record_path)
    print(f"campaign: trained {len(summary['trained'])} run(s), reused {len(summary['reused'])}, wrote "
          f"{len(summary['written'])} results file(s), skipped {len(summary['skipped'])}; {len(summary['pending'])} "
          f"target(s) wait for the next call.")
    return 0
