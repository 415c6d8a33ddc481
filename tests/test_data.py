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
