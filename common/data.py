"""Datasets: resolve a name to local files or the Hub, decode small sets once to uint8 tensors.

Resolution order for a dataset name:
1. `data_dir` given by the caller (`--data-dir`), else the environment variable `DYNNETS_DATA_DIR`
   (a directory holding the dataset's parquet files in the Hub layout, an image folder with
   `train/` and `val/`, or a parent directory with a sub-folder named after the dataset);
2. the Hub id through `datasets` (fails offline with one message saying what to download).

Small datasets (CIFAR-10/100, Fashion-MNIST) are decoded once into uint8 tensors, cached under
`~/.cache/dynnets/`, and augmented on the training device by `augment_batch`: no per-image Python
runs in the training loop. ImageNet uses torchvision's standard transforms.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.utils.data import Dataset

if TYPE_CHECKING:
    from PIL import Image

SAMPLE_DIR = Path(__file__).resolve().parent / "sample"
CACHE_DIR = Path(os.environ.get("DYNNETS_CACHE", Path.home() / ".cache" / "dynnets"))


@dataclass(frozen=True)
class DatasetInfo:
    hub_id: str
    image_column: str
    label_column: str
    num_classes: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    test_split: str = "test"


DATASETS: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo("uoft-cs/cifar10", "img", "label", 10, 32,
                           (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": DatasetInfo("uoft-cs/cifar100", "img", "fine_label", 100, 32,
                            (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "fashion_mnist": DatasetInfo("zalando-datasets/fashion_mnist", "image", "label", 10, 28,
                                 (0.2860,), (0.3530,)),
    "imagenet": DatasetInfo("ILSVRC/imagenet-1k", "image", "label", 1000, 224,
                            (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), test_split="validation"),
}
SMALL_DATASETS = ("cifar10", "cifar100", "fashion_mnist")
SAMPLE_NAME = "cifar10-sample"


class DataError(RuntimeError):
    """A dataset that cannot be found or read; the message says what to do."""


def dataset_info(name: str) -> DatasetInfo:
    """The constants of a dataset; `cifar10-sample` shares CIFAR-10's."""
    key = "cifar10" if name == SAMPLE_NAME else name
    if key not in DATASETS:
        raise DataError(f"Unknown dataset {name!r}. Valid choices: {', '.join([*DATASETS, SAMPLE_NAME])}.")
    return DATASETS[key]


def sample_dir() -> Path:
    """The stratified CIFAR-10 sample (2,000 train / 1,000 test) that ships in the package."""
    return SAMPLE_DIR / "cifar10"


def _parquet_files(directory: Path, split: str) -> list[Path]:
    patterns = [f"{split}-*.parquet", f"{split}/*.parquet", f"data/{split}-*.parquet"]
    for pattern in patterns:
        files = sorted(directory.glob(pattern))
        if files:
            return files
    return []


def _local_dir(name: str, data_dir: str | os.PathLike | None) -> Path | None:
    """The directory holding `name`'s files, from the argument or $DYNNETS_DATA_DIR, or None."""
    if name == SAMPLE_NAME:
        return sample_dir()
    root = data_dir or os.environ.get("DYNNETS_DATA_DIR")
    if not root:
        return None
    root = Path(root).expanduser()
    for candidate in (root, root / name):
        if _parquet_files(candidate, "train") or (candidate / "train").is_dir():
            return candidate
    raise DataError(
        f"No {name} data under {root}: expected parquet files in the Hub layout "
        f"(train-*.parquet, {dataset_info(name).test_split}-*.parquet) or an image folder with train/ "
        f"and val/, directly there or in {root / name}. Point --data-dir (or DYNNETS_DATA_DIR) at it."
    )


def check_local(name: str, data_dir: str | os.PathLike) -> Path:
    """Before any work: `data_dir` exists and holds `name`'s train and test splits; the folder found."""
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"--data-dir {data_dir} is not an existing folder: point it at the {name} files "
                        f"(parquet in the Hub layout or an image folder).")
    local = _local_dir(name, root)
    split = dataset_info(name).test_split
    if (local / "train").is_dir():
        if not (local / "val").is_dir():
            raise DataError(f"Image folder {local} has train/ but no val/: {name} needs both.")
    elif not _parquet_files(local, split):
        raise DataError(f"No {split}-*.parquet under {local} for {name}: the test split is missing.")
    return local


def fingerprint(files: list[Path]) -> str:
    """A short sha256 over the bytes of the files that make up a dataset."""
    digest = hashlib.sha256()
    for path in sorted(files):
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def _load_hf_split(name: str, split: str, data_dir: Path | None):
    """A `datasets.Dataset` for one split, from local parquet files or the Hub."""
    import datasets

    info = dataset_info(name)
    if data_dir is not None:
        files = _parquet_files(data_dir, split)
        if not files:
            raise DataError(f"No {split}-*.parquet under {data_dir} for {name}.")
        _check_parquet(files)
        return datasets.load_dataset("parquet", data_files={split: [str(f) for f in files]}, split=split), files
    from .hub import quiet_hub_retries

    try:
        with quiet_hub_retries():
            return datasets.load_dataset(info.hub_id, split=split), []
    except Exception as error:  # datasets raises many types offline; all mean "not reachable"
        raise DataError(
            f"Could not load {name} from the Hub ({info.hub_id}): {type(error).__name__}: {error}. "
            f"Download it where you have network (`huggingface-cli download --repo-type dataset "
            f"{info.hub_id} --local-dir DIR`) and pass --data-dir DIR (or set DYNNETS_DATA_DIR)."
        ) from None


def _check_parquet(files: list[Path]) -> None:
    """Every file is a readable parquet file (a truncated download fails here, naming the file)."""
    import pyarrow
    import pyarrow.parquet as pq

    for path in files:
        try:
            pq.ParquetFile(path).metadata
        except (OSError, pyarrow.ArrowException) as error:
            raise DataError(f"{path} is not a readable parquet file ({error}); download it again.") from None


@dataclass
class TensorSplit:
    """One split decoded to uint8 images [N, C, H, W] and int64 labels [N]."""
    images: torch.Tensor
    labels: torch.Tensor
    source: str
    fingerprint: str


def load_tensors(name: str, split: str, data_dir: str | os.PathLike | None = None) -> TensorSplit:
    """Decode a small dataset's split once into uint8 tensors, cached on disk by content hash."""
    info = dataset_info(name)
    if name not in (*SMALL_DATASETS, SAMPLE_NAME):
        raise DataError(f"{name!r} is not a small dataset; valid choices: {', '.join([*SMALL_DATASETS, SAMPLE_NAME])}.")
    split = info.test_split if split in ("test", "val", "validation") else split
    local = _local_dir(name, data_dir)
    if local is not None:
        files = _parquet_files(local, split)
        if not files:
            raise DataError(f"No {split}-*.parquet under {local} for {name}.")
        key, source = fingerprint(files), str(local)
        cache = CACHE_DIR / f"{name}-{split}-{key}.pt"
        cached = _read_cache(cache)
        if cached is not None:
            return TensorSplit(cached["images"], cached["labels"], source, key)
    else:
        key, source, cache, files = f"hub:{info.hub_id}", info.hub_id, None, []
    table, _ = _load_hf_split(name, split, local)
    images, labels = _decode(table, info, ", ".join(str(f) for f in files) or info.hub_id)
    if cache is not None:
        _write_cache(cache, images, labels)
    return TensorSplit(images, labels, source, key)


def _checksum(images: torch.Tensor, labels: torch.Tensor) -> str:
    digest = hashlib.sha256(images.contiguous().numpy().tobytes())
    digest.update(labels.contiguous().numpy().tobytes())
    return digest.hexdigest()


def _read_cache(cache: Path) -> dict | None:
    """The cached tensors when the file is readable and its checksum matches; else None (and it is rebuilt)."""
    if not cache.exists():
        return None
    try:
        cached = torch.load(cache, weights_only=True)
        intact = cached["checksum"] == _checksum(cached["images"], cached["labels"])
    except (OSError, RuntimeError, KeyError, TypeError, EOFError, ValueError, pickle.UnpicklingError) as error:
        print(f"The data cache {cache} cannot be read ({type(error).__name__}); rebuilding it.", file=sys.stderr)
        return None
    if not intact:
        print(f"The data cache {cache} does not match its checksum; rebuilding it.", file=sys.stderr)
        return None
    return cached


def _write_cache(cache: Path, images: torch.Tensor, labels: torch.Tensor) -> None:
    tmp = cache.with_name(f".{cache.name}.tmp{os.getpid()}")
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"images": images, "labels": labels, "checksum": _checksum(images, labels)}, tmp)
        os.replace(tmp, cache)
    except (OSError, RuntimeError) as error:
        tmp.unlink(missing_ok=True)
        raise DataError(f"Cannot write the data cache {cache}: {getattr(error, 'strerror', None) or error}. "
                        f"Set DYNNETS_CACHE to a writable folder.") from None


def _decode(table, info: DatasetInfo, source: str) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 [N, C, H, W] images and int64 labels, every image and label checked against the dataset."""
    import numpy as np

    missing = [c for c in (info.image_column, info.label_column) if c not in table.column_names]
    if missing:
        raise DataError(f"{source} has no column {', '.join(map(repr, missing))} (columns: "
                        f"{', '.join(table.column_names)}); expected {info.image_column!r} and {info.label_column!r}.")
    table = table.with_format("numpy")
    channels = len(info.mean)
    expected = (info.image_size, info.image_size, channels)
    try:
        column = table[info.image_column]
    except (OSError, ValueError, TypeError) as error:  # PIL's UnidentifiedImageError is an OSError
        raise DataError(f"{source}: an image cannot be decoded ({type(error).__name__}: {error}).") from None
    arrays = []
    for index, image in enumerate(column):
        array = np.asarray(image)
        if array.ndim == 2:
            array = array[:, :, None]
        if array.shape != expected:
            raise DataError(f"{source}: image {index} is {'×'.join(map(str, array.shape))} (H×W×C); every image of "
                            f"this dataset must be {'×'.join(map(str, expected))}.")
        arrays.append(array)
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    labels = torch.as_tensor(np.asarray(table[info.label_column]), dtype=torch.int64)
    bad = ((labels < 0) | (labels >= info.num_classes)).nonzero()
    if len(bad):
        index = int(bad[0])
        raise DataError(f"{source}: label {int(labels[index])} of image {index} is outside 0 … {info.num_classes - 1}.")
    return images, labels


class BatchTensorDataset(Dataset):
    """Indexable pair of tensors whose batches are gathered in one indexing op (`__getitems__`)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.images[index], self.labels[index]

    def __getitems__(self, indices: list[int]):
        index = torch.as_tensor(indices)
        return self.images[index], self.labels[index]


def identity_collate(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Batches come from `__getitems__` already stacked."""
    return batch


def normalize(images: torch.Tensor, name: str) -> torch.Tensor:
    """uint8 [B, C, H, W] → float, scaled to [0, 1] and standardised with the dataset's mean/std."""
    info = dataset_info(name)
    mean = torch.tensor(info.mean, device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(info.std, device=images.device).view(1, -1, 1, 1)
    return (images.float() / 255.0 - mean) / std


def augment_batch(images: torch.Tensor, padding: int = 4, flip: bool = True) -> torch.Tensor:
    """Random crop after zero padding + horizontal flip, for a whole uint8 batch on its device."""
    batch, _, height, width = images.shape
    padded = torch.nn.functional.pad(images, (padding,) * 4)
    offset_y = torch.randint(0, 2 * padding + 1, (batch,), device=images.device)
    offset_x = torch.randint(0, 2 * padding + 1, (batch,), device=images.device)
    rows = (offset_y[:, None] + torch.arange(height, device=images.device)[None])  # [B, H]
    cols = (offset_x[:, None] + torch.arange(width, device=images.device)[None])   # [B, W]
    if flip:
        flipped = torch.rand(batch, device=images.device) < 0.5
        cols = torch.where(flipped[:, None], cols.flip(1), cols)
    batch_index = torch.arange(batch, device=images.device)[:, None, None]
    # [B, C, H, W] gathered as padded[b, :, rows[b, i], cols[b, j]]
    return padded.permute(0, 2, 3, 1)[batch_index, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def imagenet_transforms(train: bool, size: int = 224) -> Callable[[Image.Image], torch.Tensor]:
    """torchvision's standard ImageNet pipeline (RandomResizedCrop+flip / Resize 256 + CenterCrop)."""
    from torchvision import transforms

    info = DATASETS["imagenet"]
    if train:
        steps = [transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip()]
    else:
        steps = [transforms.Resize(int(size * 256 / 224)), transforms.CenterCrop(size)]
    return transforms.Compose([*steps, transforms.ToTensor(), transforms.Normalize(info.mean, info.std)])


def load_image(path: str) -> Image.Image:
    """An RGB PIL image; a file that is no readable image is a `DataError` naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as handle:
            return Image.open(handle).convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise DataError(f"{path} is not a readable image ({type(error).__name__}: {error}); remove or replace it.") from None


def imagenet_dataset(split: str, data_dir: str | os.PathLike | None = None) -> Dataset:
    """ImageNet (or any image folder) with the standard transforms: `train/` and `val/` folders, or the Hub."""
    train = split == "train"
    transform = imagenet_transforms(train)
    local = _local_dir("imagenet", data_dir)
    if local is not None and (local / "train").is_dir():
        from torchvision.datasets import ImageFolder

        folder = local / ("train" if train else "val")
        if not folder.is_dir():
            raise DataError(f"Image folder {folder} is missing; ImageNet folders need train/ and val/.")
        return ImageFolder(str(folder), transform=transform, loader=load_image)
    table, _ = _load_hf_split("imagenet", "train" if train else "validation", local)
    table.set_transform(ImageTransform(transform))
    return table


class ImageTransform:
    """`datasets` batch of PIL images → `pixel_values` tensors and `label`s (a class: workers pickle it)."""

    def __init__(self, transform):
        self.transform = transform
        info = DATASETS["imagenet"]
        self.image_column, self.label_column = info.image_column, info.label_column

    def __call__(self, batch: dict) -> dict:
        return {"pixel_values": [self.transform(image.convert("RGB")) for image in batch[self.image_column]],
                "label": batch[self.label_column]}


def pixel_values_collate(batch: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """Examples `{"pixel_values", "label"}` → `(images [B, C, H, W], labels [B])`, as an image folder yields."""
    return (torch.stack([example["pixel_values"] for example in batch]),
            torch.tensor([example["label"] for example in batch], dtype=torch.long))


@dataclass
class DataBundle:
    """Loaders of one dataset plus what the loop needs to turn a loaded batch into model input."""
    name: str
    train_loader: torch.utils.data.DataLoader
    test_loader: torch.utils.data.DataLoader
    num_classes: int
    input_size: tuple[int, int, int]
    source: str
    fingerprint: str
    on_device_augment: bool  # uint8 batches: augment + normalize on the training device
    limits: dict = field(default_factory=dict)  # train_limit / test_limit when the split was cut

    def to(self, device: torch.device) -> "DataBundle":
        """This bundle with its uint8 tensors on `device` (small sets; others are returned unchanged)."""
        from dataclasses import replace

        if not self.on_device_augment:
            return self

        def moved(loader):
            dataset = BatchTensorDataset(loader.dataset.images.to(device), loader.dataset.labels.to(device))
            return torch.utils.data.DataLoader(dataset, loader.batch_size, shuffle=isinstance(
                loader.sampler, torch.utils.data.RandomSampler), drop_last=loader.drop_last, collate_fn=identity_collate)

        return replace(self, train_loader=moved(self.train_loader), test_loader=moved(self.test_loader))

    def preprocess(self, images: torch.Tensor, train: bool) -> torch.Tensor:
        """Turn a loaded batch into normalised float input (augmented when `train`)."""
        if not self.on_device_augment:
            return images
        if train:
            images = augment_batch(images)
        return normalize(images, self.name)


def build_data(name: str, data_dir: str | os.PathLike | None = None, batch_size: int = 128,
               eval_batch_size: int = 512, num_workers: int = 8, train_limit: int | None = None,
               test_limit: int | None = None) -> DataBundle:
    """Train/test loaders for a dataset name; small sets as uint8 tensors, ImageNet via transforms.

    `train_limit` / `test_limit` keep the first N images (the smoke preset and tests use them).
    """
    from torch.utils.data import DataLoader, Subset

    info = dataset_info(name)
    limits = {k: v for k, v in (("train_limit", train_limit), ("test_limit", test_limit)) if v}
    if name == "imagenet":
        train, test = imagenet_dataset("train", data_dir), imagenet_dataset("val", data_dir)
        if train_limit:
            train = Subset(train, range(min(train_limit, len(train))))
        if test_limit:
            test = Subset(test, range(min(test_limit, len(test))))
        local = _local_dir(name, data_dir)
        folder = local is not None and (local / "train").is_dir()
        collate = None if folder else pixel_values_collate  # `datasets` rows are dicts; an image folder's are pairs
        return DataBundle(name, DataLoader(train, batch_size, shuffle=True, num_workers=num_workers, drop_last=True,
                                           collate_fn=collate),
                          DataLoader(test, eval_batch_size, num_workers=num_workers, collate_fn=collate),
                          info.num_classes,
                          (3, info.image_size, info.image_size), str(local or info.hub_id), "", False, limits)
    train_split, test_split = load_tensors(name, "train", data_dir), load_tensors(name, "test", data_dir)
    train = BatchTensorDataset(train_split.images[:train_limit], train_split.labels[:train_limit])
    test = BatchTensorDataset(test_split.images[:test_limit], test_split.labels[:test_limit])
    channels = train.images.shape[1]
    return DataBundle(
        "cifar10" if name == SAMPLE_NAME else name,
        DataLoader(train, batch_size, shuffle=True, drop_last=True, collate_fn=identity_collate),
        DataLoader(test, eval_batch_size, shuffle=False, collate_fn=identity_collate),
        info.num_classes, (channels, info.image_size, info.image_size),
        train_split.source, f"{train_split.fingerprint}/{test_split.fingerprint}", True, limits)
