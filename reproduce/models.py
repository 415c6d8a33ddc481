"""`python -m reproduce models [PATTERN]`: every model of every paper, its size and cost, its pretrained tags.

    python -m reproduce models                 every name with its class, input size and pretrained tags
    python -m reproduce models 'adanet/*'      the same for the matching models, with parameters and MACs
    python -m reproduce models resnet20        a plain word matches every name that contains it

Models come from each paper's `list_models()` / `model_spec()` (what `create_model` builds) and the
static baselines of `common.backbones`. Parameters and MACs (one image at the model's input size,
`common.metrics`, in the model's default mode: every gated branch computed) are counted only for the
models a PATTERN selects, since building and counting all of them takes minutes on a CPU.
"""
from __future__ import annotations

import fnmatch
import importlib
from dataclasses import dataclass

from torch import nn

from common.backbones import input_size, list_backbones
from common.hub import TAGS, HubBackbone, build_model, pretrained_tags
from common.train import _BAR_INTERVAL

# paper → the module holding its list_models() and model_spec()
SOURCES = {"adanet": "adanet.model", "rdinet": "rdinet", "dygraph": "dygraph", "adn": "adn.model"}


@dataclass
class Entry:
    """One model: the name `create_model` takes, the class and arguments it builds."""
    paper: str
    name: str
    cls: type[nn.Module]
    args: dict

    @property
    def key(self) -> str:
        """PAPER/NAME, as PATTERN matches it."""
        return f"{self.paper}/{self.name}"

    @property
    def input_size(self) -> tuple[int, int, int]:
        """The (C, H, W) the model is counted at: its backbone's (RandWire: ImageNet's 224)."""
        backbone = self.args.get("backbone", self.args.get("name"))
        return input_size(backbone) if backbone else (3, 224, 224)

    def build(self) -> nn.Module:
        """The model, freshly initialised."""
        return build_model(self.cls, self.args, self.name)


def all_models() -> list[Entry]:
    """Every model of every paper, then the static baselines."""
    found = []
    for paper, module_name in SOURCES.items():
        module = importlib.import_module(module_name)
        found += [Entry(paper, name, *module.model_spec(name)) for name in module.list_models()]
    found += [Entry("baselines", name, HubBackbone, {"name": name}) for name in list_backbones()]
    return found


def select(entries: list[Entry], pattern: str | None) -> list[Entry]:
    """Entries whose PAPER/NAME or NAME matches the glob `pattern` (a plain word: contains it)."""
    if pattern is None:
        return entries
    glob = pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"
    return [e for e in entries if fnmatch.fnmatchcase(e.key, glob) or fnmatch.fnmatchcase(e.name, glob)]


def count(entry: Entry) -> tuple[int, int]:
    """(parameters, MACs of one image at the input size) of a freshly built model."""
    from common.metrics import count_params, model_macs

    model = entry.build()
    return count_params(model), model_macs(model, entry.input_size)


def table(entries: list[Entry], counts: dict[str, tuple[int, int]]) -> str:
    """A Markdown table: paper, model, class, input, params, MACs, tags."""
    lines = ["| Paper | Model | Class | Input | Params (M) | GMACs | Pretrained |",
             "|---|---|---|---|---:|---:|---|"]
    for entry in entries:
        params, macs = counts.get(entry.key, (None, None))
        tags = ", ".join(pretrained_tags(entry.cls, entry.args, entry.name)) or "—"
        size = "×".join(str(d) for d in entry.input_size)
        lines.append(f"| {entry.paper} | {entry.name} | {entry.cls.__name__} | {size} | "
                     f"{'—' if params is None else f'{params / 1e6:.2f}'} | "
                     f"{'—' if macs is None else f'{macs / 1e9:.3f}'} | {tags} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Print the table of the models PATTERN selects (all without PATTERN, uncounted)."""
    from tqdm.auto import tqdm

    from .cli import Parser, UsageError

    parser = Parser(prog="python -m reproduce models", description="Every model with params, MACs and pretrained tags.")
    parser.add_argument("pattern", nargs="?", default=None,
                        help="glob over PAPER/NAME or NAME (e.g. 'adanet/*', '*_adn'); a plain word: names containing it")
    args = parser.parse_args(argv)
    entries = all_models()
    chosen = select(entries, args.pattern)
    if not chosen:
        papers = ", ".join(dict.fromkeys(e.paper for e in entries))
        raise UsageError(f"no model matches {args.pattern!r}: try a paper ('adanet/*'; papers: {papers}) or a part "
                         f"of a name; `python -m reproduce models` lists them all.")
    counts = {}
    if args.pattern is not None:
        for entry in tqdm(chosen, desc="counting", leave=False, mininterval=_BAR_INTERVAL, delay=2.0):
            counts[entry.key] = count(entry)
    print(table(chosen, counts))
    if args.pattern is None:
        print(f"\n{len(chosen)} models. Give a PATTERN (e.g. 'adanet/*') to count their parameters and MACs. "
              f"Pretrained tags: {', '.join(TAGS)}; load with create_model(name, pretrained=TAG).")
    return 0
