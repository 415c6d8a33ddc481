"""`python -m reproduce list` / `python -m reproduce <paper> <target> --preset … [--out DIR] …`.

Thin by design: parse arguments, look the target up in the paper folder's `tables.py`, run it,
write its results through `common.reproduction`.
"""
from __future__ import annotations

import argparse
import importlib
import shlex
import sys
from pathlib import Path

from common.data import DataError
from common.runs import RunError, TrainingError
from common.reproduction import PRESETS, Context, Target, push_trained, update_readme, write_results

# paper name → module holding its TARGETS
PAPERS = {"baselines": "common.tables", "adanet": "adanet.tables", "rdinet": "rdinet.tables",
          "dygraph": "dygraph.tables", "adn": "adn.tables"}


def targets(paper: str) -> dict[str, Target]:
    """The targets a paper folder defines (empty while the folder is a stub)."""
    try:
        module = importlib.import_module(PAPERS[paper])
    except ModuleNotFoundError as error:
        if error.name == PAPERS[paper]:
            return {}
        raise
    return getattr(module, "TARGETS", {})


def all_targets() -> dict[str, dict[str, Target]]:
    """Every paper's targets."""
    return {paper: targets(paper) for paper in PAPERS}


def _bibtex(paper: str) -> str:
    """The paper folder's CITATION.bib, if it has one."""
    path = Path(__file__).resolve().parent.parent / paper / "CITATION.bib"
    return path.read_text() if path.exists() else ""


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _readme(argv: list[str]) -> int:
    """`python -m reproduce readme <paper> [--results DIR]`: regenerate a README's results block."""
    parser = argparse.ArgumentParser(prog="python -m reproduce readme")
    parser.add_argument("paper")
    parser.add_argument("--results", default="results")
    args = parser.parse_args(argv)
    if args.paper not in PAPERS:
        return _fail(f"unknown paper {args.paper!r}. Valid choices: {', '.join(PAPERS)}.")
    folder = "common" if args.paper == "baselines" else args.paper
    readme = Path(__file__).resolve().parent.parent / ("README.md" if folder == "common" else f"{folder}/README.md")
    paths = sorted(Path(args.results).glob(f"{args.paper}-*.json"))
    update_readme(readme, paths)
    print(f"updated {readme} from {len(paths)} results file(s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip() + "\n\nPapers: " + ", ".join(PAPERS) + ". `python -m reproduce list` lists the targets.")
        return 0
    if argv[0] == "readme":
        return _readme(argv[1:])
    if argv[0] == "list":
        for paper, found in all_targets().items():
            for name, target in found.items():
                print(f"{paper:10s} {name:22s} {target.title}")
        return 0
    parser = argparse.ArgumentParser(prog="python -m reproduce", description="Run one table or figure.")
    parser.add_argument("paper")
    parser.add_argument("target")
    parser.add_argument("--preset", default="smoke",
                        help="smoke: CPU minutes on the packaged sample; short: one GPU, shortened schedule; "
                             "paper: the paper's recipe")
    parser.add_argument("--out", default="results", help="folder for the JSON, Markdown and figures")
    parser.add_argument("--data-dir", default=None, help="local dataset folder (parquet in the Hub layout or image folder)")
    parser.add_argument("--resume", action="store_true", help="continue each unfinished run from its last checkpoint")
    parser.add_argument("--restart", action="store_true", help="start each unfinished run over")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--push-to-hub", default=None, metavar="REPO", help="upload trained weights + card")
    args = parser.parse_args(argv)
    if args.paper not in PAPERS:
        return _fail(f"unknown paper {args.paper!r}. Valid choices: {', '.join(PAPERS)}.")
    found = targets(args.paper)
    if args.target not in found:
        valid = ", ".join(found) or "none yet"
        return _fail(f"unknown target {args.target!r} for {args.paper}. Valid choices: {valid}.")
    if args.preset not in PRESETS:
        return _fail(f"unknown preset {args.preset!r}. Valid choices: {', '.join(PRESETS)}.")
    target = found[args.target]
    if args.resume and args.restart:
        return _fail("--resume and --restart exclude each other: continue the unfinished runs or start them over.")
    ctx = Context(args.paper, args.target, args.preset, Path(args.out), args.data_dir, args.resume,
                  args.seed, args.push_to_hub, args.restart, command="python -m reproduce " + shlex.join(argv))
    try:
        cells = target.run(ctx)
    except (DataError, RunError, TrainingError) as error:
        return _fail(str(error))
    from common.train import process_state

    if not process_state().is_main_process:  # under `accelerate launch`, one process writes
        return 0
    json_path, md_path = write_results(ctx, target, cells)
    print(md_path.read_text())
    print(f"wrote {json_path} and {md_path}")
    if args.push_to_hub:
        for repo_id in push_trained(ctx, json_path, _bibtex(args.paper)):
            print(f"pushed {repo_id}")
    return 0
