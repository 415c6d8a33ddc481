"""common.data: the packaged sample, local/Hub resolution, clear errors, on-device augmentation."""
import numpy as np
import pytest
import torch

from common import data as D
from common.data import DataError, augment_batch, build_data, load_tensors, normalize


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(D, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.delenv("DYNNETS_DATA_DIR", raising=False)


def test_sample_is_stratified_uint8():
    train, test = load_tensors("cifar10-sample", "train"), load_tensors("cifar10-sample", "test")
    assert train.images.shape == (2000, 3, 32, 32) and train.images.dtype == torch.uint8
    assert test.images.shape == (1000, 3, 32, 32)
    assert torch.bincount(train.labels).tolist() == [200] * 10
    assert torch.bincount(test.labels).tolist() == [100] * 10
    assert sum(p.stat().st_size for p in D.sample_dir().glob("*.parquet")) < 3e6


def test_decoded_split_is_cached(tmp_path):
    first = load_tensors("cifar10-sample", "test")
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1
    second = load_tensors("cifar10-sample", "test")
    assert torch.equal(first.images, second.images) and first.fingerprint == second.fingerprint


def _write_parquet(directory, label_column, n=6, channels=3, size=32):
    import datasets
    from PIL import Image

    rng = np.random.default_rng(0)
    mode = "RGB" if channels == 3 else "L"
    for split in ("train", "test"):
        shape = (size, size, channels) if channels == 3 else (size, size)
        images = [Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode) for _ in range(n)]
        features = datasets.Features({"img": datasets.Image(), label_column: datasets.Value("int64")})
        table = datasets.Dataset.from_dict({"img": images, label_column: list(range(n))}, features=features)
        table.to_parquet(str(directory / f"{split}-00000-of-00001.parquet"))


def test_local_parquet_dir_via_env_var(tmp_path, monkeypatch):
    root = tmp_path / "data"
    (root / "cifar100").mkdir(parents=True)
    _write_parquet(root / "cifar100", "fine_label")
    monkeypatch.setenv("DYNNETS_DATA_DIR", str(root))
    split = load_tensors("cifar100", "train")
    assert split.images.shape == (6, 3, 32, 32)
    assert split.labels.tolist() == list(range(6))
    assert split.source == str(root / "cifar100")


def test_unknown_dataset_names_choices():
    with pytest.raises(DataError, match="cifar10, cifar100, fashion_mnist, imagenet"):
        load_tensors("cifar11", "train")


def test_wrong_data_dir_says_what_is_expected(tmp_path):
    with pytest.raises(DataError, match="--data-dir"):
        load_tensors("cifar10", "train", data_dir=tmp_path)


def test_missing_offline_dataset_says_what_to_download(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(DataError, match="uoft-cs/cifar100.*--data-dir"):
        load_tensors("cifar100", "train")


def test_augment_batch_crops_a_shifted_window_and_flips():
    torch.manual_seed(0)
    images = torch.randint(0, 255, (64, 3, 8, 8), dtype=torch.uint8)
    out = augment_batch(images, padding=2)
    assert out.shape == images.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(images, (2,) * 4)
    windows = [padded[:, :, y:y + 8, x:x + 8] for y in range(5) for x in range(5)]
    for i in range(64):
        candidates = [w[i] for w in windows] + [w[i].flip(-1) for w in windows]
        assert any(torch.equal(out[i], c) for c in candidates)
    flipped_only = augment_batch(images, padding=0)
    n_flipped = sum(torch.equal(flipped_only[i], images[i].flip(-1)) for i in range(64))
    assert 16 < n_flipped < 48


def test_normalize_uses_dataset_statistics():
    images = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    out = normalize(images, "cifar10")
    expected = (1 - torch.tensor(D.DATASETS["cifar10"].mean)) / torch.tensor(D.DATASETS["cifar10"].std)
    torch.testing.assert_close(out[0, :, 0, 0], expected)


def test_build_data_batches_without_per_image_python():
    bundle = build_data("cifar10-sample", batch_size=16, train_limit=64, test_limit=32)
    images, labels = next(iter(bundle.train_loader))
    assert images.shape == (16, 3, 32, 32) and images.dtype == torch.uint8 and labels.shape == (16,)
    x = bundle.preprocess(images, train=True)
    assert x.dtype == torch.float32 and x.shape == (16, 3, 32, 32)
    assert len(bundle.test_loader.dataset) == 32
    assert bundle.num_classes == 10 and bundle.input_size == (3, 32, 32)


def test_imagenet_transforms_on_a_tiny_image_folder(tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        for label in ("n01", "n02"):
            folder = tmp_path / split / label
            folder.mkdir(parents=True)
            for i in range(2):
                Image.fromarray(np.full((40, 60, 3), 40 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    bundle = build_data("imagenet", tmp_path, batch_size=2, eval_batch_size=4, num_workers=0)
    images, labels = next(iter(bundle.test_loader))
    assert images.shape == (4, 3, 224, 224) and images.dtype == torch.float32
    assert sorted(labels.tolist()) == [0, 0, 1, 1]
    x, _ = next(iter(bundle.train_loader))
    assert x.shape == (2, 3, 224, 224)
    assert bundle.preprocess(x, train=True) is x


# ------------------------------------------------------------------ bad data: one DataError naming the file

def _parquet(directory, images, labels, image_column="img", label_column="label"):
    """train and test parquet files of the given uint8 arrays (H×W or H×W×C) and labels."""
    import datasets
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    features = datasets.Features({image_column: datasets.Image(), label_column: datasets.Value("int64")})
    for split in ("train", "test"):
        table = datasets.Dataset.from_dict({image_column: [Image.fromarray(a) for a in images], label_column: labels},
                                           features=features)
        table.to_parquet(str(directory / f"{split}-00000-of-00001.parquet"))
    return directory


def _rgb(n=4, size=32):
    return [np.full((size, size, 3), i, dtype=np.uint8) for i in range(n)]


@pytest.mark.parametrize("case,message", [
    ("truncated", r"train-00000-of-00001\.parquet is not a readable parquet file"),
    ("columns", r"has no column 'img' \(columns: picture, label\)"),
    ("labels", r"label 10 of image 3 is outside 0 … 9"),
    ("size", r"image 0 is 28×28×3 \(H×W×C\); every image of this dataset must be 32×32×3"),
    ("channels", r"image 0 is 32×32×1 \(H×W×C\); every image of this dataset must be 32×32×3"),
])
def test_bad_parquet_is_a_data_error_naming_the_file(tmp_path, case, message):
    root = tmp_path / "cifar10"
    if case == "truncated":
        _parquet(root, _rgb(), [0, 1, 2, 3])
        path = root / "train-00000-of-00001.parquet"
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif case == "columns":
        _parquet(root, _rgb(), [0, 1, 2, 3], image_column="picture")
    elif case == "labels":
        _parquet(root, _rgb(), [0, 1, 2, 10])
    elif case == "size":
        _parquet(root, _rgb(size=28), [0, 1, 2, 3])
    else:
        _parquet(root, [np.zeros((32, 32), dtype=np.uint8)] * 4, [0, 1, 2, 3])
    with pytest.raises(DataError, match=message) as raised:
        load_tensors("cifar10", "train", root)
    assert str(root) in str(raised.value) and "\n" not in str(raised.value)


def test_corrupt_image_in_an_image_folder_names_the_file(tmp_path):
    folder = tmp_path / "imagenet" / "train" / "n01"
    folder.mkdir(parents=True)
    (folder / "broken.JPEG").write_bytes(b"not a jpeg at all")
    (tmp_path / "imagenet" / "val" / "n01").mkdir(parents=True)
    dataset = D.imagenet_dataset("train", tmp_path / "imagenet")
    with pytest.raises(DataError, match=r"broken\.JPEG is not a readable image"):
        dataset[0]


def test_corrupt_cache_is_rebuilt_with_a_message(tmp_path, capsys):
    first = load_tensors("cifar10-sample", "test")
    cache = next((tmp_path / "cache").glob("*.pt"))
    state = torch.load(cache, weights_only=True)
    state["images"][0, 0, 0, 0] += 1  # a flipped byte: the checksum no longer matches
    torch.save(state, cache)
    again = load_tensors("cifar10-sample", "test")
    assert torch.equal(again.images, first.images)
    assert f"The data cache {cache} does not match its checksum; rebuilding it." in capsys.readouterr().err
    cache.write_bytes(b"garbage")
    assert torch.equal(load_tensors("cifar10-sample", "test").images, first.images)
    assert f"The data cache {cache} cannot be read" in capsys.readouterr().err


def test_one_channel_fashion_mnist_parquet_trains_a_step(tmp_path):
    """in_chans=1 (timm's name): a 28×28 grey dataset trains end to end through the run layer."""
    from common.hub import HubBackbone
    from common.runs import ModelSpec, train
    from common.train import Method, TrainConfig

    images = [np.random.default_rng(i).integers(0, 255, (28, 28), dtype=np.uint8) for i in range(16)]
    root = _parquet(tmp_path / "fashion_mnist", images, list(range(10)) + [0] * 6, image_column="image")
    data = build_data("fashion_mnist", root, batch_size=8, eval_batch_size=8)
    assert data.input_size == (1, 28, 28)
    run = train("grey", ModelSpec(HubBackbone, "resnet20_cifar", num_classes=10, in_chans=1), data,
                TrainConfig(epochs=1, batch_size=8, milestones=()), Method(), tmp_path / "runs", progress=False)
    assert len(run.history) == 1 and run.evaluation["logits"].shape == (16, 10)


def _imagenet_parquet(directory, per_split=4):
    """A tiny ImageNet in the Hub layout: 64×64 RGB JPEG/PNG images, columns image and label, train and validation."""
    import io

    import datasets
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=1000)})
    rng = np.random.default_rng(0)
    for split in ("train", "validation"):
        images = []
        for i in range(per_split):
            buffer = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG" if i % 2 else "PNG")
            images.append({"bytes": buffer.getvalue(), "path": None})
        labels = [7, 999, 0, 7][:per_split]
        datasets.Dataset.from_dict({"image": images, "label": labels}, features=features).to_parquet(
            str(directory / f"{split}-00000-of-00001.parquet"))
    return directory


def test_imagenet_parquet_yields_tensors_and_labels_and_trains_a_step(tmp_path):
    from common.hub import HubBackbone
    from common.train import TrainConfig, evaluate, fit

    root = _imagenet_parquet(tmp_path / "imagenet")
    data = build_data("imagenet", root, batch_size=2, eval_batch_size=4, num_workers=0)
    images, labels = next(iter(data.test_loader))
    assert images.shape == (4, 3, 224, 224) and images.dtype == torch.float32
    assert labels.tolist() == [7, 999, 0, 7] and labels.dtype == torch.int64
    assert abs(float(images.mean())) < 1.0  # normalised with ImageNet's mean/std, not raw [0, 1]
    x, y = next(iter(data.train_loader))
    assert x.shape == (2, 3, 224, 224) and y.shape == (2,)
    torch.manual_seed(0)
    model = HubBackbone("resnet18", num_classes=1000)
    result = fit(model, data, TrainConfig(epochs=1, batch_size=2, milestones=(), precision="fp32"), tmp_path / "run",
                 progress=False)
    assert len(result.history) == 1 and np.isfinite(result.history[0]["train_loss"])
    evaluation = evaluate(result.model, data)
    assert evaluation["logits"].shape == (4, 1000) and evaluation["labels"].tolist() == [7, 999, 0, 7]
