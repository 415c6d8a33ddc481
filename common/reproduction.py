"""Reproduction targets: one per table or figure, their presets, and the results they write.

A paper folder's `tables.py` holds the paper's numbers and a `TARGETS` dict of `Target`s. The
`reproduce` CLI finds a target, builds a `Context` and calls `target.run(ctx)`, which returns the
table's `Cell`s; `write_results` writes `<paper>-<target>-<preset>.json` (cells + provenance) and a
Markdown table beside it. Nothing printed as "ours" is typed in: every such value comes from `run`.
"""
from __future__ import annotations

import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

from .data import DataBundle, build_data
from .runs import ModelSpec, Run, RunBusy, stand_in
from .runs import train as train_run
from .train import Method, TrainConfig, atomic_write_text

PRESETS = ("smoke", "mini", "short", "paper")
# The `mini` preset: ONE recipe for every row of every paper, on the full CIFAR-10 at CIFAR ResNet-20
# depth, sized for minutes per model on a 2-core CPU (bf16 autocast: measured faster there, README).
MINI_RECIPE = TrainConfig(epochs=60, batch_size=64, lr=0.1, schedule="cosine", warmup_epochs=1, nesterov=True,
                          weight_decay=5e-4, milestones=(), precision="bf16", compile=True)
MINI_DEPTH = 20
REPO_ROOT = Path(__file__).resolve().parent.parent
WEIGHTS_DIR = REPO_ROOT / "weights"  # finished runs committed with the repository, one folder per preset


@dataclass
class Cell:
    """One cell of a table: our value beside the paper's (None where one side has no number)."""
    row: str
    column: str
    paper: float | None
    ours: float | None
    unit: str
    comparable: bool = True   # False: e.g. accuracy from the smoke preset's tiny sample
    note: str = ""
    timing: bool = False      # a wall-clock measurement: the one kind of cell a rerun does not repeat exactly


@dataclass
class Context:
    """What a target's run needs: preset, folders, seed, and a place to record provenance."""
    paper: str
    target: str
    preset: str
    out_dir: Path
    data_dir: str | None = None
    resume: bool = False
    seed: int = 0
    push_to_hub: str | None = None
    restart: bool = False
    deadline: float | None = None  # `reproduce campaign --budget-minutes`: no run starts after it
    wait_busy: bool = True         # False (`reproduce campaign`): a run another process trains gets a stand-in
    compile: bool | None = None    # --compile / --no-compile: every trained row compiles, or none; None: its recipe's
    tensorboard: bool = False      # --tensorboard: every trained row logs to TensorBoard in its run folder
    command: str = ""
    data_sources: dict[str, str] = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    runs: dict[str, Run] = field(default_factory=dict)  # row → its run; pushed with --push-to-hub
    stand_ins: list[str] = field(default_factory=list)  # rows whose run was busy: the cells are not results
    started: float = field(default_factory=time.time)

    @property
    def stem(self) -> str:
        """`<paper>-<target>-<preset>`: the name of the target's results files."""
        return f"{self.paper}-{self.target}-{self.preset}"

    @property
    def full_training(self) -> bool:
        """Whether this preset trains with the paper's full recipe; values that depend on training
        under any other preset are marked not comparable (†)."""
        return self.preset == "paper"

    @property
    def runs_root(self) -> Path:
        """Where run folders live, shared by every target writing to the same --out."""
        return self.out_dir / "runs"

    def train(self, row: str, spec: ModelSpec, data: DataBundle, config: TrainConfig,
              method: Method | None = None) -> Run:
        """The row's run through `common.runs.train` (reused when finished), with the context's --compile and
        --tensorboard applied to `config`; recorded for results and the Hub. With `wait_busy=False`, a run
        another process is training returns its untrained stand-in at once, and the row is listed in
        `stand_ins`: the target goes on to train its later rows, and its cells must not be written."""
        config = replace(config, compile=config.compile if self.compile is None else self.compile,
                         tensorboard=config.tensorboard or self.tensorboard)
        method = method or Method()
        try:
            run = train_run(row, spec, data, config, method, self.runs_root, seed=self.seed,
                            resume=self.resume, restart=self.restart, requested_by={"target": self.stem},
                            shared=(WEIGHTS_DIR / self.preset,), deadline=self.deadline,
                            wait=self.wait_busy)
        except RunBusy as busy:
            print(f"{busy}; going on with the next rows")
            self.stand_ins.append(row)
            return stand_in(spec, data, config, method)
        self.runs[row] = run
        return run

    @property
    def staging(self) -> Path:
        """This process's folder for figures until `write_results` moves them next to the JSON: a target
        that stops before its results are written (or computes on stand-ins) leaves no figure in --out."""
        return self.out_dir / f".staging-{os.getpid()}"

    def figure_path(self, name: str) -> Path:
        """Where to save a PNG that `write_results` puts next to the JSON; recorded in the results."""
        path = self.staging / f"{self.stem}-{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.figures.append(path.name)
        return path

    def data(self, name: str = "cifar10", batch_size: int = 128, **limits) -> DataBundle:
        """The preset's data: the packaged CIFAR-10 sample on smoke, else `name` from --data-dir/Hub."""
        dataset = "cifar10-sample" if self.preset == "smoke" and name.startswith("cifar10") else name
        bundle = build_data(dataset, self.data_dir, batch_size=batch_size, **limits)
        self.data_sources[dataset] = f"{public_source(bundle.source)} (sha256 {bundle.fingerprint})"
        return bundle


def public_command(prefix: str, argv: list[str]) -> str:
    """The command as results and model cards show it: a local --data-dir folder becomes DATA_DIR."""
    shown = list(argv)
    for index, arg in enumerate(shown):
        if arg == "--data-dir" and index + 1 < len(shown):
            shown[index + 1] = "DATA_DIR"
        elif arg.startswith("--data-dir="):
            shown[index] = "--data-dir=DATA_DIR"
    return f"{prefix} {shlex.join(shown)}".strip()


def public_source(source: str) -> str:
    """A data source as results show it: repository-relative, a Hub id, or DATA_DIR for another local folder."""
    path = Path(source)
    if not (path.is_absolute() or source.startswith(".")):
        return source  # a Hub dataset id
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return "DATA_DIR"


@dataclass
class Target:
    """A table or figure of a paper (or one of ours) that `python -m reproduce` can run."""
    paper: str
    name: str
    title: str
    run: Callable[[Context], list[Cell]]
    data: dict[str, str] = field(default_factory=dict)  # preset → the dataset it trains on (none: trains nothing)

    def duration(self, preset: str) -> str:
        """A rough wall time of this target on `preset`, for `python -m reproduce list`."""
        if preset not in self.data:
            return NO_TRAINING_DURATION
        return (CIFAR10_DURATIONS if self.data[preset] == "cifar10" else DURATIONS)[preset]


def slug(text: str) -> str:
    """A file-name-safe version of a row label."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-").lower() or "row"


# What each kind of target trains on, per preset (`Target.data`).
CIFAR10 = {"smoke": "cifar10-sample", "mini": "cifar10", "short": "cifar10", "paper": "cifar10"}

# Rough wall times (`Target.duration`). smoke: the committed smoke results took up to 3 min on 2 CPU
# cores; mini: 60 epochs of 50,000 images at ≈350–1,200 images/s on 2 cores (README); short and paper:
# 16–40 and 100–350 epochs on one GPU, hours per model on ImageNet, minutes (short) on CIFAR-10.
DURATIONS = {"smoke": "≤ 3 min CPU", "mini": "≈40 min–2.5 h CPU per row", "short": "GPU hours per row",
             "paper": "GPU days per row"}
CIFAR10_DURATIONS = {**DURATIONS, "short": "GPU minutes per row", "paper": "GPU hours per row"}
NO_TRAINING_DURATION = "seconds–minutes"  # a target, or a preset of one, that trains nothing


def push_trained(ctx: Context, json_path: Path, bibtex: str = "", private: bool = False) -> list[str]:
    """--push-to-hub REPO: upload each trained row's weights (Hub layout) with a model card, as REPO-<row>."""
    from .hub import upload_run

    results = json.loads(Path(json_path).read_text())
    return [upload_run(run.directory, ctx.out_dir / "hub" / slug(row), results, row, f"{ctx.push_to_hub}-{slug(row)}",
                       bibtex, private=private) for row, run in ctx.runs.items()]


def _git(*args: str) -> str | None:
    """git's output in the repository, or None where git or the repository is missing."""
    try:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def device_description() -> str:
    """The accelerator (or CPU) the run used, in words."""
    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)} ×{torch.cuda.device_count()}"
    return (f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"{torch.get_num_threads()} torch threads")


_code_at_start: tuple[str | None, bool | None] | None = None


# what runs and benchmarks write, and prose: changing these does not change what the code computes
NOT_CODE = (":!results", ":!weights", ":!benchmarks/*.json", ":!*.md")


def code_state() -> tuple[str | None, bool | None]:
    """(HEAD, whether tracked code differs from it) now; results, weights and prose do not count. None: no git."""
    changes = _git("status", "--porcelain", "--untracked-files=no", "--", ".", *NOT_CODE)
    return _git("rev-parse", "HEAD") or None, None if changes is None else bool(changes)


def remember_code_state() -> None:
    """Record the code this process runs (the CLI does it first): results name that commit, not a later one."""
    global _code_at_start
    if _code_at_start is None:
        _code_at_start = code_state()


MALLOC_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")  # glibc's; CPU timings move by up to 1.7× with them


def process_record(command: str | None = None) -> dict:
    """Command, commit, dirty flag, device, library versions and malloc variables of this process."""
    import accelerate
    import torchvision

    now = code_state()
    start = _code_at_start or now
    commit, dirty = start
    if now != start and dirty is not None:
        dirty = True  # the code changed while this process ran (a campaign runs for hours): not one commit's result
    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "torchvision": torchvision.__version__, "accelerate": accelerate.__version__}
    # dirty: tracked code differed from the commit, or moved while the process ran; None: no git
    return {"command": command or " ".join(["python", *sys.argv]), "commit": commit, "dirty": dirty,
            "device": device_description(), "versions": versions,
            "malloc_env": {name: os.environ.get(name) for name in MALLOC_VARIABLES}}


def provenance(ctx: Context) -> dict:
    """The process record, plus seed, data, wall time and when the result was written."""
    return {**process_record(ctx.command or " ".join(sys.argv)), "seed": ctx.seed, "data": ctx.data_sources,
            "wall_time_s": round(time.time() - ctx.started, 1),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"


PRESET_NOTES = {
    "smoke": "a few training steps on the packaged CIFAR-10 sample",
    "mini": "CIFAR ResNet-20 depth and one shared CPU recipe, not the paper's",
    "short": "a shortened schedule, not the paper's",
    "paper": "the paper's recipe, but a value the paper's setting does not match",
}


def footnote(preset: str | None) -> str:
    """The table's legend, naming the preset whose training the † cells depend on."""
    why = f"it depends on training that the `{preset}` preset cuts short ({PRESET_NOTES[preset]})" \
        if preset in PRESET_NOTES and preset != "paper" else "see the cell's note"
    return f"Each cell: ours (paper). — : no number. † : not comparable to the paper: {why}."


def markdown_table(cells: list[Cell], title: str = "", preset: str | None = None) -> str:
    """Rows × columns, each cell 'ours (paper)', with not-comparable cells marked † (never an empty one)."""
    rows = list(dict.fromkeys(c.row for c in cells))
    columns = list(dict.fromkeys(c.column for c in cells))
    units = {c.column: c.unit for c in cells}
    lookup = {(c.row, c.column): c for c in cells}
    header = "| | " + " | ".join(f"{col} ({units[col]})" if units[col] else col for col in columns) + " |"
    lines = [f"### {title}", ""] if title else []
    lines += [header, "|" + "---|" * (len(columns) + 1)]
    for row in rows:
        entries = []
        for col in columns:
            cell = lookup.get((row, col))
            if cell is None:
                entries.append("")
                continue
            mark = "" if cell.comparable or cell.ours is None else "†"
            entries.append(f"{_fmt(cell.ours)}{mark} ({_fmt(cell.paper)})")
        lines.append(f"| {row} | " + " | ".join(entries) + " |")
    lines += ["", footnote(preset)]
    notes = note_lines(cells)
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines) + "\n"


def note_lines(cells: list[Cell]) -> list[str]:
    """One line per distinct (column, note), naming its rows, or 'every row' where all rows of the column share it."""
    rows_of_column: dict[str, list[str]] = {}
    noted: dict[tuple[str, str], list[str]] = {}
    for cell in cells:
        rows_of_column.setdefault(cell.column, []).append(cell.row)
        if cell.note:
            noted.setdefault((cell.column, cell.note), []).append(cell.row)
    lines = []
    for (column, note), rows in noted.items():
        rows = list(dict.fromkeys(rows))
        every = len(rows) > 1 and rows == list(dict.fromkeys(rows_of_column[column]))
        lines.append(f"- {'every row' if every else '; '.join(rows)} / {column}: {note}")
    return lines


def wrap_to_width(text: str, width_of: Callable[[str], float], width: float) -> list[str]:
    """`text` in lines of whole words, each no wider than `width` by `width_of` (a word wider than that stands alone)."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and width_of(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def stamp_figure(path: Path, preset: str) -> None:
    """Write the preset under a figure (and that its numbers are not the paper's unless it is `paper`)."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.open(path).convert("RGB")
    text = f"dynnets · preset {preset}" + ("" if preset == "paper" else
                                            f" · not comparable to the paper: {PRESET_NOTES.get(preset, preset)}")
    font = ImageFont.load_default(size=max(11, image.width // 90))
    measure = ImageDraw.Draw(image)
    lines = wrap_to_width(text, lambda line: measure.textlength(line, font=font), image.width - 12)
    strip = Image.new("RGB", (image.width, (font.size + 4) * len(lines) + 6), "white")
    draw = ImageDraw.Draw(strip)
    for index, line in enumerate(lines):
        draw.text((6, 4 + (font.size + 4) * index), line, fill=(90, 90, 90), font=font)
    stamped = Image.new("RGB", (image.width, image.height + strip.height), "white")
    stamped.paste(image, (0, 0))
    stamped.paste(strip, (0, image.height))
    stamped.save(path)


def write_results(ctx: Context, target: Target, cells: list[Cell]) -> tuple[Path, Path]:
    """Write `<stem>.json` (cells + provenance) and `<stem>.md`; return both paths."""
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    record = {"paper": ctx.paper, "target": ctx.target, "title": target.title, "preset": ctx.preset,
              "cells": [asdict(c) for c in cells], "figures": ctx.figures, "extra": ctx.extra,
              "runs": {row: {"key": run.key, "folder": run.directory.name, "reused": run.reused}
                       for row, run in ctx.runs.items()},
              "provenance": provenance(ctx)}
    json_path, md_path = ctx.out_dir / f"{ctx.stem}.json", ctx.out_dir / f"{ctx.stem}.md"
    atomic_write_text(json.dumps(record, indent=2, default=str) + "\n", json_path)
    atomic_write_text(markdown_table(cells, f"{target.title} — preset {ctx.preset}", ctx.preset), md_path)
    for name in ctx.figures:
        os.replace(ctx.staging / name, ctx.out_dir / name)
        stamp_figure(ctx.out_dir / name, ctx.preset)
    discard_staging(ctx)
    return json_path, md_path


def discard_staging(ctx: Context) -> None:
    """Remove the figures a target staged but did not write (it stopped, or computed on stand-ins)."""
    if ctx.staging.exists():
        shutil.rmtree(ctx.staging)


RESULTS_START, RESULTS_END = "<!-- results:start -->", "<!-- results:end -->"


def render_results(json_paths: list[Path]) -> str:
    """Markdown tables (and provenance lines) generated from results JSON files."""
    blocks = []
    for path in sorted(json_paths):
        record = json.loads(Path(path).read_text())
        prov = record["provenance"]
        cells = [Cell(**c) for c in record["cells"]]
        blocks.append(markdown_table(cells, f"{record['title']} — preset `{record['preset']}`", record["preset"])
                      + f"\n_From `{Path(path).name}`: `{prov['command']}` at commit "
                        f"`{(prov['commit'] or 'none')[:10]}`{' (dirty)' if prov['dirty'] else ''}, "
                        f"{prov['device']}, {prov['finished']}._\n")
    return "\n".join(blocks) if blocks else "_No results committed yet._\n"


def update_readme(readme: Path, json_paths: list[Path]) -> None:
    """Replace the block between the results markers of a README with tables from the JSON files."""
    text = Path(readme).read_text()
    if RESULTS_START not in text or RESULTS_END not in text:
        raise ValueError(f"{readme} has no '{RESULTS_START}' … '{RESULTS_END}' block to fill.")
    head, rest = text.split(RESULTS_START, 1)
    _, tail = rest.split(RESULTS_END, 1)
    Path(readme).write_text(f"{head}{RESULTS_START}\n{render_results(json_paths)}{RESULTS_END}{tail}")
