"""Weights on the Hugging Face Hub: strict safetensors loading, model cards from results JSON.

Every model class mixes in `HubModel` (a `PyTorchModelHubMixin`): `save_pretrained(dir)` writes
`model.safetensors` + `config.json` (the constructor's arguments), `Model.from_pretrained(dir or
hub id)` rebuilds and loads it. Unlike the mixin's default, loading is always strict: a missing or
unexpected key, a wrong shape or a truncated file stops with a `WeightsError` saying which.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from .backbones import create_backbone

if TYPE_CHECKING:
    from typing import Self  # Python ≥ 3.11; annotations are not evaluated at run time


class WeightsError(RuntimeError):
    """Weights that do not fit the model or cannot be read."""


class PretrainedError(WeightsError, ValueError):
    """`pretrained=` names weights that do not exist or belong to another model (a ValueError, as in timm)."""


class HubError(RuntimeError):
    """A push to the Hub that cannot happen (bad repo id, no token, offline); the message says what to do."""


def check_hub_repo(repo_id: str) -> None:
    """Before any training: the repo id is valid, a token is there, and the Hub answers to it."""
    from huggingface_hub import HfApi, constants, get_token
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(f"{repo_id}-row")
    except HFValidationError:
        raise HubError(f"--push-to-hub {repo_id!r} is not a valid repo id: use NAMESPACE/NAME with letters, digits, "
                       f"'-', '_' and '.' (each trained row is pushed as NAMESPACE/NAME-<row>).") from None
    if "/" not in repo_id:
        raise HubError(f"--push-to-hub {repo_id!r} has no namespace: use YOUR_USER_OR_ORG/{repo_id}.")
    if constants.HF_HUB_OFFLINE:
        raise HubError("--push-to-hub cannot work with HF_HUB_OFFLINE set: unset it where you have network.")
    token = get_token()
    if not token:
        raise HubError("--push-to-hub needs a Hugging Face token: set HF_TOKEN or run `huggingface-cli login`.")
    try:
        HfApi().whoami(token=token)
    except Exception as error:  # noqa: BLE001 — any failure here means: the Hub does not accept this token now
        raise HubError(f"--push-to-hub: the Hub did not accept the token ({type(error).__name__}: "
                       f"{str(error).splitlines()[0] if str(error) else 'no answer'}); check the network and HF_TOKEN.") from None


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load `state` into `model`; any missing, extra or mis-shaped key is an error naming it."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in set(own) & set(state) if own[k].shape != state[k].shape]
    if missing or extra or shapes:
        parts = [f"{len(missing)} missing (e.g. {', '.join(missing[:3])})" if missing else "",
                 f"{len(extra)} unexpected (e.g. {', '.join(extra[:3])})" if extra else "",
                 f"{len(shapes)} mis-shaped ({'; '.join(shapes[:2])})" if shapes else ""]
        raise WeightsError(f"Weights in {source} do not fit {type(model).__name__}: "
                           + ", ".join(p for p in parts if p)
                           + ". Check that the model name and its config match the checkpoint.")
    dtypes = [f"{k} ({state[k].dtype} vs {own[k].dtype})" for k in own if state[k].dtype != own[k].dtype]
    if dtypes:
        raise WeightsError(f"Weights in {source} have other dtypes than {type(model).__name__}: {', '.join(dtypes[:3])}"
                           f"{f' and {len(dtypes) - 3} more' if len(dtypes) > 3 else ''}; save them in the model's dtype.")
    broken = [k for k, t in state.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if broken:
        raise WeightsError(f"Weights in {source} hold NaN or infinite values in {len(broken)} tensor(s) "
                           f"(e.g. {', '.join(broken[:3])}): the checkpoint is broken.")
    model.load_state_dict(state, strict=True)


def _check_local_weights(folder: Path, cls: type) -> None:
    """A local weights folder has model.safetensors and a config.json whose fields `cls` takes."""
    import inspect

    if not (folder / "model.safetensors").is_file():
        found = sorted(p.name for p in folder.iterdir())[:8]
        raise WeightsError(f"{folder} has no model.safetensors (found: {', '.join(found) or 'nothing'}); "
                           f"point at a folder written by save_pretrained.")
    config_file = folder / "config.json"
    if not config_file.is_file():
        return
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as error:
        raise WeightsError(f"{config_file} is not valid JSON ({error}).") from None
    if not isinstance(config, dict):
        raise WeightsError(f"{config_file} must hold a JSON object of {cls.__name__}'s arguments.")
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(config) - accepted)
    if unknown:
        raise WeightsError(f"{config_file}: field {unknown[0]!r} is not an argument of {cls.__name__} "
                           f"(valid: {', '.join(sorted(accepted))}){_saved_class_hint(folder, cls)}.")


def _saved_class_hint(folder: Path, cls: type) -> str:
    """A hint when the folder's run record (run.json) names another class than `cls`, else ''."""
    record = folder / "run.json"
    if not record.is_file():
        return ""
    try:
        saved = json.loads(record.read_text()).get("class", "")
    except (OSError, ValueError, AttributeError):
        return ""
    if not saved or saved.rpartition(".")[2] == cls.__name__:
        return ""
    return f"; run.json says these weights are {saved}: give MODEL auto"


class HubModel(PyTorchModelHubMixin):
    """`PyTorchModelHubMixin` with strict, clearly failing loads."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, *args, **kwargs) -> Self:
        """Load from a local folder or a Hub id; a missing folder, file or field is a `WeightsError` naming it."""
        source = pretrained_model_name_or_path = strip_hub_prefix(pretrained_model_name_or_path)
        folder = Path(source).expanduser()
        if folder.is_dir():
            _check_local_weights(folder, cls)
        elif folder.exists() or source.startswith((".", "/", "~")) or source.count("/") > 1:
            raise WeightsError(f"No weights folder {source}: the path does not exist (or is a file).")
        try:
            with quiet_hub_retries():
                return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except TypeError as error:  # a config field the constructor does not take, or a wrong type
            raise WeightsError(f"The config of {source} does not fit {cls.__name__}: {error}.") from None
        except (OSError, ValueError) as error:  # not a folder and not reachable on the Hub
            if isinstance(error, WeightsError):
                raise
            raise WeightsError(f"{source} is neither a local weights folder nor reachable on the Hub "
                               f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}).") from None

    @classmethod
    def _load_as_safetensor(cls, model, model_file: str, map_location: str, strict: bool):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(model_file, device=str(map_location))
        except (SafetensorError, OSError) as error:
            raise WeightsError(f"Cannot read {model_file}: {error}. The file is truncated or not "
                               f"safetensors; download it again.") from None
        load_state_strict(model, state, model_file)
        model.eval()
        return model

    @classmethod
    def _load_as_pickle(cls, model, model_file: str, map_location: str, strict: bool):
        raise WeightsError(f"{model_file} is a pickle checkpoint; dynnets loads only model.safetensors.")


class HubBackbone(nn.Module, HubModel, library_name="dynnets", tags=["dynnets"], license="mit"):
    """A plain backbone from `common.backbones` (the static baselines) that saves to the Hub."""

    def __init__(self, name: str = "resnet20_cifar", num_classes: int | None = None, in_chans: int = 3):
        super().__init__()
        self.net = create_backbone(name, num_classes, in_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


DATASET_IDS = {"cifar10": ("uoft-cs/cifar10", "CIFAR-10"), "cifar100": ("uoft-cs/cifar100", "CIFAR-100"),
               "fashion_mnist": ("zalando-datasets/fashion_mnist", "Fashion-MNIST"),
               "imagenet": ("ILSVRC/imagenet-1k", "ImageNet-1k")}


def row_top1(results: dict, row: str) -> float | None:
    """The row's test top-1 (%) in a results JSON: its "Top-1" cell, or 100 − its "Error" cell."""
    for cell in results.get("cells", []):
        if cell["row"] == row and cell.get("ours") is not None and cell.get("unit") == "%":
            if cell["column"] == "Top-1":
                return float(cell["ours"])
            if cell["column"] == "Error":
                return 100.0 - float(cell["ours"])
    return None


def _row_cells(cells: list[dict], row: str) -> list[dict]:
    """The cells of `row`; else of its variants ("ROW (FFF), …" of one run's sub-networks); else every cell."""
    return ([c for c in cells if c["row"] == row]
            or [c for c in cells if c["row"].startswith((f"{row} (", f"{row}, "))]
            or cells)


def model_card(record: dict, results: dict, row: str, repo_id: str, bibtex: str = "") -> str:
    """A Hub model card (`huggingface_hub.ModelCard`) for one trained row: model-index results from the
    results JSON and the run, the run key and recipe, the command that reproduces it, BibTeX; no local paths."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    from .reproduction import Cell, markdown_table

    content, prov = record["content"], results["provenance"]
    dataset = content["data"]["name"]
    hub_id, pretty = DATASET_IDS.get(dataset, (dataset, dataset))
    top1 = row_top1(results, row)
    if top1 is None:  # no accuracy cell for the row: the run's own last test evaluation
        top1 = record.get("final", {}).get("test_top1")
    evals = []
    if top1 is not None:
        evals.append(EvalResult(task_type="image-classification", dataset_type=hub_id, dataset_name=pretty,
                                dataset_split="test", dataset_args={"preset": results["preset"]},
                                metric_type="accuracy", metric_name=f"top-1 accuracy ({results['preset']} preset)",
                                metric_value=round(top1, 2)))
    module, _, name = record["class"].rpartition(".")
    data = ModelCardData(license="mit", library_name="dynnets", tags=["dynnets", results["paper"], "image-classification",
                                                                     f"preset-{results['preset']}"],
                         datasets=[hub_id], model_name=repo_id, eval_results=evals or None)
    # timings describe the machine that measured them, not the weights: `reproduce eval` measures them anywhere
    cells = [Cell(**c) for c in _row_cells(results["cells"], row) if not c.get("timing")]
    recipe = json.dumps(content["recipe"], sort_keys=True)
    method = content["method"]
    body = "\n".join([
        f"# {repo_id}", "",
        f"Row **{row}** of **{results['title']}**, trained by `dynnets` with the "
        f"`{results['preset']}` preset.", "",
        markdown_table(cells, preset=results["preset"]),
        "Accuracy, MACs and CPU latency against the static backbone on your machine: "
        f"`python -m reproduce eval {module}.{name} --weights {repo_id}`.", "",
        "## Load", "", "```python", f"from {module} import {name} as Model",
        f"model = Model.from_pretrained('{repo_id}')", "```", "",
        "## Reproduce", "", "```bash", prov["command"], "```", "",
        f"Commit `{prov['commit']}`{' (dirty)' if prov['dirty'] else ''}, device {prov['device']}, seed {content['seed']}.",
        "",
        f"- Run key: `{record['key']}` (sha256 over model, method, recipe, data and seed)",
        f"- Model: `{content['model']['factory']}` with {json.dumps(content['model']['args'])} "
        f"{json.dumps(content['model']['kwargs'])}",
        f"- Method: `{method['class']}` {json.dumps(method['hparams'], sort_keys=True)}",
        f"- Recipe: `{recipe}`",
        f"- Data: {pretty} (`{hub_id}`), fingerprint `{content['data']['fingerprint']}`",
    ] + ([f"- Trained on the CPU with {record['cpu_threads']} torch thread(s) (`--threads {record['cpu_threads']}`): "
          "the weights' last bits depend on it"] if record.get("cpu_threads") else
         ["- The run predates the record of its CPU thread count: a CPU rerun gives these weights bit for bit "
          "only at the thread count it trained with"] if prov["device"].startswith("cpu") else []) + [
        "",
    ] + (["## Citation", "", "```bibtex", bibtex.strip(), "```", ""] if bibtex else []))
    return str(ModelCard.from_template(data, template_str="---\n{{ card_data }}\n---\n\n{{ body }}\n", body=body))


def upload_run(run_dir: str | Path, staging: str | Path, results: dict, row: str, repo_id: str, bibtex: str = "",
               push: bool = True, private: bool = False) -> str:
    """Stage a finished run's weights (config.json, model.safetensors, run.json: the recipe it was trained and
    evaluated with) with a model card; upload to `repo_id`."""
    import shutil

    run_dir, staging = Path(run_dir), Path(staging)
    record = json.loads((run_dir / "run.json").read_text())
    staging.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors", "run.json"):
        shutil.copyfile(run_dir / name, staging / name)
    (staging / "README.md").write_text(model_card(record, results, row, repo_id, bibtex))
    if push:
        from huggingface_hub import HfApi

        api = HfApi()
        try:
            api.create_repo(repo_id, exist_ok=True, private=private)
            api.upload_folder(folder_path=str(staging), repo_id=repo_id)
        except Exception as error:  # noqa: BLE001 — every Hub failure ends as one line naming the repo
            raise HubError(f"pushing {repo_id} failed ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
                           f"the weights are in {staging}: upload them with `huggingface-cli upload {repo_id} {staging}`.") from None
    return repo_id


# ------------------------------------------------------------------ create_model(name, pretrained=…) of every paper

WEIGHTS_ROOT = Path(__file__).resolve().parent.parent / "weights"  # committed runs, one folder per tag
TAGS = ("mini", "short", "paper")  # pretrained tags, smallest recipe first; short/paper weights are not published yet


@contextmanager
def quiet_hub_retries() -> Iterator[None]:
    """Hold back huggingface_hub's warnings (one per retry while the Hub is unreachable): a failed download ends
    in one error line of ours."""
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hub_logger.setLevel(level)


def strip_hub_prefix(source: str | Path) -> str:
    """`hf-hub:ORG/NAME` (timm's spelling) → `ORG/NAME`; anything else unchanged."""
    source = str(source)
    return source[len("hf-hub:"):] if source.startswith("hf-hub:") else source


def weights_folder(source: str | Path) -> Path:
    """A local folder of weights, or the folder a Hub id's files are cached in (downloaded when missing)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    source = strip_hub_prefix(source)
    folder = Path(source).expanduser()
    if folder.is_dir():
        return folder
    if folder.exists() or source.startswith((".", "/", "~")) or source.count("/") != 1:
        raise WeightsError(f"No weights folder {source}: the path does not exist (or is a file), and it is not a "
                           f"Hub id ORG/NAME.")
    try:
        with quiet_hub_retries():
            path = Path(hf_hub_download(source, "model.safetensors"))
    except (OSError, ValueError, EntryNotFoundError) as error:
        first = str(error).splitlines()[0] if str(error) else ""
        raise WeightsError(f"{source} is neither a local weights folder nor reachable on the Hub "
                           f"({type(error).__name__}: {first}).") from None
    for optional in ("config.json", "run.json"):  # without a config the model is built from create_model's
        try:                                         # arguments alone; without run.json eval assumes fp32
            with quiet_hub_retries():
                hf_hub_download(source, optional)
        except EntryNotFoundError:  # the repository (or, offline, the cache) has no such file
            continue
        except (OSError, ValueError) as error:
            first = str(error).splitlines()[0] if str(error) else ""
            raise WeightsError(f"{source}: cannot download {optional} ({type(error).__name__}: {first}).") from None
    return path.parent


def _jsonable(value):
    """Tuples as lists, as config.json stores them."""
    return json.loads(json.dumps(value))


def saved_config(folder: Path, cls: type) -> dict:
    """The constructor arguments a weights folder was saved with, the class defaults filling the gaps."""
    import inspect

    _check_local_weights(folder, cls)
    defaults = {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()
                if p.default is not inspect.Parameter.empty}
    config_file = folder / "config.json"
    return {**_jsonable(defaults), **(json.loads(config_file.read_text()) if config_file.is_file() else {})}


def _differences(saved: dict, args: dict) -> list[str]:
    """`key=saved (asked value)` for every argument (but the head's and input's) the saved model lacks."""
    return [f"{key}={saved.get(key)!r} (asked {value!r})" for key, value in _jsonable(args).items()
            if key not in ("num_classes", "in_chans") and saved.get(key) != value]


def tagged_folders(tag: str, cls: type, args: dict, name: str, root: Path | None = None) -> list[Path]:
    """Finished runs committed under `root/tag/` that hold a `cls(**args)`; those whose run.json names `name` first."""
    found = []
    for record_file in sorted(Path(root or WEIGHTS_ROOT).joinpath(tag).glob("*/run.json")):
        folder = record_file.parent
        try:
            record = json.loads(record_file.read_text())
        except (OSError, ValueError):
            continue  # a half-copied folder is not a pretrained model
        kind = f"{cls.__module__}.{cls.__qualname__}"
        if not record.get("finished") or record.get("class") != kind or not (folder / "model.safetensors").is_file():
            continue
        if _differences(saved_config(folder, cls), args):
            continue
        spec = record.get("content", {}).get("model", {})
        names_it = spec.get("factory", "").endswith(".create_model") and spec.get("args", [None])[0] == name
        found.append((not names_it, folder))
    return [folder for _, folder in sorted(found)]


def pretrained_tags(cls: type, args: dict, name: str, root: Path | None = None) -> list[str]:
    """The tags under which weights of this model exist."""
    return [tag for tag in TAGS if tagged_folders(tag, cls, args, name, root)]


def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """An RGB first-conv weight for `in_chans` channels: summed for 1, else repeated and rescaled (timm's rule)."""
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = -(-in_chans // weight.shape[1])
    return weight.repeat(1, repeats, 1, 1)[:, :in_chans] * (weight.shape[1] / in_chans)


def _construct(cls: type, args: dict, in_chans: int) -> nn.Module:
    """`cls(**args)` with `in_chans` input channels (passed on when `cls` takes it, else the first conv replaced)."""
    import inspect

    from .backbones import set_in_chans

    if in_chans < 1:
        raise ValueError(f"in_chans must be a positive number of input channels; got {in_chans}.")
    if "in_chans" in inspect.signature(cls.__init__).parameters:
        return cls(**args, in_chans=in_chans)
    model = cls(**args)
    if in_chans != 3:
        set_in_chans(model, in_chans)
    return model


def build_model(cls: type, args: dict, name: str, pretrained: bool | str | Path = False, num_classes: int | None = None,
                in_chans: int = 3, root: Path | None = None) -> nn.Module:
    """The shared half of every paper's `create_model`: `cls(**args)`, fresh or with `pretrained` weights.

    `pretrained`: False; True (the weights of the largest tag that has them); a tag of `TAGS`; a
    weights folder; a Hub id (`ORG/NAME` or `hf-hub:ORG/NAME`). With another `num_classes` than the
    weights', everything but the classifier head is loaded and the head is freshly initialised.
    """
    args = {k: v for k, v in args.items() if k not in ("num_classes", "in_chans")}
    root = Path(root or WEIGHTS_ROOT)
    if not pretrained:
        return _construct(cls, {**args, **({"num_classes": num_classes} if num_classes is not None else {})}, in_chans)
    if pretrained is True or pretrained in TAGS:
        available = pretrained_tags(cls, args, name, root)
        tag = available[-1] if pretrained is True and available else pretrained
        if tag not in available:
            asked = "pretrained weights" if pretrained is True else f"{tag!r} weights"
            raise PretrainedError(f"No {asked} for {name!r}; tags with weights: {', '.join(available) or 'none yet'} "
                             f"(valid tags: {', '.join(TAGS)}); pass a weights folder or Hub id instead.")
        folder = tagged_folders(tag, cls, args, name, root)[0]
        print(f"{name}: {tag} weights from {folder.relative_to(root.parent) if folder.is_relative_to(root.parent) else folder}")
        source = str(folder)
    else:
        source = strip_hub_prefix(pretrained)
        folder = weights_folder(source)
    saved = saved_config(folder, cls)
    mismatched = _differences(saved, args)
    if mismatched:
        raise PretrainedError(f"The weights in {source} are not {name} with these arguments: {', '.join(mismatched)}.")
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    config = {k: v for k, v in config.items() if k != "in_chans"}
    model = _construct(cls, {**config, **args, **({"num_classes": num_classes} if num_classes is not None else {})},
                       in_chans)
    load_weights(model, folder / "model.safetensors", source)
    return model


def load_weights(model: nn.Module, path: Path, source: str) -> None:
    """Load a safetensors file strictly, except a classifier head of another size (left fresh) and an RGB
    first conv for other input channels (adapted); both are said."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise WeightsError(f"Cannot read {path}: {error}. The file is truncated or not safetensors; "
                           f"download it again.") from None
    own = model.state_dict()
    heads = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)
             and f"{name}.weight" in state and state[f"{name}.weight"].shape[1:] == m.weight.shape[1:]
             and state[f"{name}.weight"].shape[0] != m.out_features]
    if len(heads) == 1:  # only the classifier changes size with num_classes
        head = heads[0]
        old = state[f"{head}.weight"].shape[0]
        for key in (f"{head}.weight", f"{head}.bias"):
            if key in state:
                state[key] = own[key]
        print(f"loaded {source} except the classifier head {head} ({old} → {own[head + '.weight'].shape[0]} classes, "
              f"freshly initialised)")
    conv = next((name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    key = f"{conv}.weight"
    if conv and key in state and state[key].shape[1] != own[key].shape[1] and state[key].shape[0] == own[key].shape[0]:
        channels = state[key].shape[1]
        state[key] = adapt_input_conv(state[key], own[key].shape[1])
        print(f"adapted the first convolution {key} of {source} from {channels} to {own[key].shape[1]} input channels")
    load_state_strict(model, state, str(path))
    model.eval()
