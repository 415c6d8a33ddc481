"""Reproduce the tables and figures of four dynamic-network papers.

    python -m reproduce demo                                  every shipped mini model on the packaged sample
    python -m reproduce list                                  every target: what it reads and how long, per preset
    python -m reproduce models [PATTERN]                      every model: params, MACs, pretrained tags
    python -m reproduce <paper> <target> [options]            run one table or figure
    python -m reproduce readme <paper> [--results DIR]        regenerate a README's results block
    python -m reproduce eval MODEL --weights DIR_OR_HUB_ID    accuracy, MACs per image, latency of weights
    python -m reproduce compare [--preset mini]               the four methods on one backbone, in one table
    python -m reproduce compare-latency [options]             = compare latency: dynamic vs static wall-clock
    python -m reproduce campaign --preset short [--budget-minutes N] [--jobs K]   every CIFAR run, resumable
    python -m reproduce campaign --preset mini --status       targets written, where each unfinished run stands

Thin by design: parse and check the arguments before any work, look the target up in the paper
folder's `tables.py`, run it, write its results through `common.reproduction`. Every mistake ends
in one line on stderr and a non-zero exit.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import NoReturn

from common.data import DataError, check_local
from common.hub import HubError, WeightsError, check_hub_repo
from common.reproduction import (NO_TRAINING_DURATION, PRESETS, Context, Target, discard_staging, public_command,
                                 public_source, push_trained, remember_code_state, update_readme, write_results)
from common.runs import RunError, TrainingError
from common.train import OutputError

# paper name → module holding its TARGETS
PAPERS = {"baselines": "common.tables", "adanet": "adanet.tables", "rdinet": "rdinet.tables",
          "dygraph": "dygraph.tables", "adn": "adn.tables", "compare": "reproduce.compare"}
REPO = Path(__file__).resolve().parent.parent
KNOWN_ERRORS = (DataError, RunError, TrainingError, OutputError, HubError, WeightsError)


class UsageError(ValueError):
    """A command line that cannot run; the message says what to change."""


class Parser(argparse.ArgumentParser):
    """argparse that raises one line instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        """Raise the parse error as one UsageError line."""
        raise UsageError(f"{message}. See `{self.prog} --help`.")


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
    path = REPO / paper / "CITATION.bib"
    return path.read_text() if path.exists() else ""


def _fail(message: str, status: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return status


def _readme(argv: list[str]) -> int:
    """`python -m reproduce readme <paper> [--results DIR]`: regenerate a README's results block."""
    parser = Parser(prog="python -m reproduce readme")
    parser.add_argument("paper")
    parser.add_argument("--results", default="results")
    args = parser.parse_args(argv)
    if args.paper not in PAPERS or args.paper == "compare":
        choices = ", ".join(p for p in PAPERS if p != "compare")
        raise UsageError(f"no README results block for {args.paper!r} (the compare tables are results/compare-*.md). "
                         f"Valid choices: {choices}.")
    readme = REPO / ("README.md" if args.paper == "baselines" else f"{args.paper}/README.md")
    paths = sorted(Path(args.results).glob(f"{args.paper}-*.json"))
    if not paths:
        raise UsageError(f"no {args.paper}-*.json results in {args.results}: run a target first or point "
                         f"--results at the folder that holds them.")
    for path in paths:
        try:
            record = json.loads(path.read_text())
            record["cells"], record["provenance"]["command"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise UsageError(f"cannot read results file {path}: {type(error).__name__}: {error}") from None
    update_readme(readme, paths)
    print(f"updated {readme} from {len(paths)} results file(s)")
    return 0


def _eval(argv: list[str]) -> int:
    """`python -m reproduce eval MODEL --weights DIR_OR_HUB_ID [--data-dir DIR] [--out DIR]`."""
    from common.data import build_data
    from common.reproduction import provenance, slug
    from common.train import PRECISIONS, atomic_write_text

    from .evaluation import load_model, markdown, measure, plot_macs_histogram, trained_precision

    parser = Parser(prog="python -m reproduce eval", description="Measure trained weights: accuracy, MACs, latency.")
    parser.add_argument("model", help="PAPER/NAME (e.g. adanet/adanet20), a dotted class, or auto (a run folder)")
    parser.add_argument("--weights", required=True, help="a weights folder (config.json + model.safetensors) or Hub id")
    parser.add_argument("--data-dir", default=None, help="CIFAR-10 folder; default: the packaged 1,000-image test sample")
    parser.add_argument("--out", default="results/eval", help="folder for the JSON, Markdown and histogram")
    parser.add_argument("--no-latency", action="store_true", help="skip the timing")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="auto (default): as the run's recipe trained and evaluated it (bf16 autocast for "
                             "the mini runs; fp32 for weights without a run.json)")
    parser.add_argument("--sample-gates", type=_seed, default=None, metavar="SEED",
                        help="Adanet: also measure with the gates sampled as in training (the authors' test "
                             "time), Gumbel noise drawn from SEED")
    args = parser.parse_args(argv)
    if args.data_dir is not None:
        check_local("cifar10", args.data_dir)
    out = _out_dir(args.out)
    model = load_model(args.model, args.weights)
    precision = trained_precision(args.weights) if args.precision == "auto" else args.precision
    # the test batches of training (common.data's eval batch size): real skipping runs each block on the
    # images of a batch that execute it, so other batches could round a borderline image differently
    data = build_data("cifar10" if args.data_dir else "cifar10-sample", args.data_dir)
    measurements = measure(model, data, latency=not args.no_latency, precision=precision,
                           sample_gates=args.sample_gates)
    label = args.model if args.model != "auto" else f"{type(model).__name__} ({Path(args.weights).name})"
    stem = f"eval-{slug(args.model if args.model != 'auto' else Path(args.weights).name)}"
    ctx = Context("eval", stem, "eval", out, args.data_dir, command=public_command("python -m reproduce eval", argv))
    ctx.data_sources[data.name] = f"{public_source(data.source)} (sha256 {data.fingerprint}, test split)"
    title = f"{label} — {args.weights} on {'CIFAR-10 test' if args.data_dir else 'the packaged CIFAR-10 test sample'}"
    table = markdown(measurements, title)
    record = {"model": args.model, "weights": args.weights, "class": f"{type(model).__module__}.{type(model).__name__}",
              "measurements": [m.summary() for m in measurements], "provenance": provenance(ctx)}
    atomic_write_text(json.dumps(record, indent=2) + "\n", out / f"{stem}.json")
    atomic_write_text(table, out / f"{stem}.md")
    plot_macs_histogram(measurements, label, out / f"{stem}-macs.png")
    print(table)
    print(f"wrote {out / (stem + '.json')}, {stem}.md and {stem}-macs.png")
    return 0


def presets_line(target: Target) -> str:
    """Per preset: the dataset the target trains on and a rough wall time."""
    if not target.data:
        return f"trains nothing on any preset: {NO_TRAINING_DURATION}"
    # presets it runs without training; mini (CIFAR-10 only) is refused by targets that train on ImageNet
    idle = [preset for preset in PRESETS if preset not in target.data and preset != "mini"]
    parts = [f"{', '.join(idle)}: trains nothing, {NO_TRAINING_DURATION}"] if idle else []
    parts += [f"{preset}: {target.data[preset]}, {target.duration(preset)}" for preset in PRESETS
              if preset in target.data]
    return " · ".join(parts)


def _list(argv: list[str]) -> int:
    if argv:
        raise UsageError(f"`list` takes no arguments; got {' '.join(argv)}.")
    print("Per preset: the dataset a target trains on and a rough wall time (per row: each row it trains; a "
          "finished run is reused).\n")
    for paper, found in all_targets().items():
        for name, target in found.items():
            print(f"{paper:10s} {name:22s} {target.title}\n{'':33s} {presets_line(target)}")
    return 0


def _out_dir(value: str) -> Path:
    """--out: an existing or creatable writable directory."""
    if not value.strip():
        raise UsageError("--out is empty: give a folder for the results, e.g. --out results.")
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {value} is a file, not a folder: give a folder for the results.")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"--out {value}: cannot create the folder ({error.strerror or error}).") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"--out {value} is not writable: choose a folder you can write to.")
    return path


def _seed(value: str) -> int:
    try:
        seed = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number from 0 to 4294967295") from None
    if not 0 <= seed < 2**32:
        raise argparse.ArgumentTypeError(f"{seed} is outside 0 … 4294967295")
    return seed


def threads_arg(value: str) -> int:
    """`--threads N`: a whole number ≥ 1 (argparse type)."""
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"--threads {value!r} is not a whole number ≥ 1")
    return int(value)


def set_threads(threads: int | None) -> None:
    """torch's intra-op CPU threads for this process (None: leave torch's default, one per core)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _run_parser() -> Parser:
    parser = Parser(prog="python -m reproduce", description="Run one table or figure.")
    parser.add_argument("paper", help=f"one of: {', '.join(PAPERS)}")
    parser.add_argument("target", help="a target of that paper (`python -m reproduce list`)")
    parser.add_argument("--preset", default="smoke",
                        help="smoke: CPU minutes on the packaged sample; mini: CPU, full CIFAR-10 at ResNet-20 "
                             "depth; short: one GPU, shortened schedule; paper: the paper's recipe "
                             "(`python -m reproduce list`: rough times per target)")
    parser.add_argument("--out", default="results", help="folder for the JSON, Markdown, figures and runs")
    parser.add_argument("--data-dir", default=None,
                        help="local dataset folder (parquet in the Hub layout or image folder); not on smoke")
    parser.add_argument("--resume", action="store_true", help="continue each unfinished run from its last checkpoint")
    parser.add_argument("--restart", action="store_true", help="start each unfinished run over")
    parser.add_argument("--seed", type=_seed, default=0, help="0 … 2^32−1 (default 0)")
    parser.add_argument("--push-to-hub", default=None, metavar="REPO",
                        help="upload every trained row's weights + card as REPO-<row> (needs a token)")
    parser.add_argument("--private", action="store_true", help="with --push-to-hub: create private repos")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile every trained row (where its step has fixed shapes), or none; default: as "
                             "each recipe says. Part of the run key: a different choice trains new runs instead "
                             "of reusing finished ones")
    parser.add_argument("--tensorboard", action="store_true",
                        help="log every trained row's epochs to TensorBoard in its run folder (not part of the run "
                             "key); needs the tensorboard package")
    parser.add_argument("--threads", type=threads_arg, default=None,
                        help="torch CPU threads (default: one per core). On a CPU, K runs side by side with "
                             "--threads cores/K train faster in all than one at a time; a run resumes only with "
                             "the thread count it started with (it changes the arithmetic)")
    return parser


def _tensorboard_installed() -> bool:
    """Whether accelerate finds a TensorBoard writer (without one it would log nothing, silently)."""
    from accelerate.utils import is_tensorboard_available

    return is_tensorboard_available()


def _check(args: argparse.Namespace, target: Target) -> None:
    """Everything that can be checked before any work starts."""
    if args.resume and args.restart:
        raise UsageError("--resume and --restart exclude each other: continue the unfinished runs or start them over.")
    reads = target.data.get(args.preset)
    if args.preset == "mini" and target.data and reads is None:
        raise UsageError(f"{target.paper} {target.name} has no mini preset (mini trains the CIFAR-10 targets at "
                         f"ResNet-20 depth): choose --preset {' or '.join(['smoke', *target.data])}.")
    if args.data_dir is not None:
        if args.preset == "smoke":
            reading = [preset for preset in target.data if preset != "smoke"]
            choice = f", or choose --preset {' or '.join(reading)}" if reading else ""
            raise UsageError("--data-dir is not read by the smoke preset (it trains on the packaged sample): "
                             f"drop it{choice}.")
        if reads is None:
            raise UsageError(f"{target.paper} {target.name} reads no dataset on preset {args.preset}: drop --data-dir.")
        check_local(reads, args.data_dir)
    if args.tensorboard and not _tensorboard_installed():
        raise UsageError("--tensorboard needs the tensorboard package: `pip install tensorboard` "
                         "(or `uv run --extra tensorboard ...`), or drop --tensorboard.")
    if args.private and not args.push_to_hub:
        raise UsageError("--private goes with --push-to-hub REPO.")
    if args.push_to_hub:
        if reads is None:
            raise UsageError(f"{target.paper} {target.name} trains nothing on preset {args.preset}, so there is "
                             f"nothing to push: drop --push-to-hub.")
        if args.preset == "smoke":
            raise UsageError("smoke weights (a few steps on the packaged sample) are not pushed: use --preset short "
                             "or paper with --push-to-hub.")
        check_hub_repo(args.push_to_hub)


def _interrupted(signum, frame):
    raise KeyboardInterrupt


def _run(argv: list[str]) -> int:
    args = _run_parser().parse_args(argv)
    if args.paper not in PAPERS:
        raise UsageError(f"unknown paper {args.paper!r}. Valid choices: {', '.join(PAPERS)}.")
    if args.preset not in PRESETS:
        raise UsageError(f"unknown preset {args.preset!r}. Valid choices: {', '.join(PRESETS)}.")
    found = targets(args.paper)
    if args.target not in found:
        raise UsageError(f"unknown target {args.target!r} for {args.paper}. Valid choices: {', '.join(found) or 'none yet'}.")
    target = found[args.target]
    _check(args, target)
    set_threads(args.threads)
    out = _out_dir(args.out)
    ctx = Context(args.paper, args.target, args.preset, out, args.data_dir, args.resume, args.seed,
                  args.push_to_hub, args.restart, compile=args.compile, tensorboard=args.tensorboard,
                  command=public_command("python -m reproduce", argv))
    from common.train import process_state

    try:
        cells = target.run(ctx)
        if not process_state().is_main_process:  # under `accelerate launch`, one process writes
            return 0
        json_path, md_path = write_results(ctx, target, cells)
    finally:
        discard_staging(ctx)  # the figures of a target that stopped, or of the processes that do not write
    print(md_path.read_text())
    print(f"wrote {json_path} and {md_path}")
    if args.push_to_hub:
        for repo_id in push_trained(ctx, json_path, _bibtex(args.paper), private=args.private):
            print(f"pushed {repo_id}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip() + "\n\nPapers: " + ", ".join(PAPERS) + ". Options of a run:\n")
        print(_run_parser().format_help().split("options:", 1)[-1].rstrip())
        return 0
    previous = signal.signal(signal.SIGTERM, _interrupted)
    remember_code_state()
    try:
        if argv[0] == "readme":
            return _readme(argv[1:])
        if argv[0] == "list":
            return _list(argv[1:])
        if argv[0] == "eval":
            return _eval(argv[1:])
        if argv[0] == "campaign":
            from .campaign import main as campaign
            return campaign(argv[1:], Parser)
        if argv[0] == "demo":
            from .demo import main as demo
            return demo(argv[1:], Parser)
        if argv[0] == "models":
            from .models import main as models
            return models(argv[1:])
        if argv[0] == "compare" and (len(argv) == 1 or argv[1].startswith("-")):
            argv = ["compare", "methods", *argv[1:]]  # `compare --preset mini`: the methods table
        if argv[0] == "compare-latency":
            return _run(["compare", "latency", *argv[1:]])
        return _run(argv)
    except UsageError as error:
        return _fail(str(error))
    except KNOWN_ERRORS as error:
        return _fail(str(error))
    except OSError as error:  # a file the run had to write or read: name it
        where = f"{error.filename}: " if error.filename else ""
        return _fail(f"{where}{error.strerror or error}")
    except KeyboardInterrupt:
        from common import runs

        run = runs.in_training
        done = runs.epochs_done(run) if run is not None else 0
        if run is None:
            where = ""
        elif done:
            where = f" after epoch {done} of {run}"
        else:
            where = f" before the first epoch of {run} finished"
        return _fail(f"interrupted{where}; finished runs are kept: rerun with --resume to continue.", 130)
    finally:
        signal.signal(signal.SIGTERM, previous)
