"""Datasets, IDX parsing, splits, label subsets, seed streams, corruption and augmentation."""

from __future__ import annotations

import gzip
import os
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from trainables import data
from trainables.data import DATASET_NAMES, DatasetError, DatasetUnavailableError, load_dataset, read_idx
from trainables.seeds import STREAM_NAMES, stream, sub_seed
from trainables.splits import make_splits, make_targets, stratified_split
from trainables.transforms import AugmentSpec, augment_batch, corrupt, corrupt_fixed

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def _fresh_loader_cache():
    data._load_cached.cache_clear()
    yield
    data._load_cached.cache_clear()


@pytest.fixture(scope="module")
def mnist5k():
    return load_dataset("mnist-5k")


def write_idx(folder: Path, images: np.ndarray, labels: np.ndarray, prefix: str, gz: bool = False) -> None:
    """Write one split as standard IDX files (big-endian header, then unsigned bytes)."""
    def dump(path: Path, array: np.ndarray, magic: int) -> None:
        payload = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
        if gz:
            with gzip.open(str(path) + ".gz", "wb") as handle:
                handle.write(payload)
        else:
            path.write_bytes(payload)
    dump(folder / f"{prefix}-images-idx3-ubyte", images, 0x0803)
    dump(folder / f"{prefix}-labels-idx1-ubyte", labels, 0x0801)


def fake_idx_folder(folder: Path, n_train: int = 60, n_test: int = 20, gz: bool = False) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder, rng.integers(0, 256, (n_train, 28, 28)), np.arange(n_train) % 10, "train", gz)
    write_idx(folder, rng.integers(0, 256, (n_test, 28, 28)), np.arange(n_test) % 10, "t10k", gz)
    return folder


# --------------------------------------------------------------------------- mnist-5k

def test_mnist5k_shapes_counts_and_checksum(mnist5k):
    assert mnist5k.name == "mnist-5k"
    assert mnist5k.train_images.shape == (4000, 28, 28) and mnist5k.train_images.dtype == torch.uint8
    assert mnist5k.test_images.shape == (1000, 28, 28)
    assert mnist5k.train_labels.dtype == torch.int64
    assert torch.bincount(mnist5k.train_labels).tolist() == [400] * 10
    assert torch.bincount(mnist5k.test_labels).tolist() == [100] * 10
    assert mnist5k.class_names == tuple("0123456789")
    assert len(mnist5k.sha256) == 64
    assert mnist5k.sha256 == data.dataset_sha256(mnist5k.train_images, mnist5k.train_labels,
                                                  mnist5k.test_images, mnist5k.test_labels)
    # real digits, not noise: most pixels are background, strokes saturate
    assert 0.1 < mnist5k.train_images.float().mean().item() / 255 < 0.2
    assert mnist5k.train_images.max().item() == 255


def test_mnist5k_is_cached_as_tensor_file_and_split_is_fixed(tmp_path, monkeypatch, mnist5k):
    monkeypatch.setenv("STUDY_CACHE_DIR", str(tmp_path))
    first = load_dataset("mnist-5k")
    cached = list(tmp_path.glob("mnist-5k-*.pt"))
    assert len(cached) == 1
    data._load_cached.cache_clear()
    started = time.perf_counter()
    second = load_dataset("mnist-5k")
    assert time.perf_counter() - started < 1.0  # a tensor file, not the CSV again
    assert first is not second and first.sha256 == second.sha256 == mnist5k.sha256
    assert torch.equal(first.test_images, mnist5k.test_images)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar-10")
    for name in DATASET_NAMES:
        assert name in str(err.value)


# --------------------------------------------------------------------------- IDX files

def test_idx_folder_via_data_dir(tmp_path):
    folder = fake_idx_folder(tmp_path / "idx")
    dataset = load_dataset("mnist", data_dir=folder)
    assert dataset.train_images.shape == (60, 28, 28) and dataset.test_images.shape == (20, 28, 28)
    assert dataset.train_labels.tolist()[:12] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    # gzipped files in torchvision's layout are found too
    fake_idx_folder(tmp_path / "tv" / "MNIST" / "raw", gz=True)
    assert load_dataset("mnist", data_dir=tmp_path / "tv").sha256 == dataset.sha256


def test_study_data_dir_environment_variable(tmp_path, monkeypatch):
    fake_idx_folder(tmp_path / "FashionMNIST" / "raw")
    monkeypatch.setenv("STUDY_DATA_DIR", str(tmp_path))
    dataset = load_dataset("fashion-mnist")
    assert dataset.train_images.shape[0] == 60 and dataset.class_names[9] == "Ankle boot"


def test_explicit_data_dir_without_files_is_an_error(tmp_path):
    with pytest.raises(DatasetUnavailableError, match="--data-dir") as err:
        load_dataset("mnist", data_dir=tmp_path)
    assert "train-images-idx3-ubyte" in str(err.value)


@pytest.mark.parametrize("damage", ["truncate", "magic", "truncate_gz", "label_count"])
def test_damaged_idx_file_is_named(tmp_path, damage):
    folder = fake_idx_folder(tmp_path, gz=damage == "truncate_gz")
    if damage == "truncate":
        victim = folder / "train-images-idx3-ubyte"
        victim.write_bytes(victim.read_bytes()[:-100])
    elif damage == "magic":
        victim = folder / "t10k-labels-idx1-ubyte"
        raw = bytearray(victim.read_bytes())
        raw[2] = 0x0D  # float data type instead of unsigned bytes
        victim.write_bytes(bytes(raw))
    elif damage == "truncate_gz":
        victim = folder / "train-images-idx3-ubyte.gz"
        victim.write_bytes(victim.read_bytes()[:200])
    else:
        victim = folder / "train-labels-idx1-ubyte"
        write_idx(folder, np.zeros((60, 28, 28)), np.zeros(59), "train")
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", data_dir=folder)
    assert victim.name in str(err.value)


def test_read_idx_checks_size_before_trusting_bytes(tmp_path):
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(struct.pack(">IIII", 0x0803, 10, 28, 28) + bytes(28 * 28 * 10 + 5))
    with pytest.raises(DatasetError, match="trailing bytes"):
        read_idx(path, ndim=3)
    path.write_bytes(struct.pack(">IIII", 0x0803, 10, 28, 28) + bytes(28 * 28 * 10))
    assert read_idx(path, ndim=3).shape == (10, 28, 28)


def test_mnist_offline_without_cache_names_data_dir_and_mnist5k(tmp_path, monkeypatch):
    """No network here: the download must fail fast and say what to do instead."""
    from torchvision import datasets

    monkeypatch.setenv("STUDY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("STUDY_DATA_DIR", raising=False)
    # a closed local port refuses at once, whatever DNS does on this machine
    monkeypatch.setattr(datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])
    started = time.perf_counter()
    with pytest.raises(DatasetUnavailableError) as err:
        load_dataset("mnist")
    message = str(err.value)
    assert "--data-dir" in message and "mnist-5k" in message
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no network traceback
    assert time.perf_counter() - started < 20


@pytest.mark.skipif(not FASHION_DIR.is_dir(),
                    reason="Debian's dataset-fashion-mnist package is not installed "
                           "(apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_from_debian_package(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDY_CACHE_DIR", str(tmp_path))  # must not download
    monkeypatch.delenv("STUDY_DATA_DIR", raising=False)
    dataset = load_dataset("fashion-mnist")
    assert dataset.train_images.shape == (60000, 28, 28) and dataset.test_images.shape == (10000, 28, 28)
    assert torch.bincount(dataset.train_labels).tolist() == [6000] * 10
    assert dataset.class_names[0] == "T-shirt/top"
    assert not any(tmp_path.iterdir())


# --------------------------------------------------------------------------- splits and subsets

def test_stratified_split_counts_and_nesting():
    labels = torch.arange(1000) % 10
    rest, chosen = stratified_split(labels, 0.1, torch.Generator().manual_seed(1))
    assert torch.bincount(labels[chosen]).tolist() == [10] * 10
    assert len(set(rest.tolist()) | set(chosen.tolist())) == 1000 and not set(rest.tolist()) & set(chosen.tolist())
    _, larger = stratified_split(labels, 0.3, torch.Generator().manual_seed(1))
    assert set(chosen.tolist()) <= set(larger.tolist())  # nested subsets: arms differ by additions


def test_make_splits_is_deterministic_stratified_and_disjoint(mnist5k):
    a = make_splits(mnist5k, seed=3, val_fraction=0.1, label_fraction=0.1)
    b = make_splits(mnist5k, seed=3, val_fraction=0.1, label_fraction=0.1)
    c = make_splits(mnist5k, seed=4, val_fraction=0.1, label_fraction=0.1)
    assert torch.equal(a.train_index, b.train_index) and torch.equal(a.val_index, b.val_index)
    assert not torch.equal(a.train_index, c.train_index)
    # the validation split comes from the labelled subset: 10% of the labels, 10% of them
    # held out, stratified (4 of 40 per class), disjoint from training
    assert torch.bincount(a.val_y).tolist() == [4] * 10
    assert torch.bincount(a.train_y).tolist() == [36] * 10
    assert not set(a.train_index.tolist()) & set(a.val_index.tolist())
    assert a.train_x.dtype == torch.float32 and a.train_x.shape == (360, 1, 28, 28)
    assert 0.0 <= a.train_x.min() and a.train_x.max() <= 1.0
    assert torch.equal(a.test_y, mnist5k.test_labels)
    # the subsets are nested in the 100% split: its validation images (which no autoencoder of
    # the seed trained on) hold the 10% arm's, and an epoch's budget is the full split's size
    full = make_splits(mnist5k, seed=3, val_fraction=0.1)
    assert set(a.val_index.tolist()) <= set(full.val_index.tolist())
    assert set(a.train_index.tolist()) <= set(full.train_index.tolist())
    assert len(full.train_index) == 3600 and a.full_train_size == full.full_train_size == 3600
    assert len(full.val_index) == 400


@pytest.mark.parametrize("fraction, message", [
    (0.0, "out of range"), (-0.5, "out of range"), (1.5, "out of range"),
    (0.001, "too small to hold one example per class"),
])
def test_bad_label_fraction(mnist5k, fraction, message):
    with pytest.raises(ValueError, match=message) as err:
        make_splits(mnist5k, seed=0, val_fraction=0.1, label_fraction=fraction)
    assert "label_fraction" in str(err.value)


def test_even_odd_mapping():
    labels = torch.arange(10)
    assert make_targets(labels, "even_odd").tolist() == [0, 1, 0, 1, 0, 1, 0, 1, 0, 1]
    assert torch.equal(make_targets(labels, "digits"), labels)


# --------------------------------------------------------------------------- seed streams

def test_seed_streams_are_deterministic_and_independent():
    for name in STREAM_NAMES:
        assert torch.equal(torch.rand(5, generator=stream(7, name)), torch.rand(5, generator=stream(7, name)))
    draws = {name: torch.rand(5, generator=stream(7, name)) for name in STREAM_NAMES}
    assert len({tuple(v.tolist()) for v in draws.values()}) == len(STREAM_NAMES)
    assert not torch.equal(torch.rand(5, generator=stream(8, "noise")), draws["noise"])
    assert sub_seed(7, "noise") == sub_seed(7, "noise") < 2**63
    with pytest.raises(ValueError, match="valid names"):
        stream(7, "dropout")


# --------------------------------------------------------------------------- corruption

def test_gaussian_noise_statistics():
    x = torch.full((200, 1, 28, 28), 0.5)
    noisy = corrupt(x, "gaussian", 0.1, torch.Generator().manual_seed(0))
    delta = noisy - x
    assert abs(delta.mean().item()) < 2e-3
    assert abs(delta.std().item() - 0.1) < 2e-3
    assert torch.equal(x, torch.full_like(x, 0.5))  # input untouched
    clipped = corrupt(x, "gaussian", 2.0, torch.Generator().manual_seed(0))
    assert clipped.min() == 0.0 and clipped.max() == 1.0  # clamped to the pixel range


def test_salt_and_pepper_fraction():
    x = torch.full((200, 1, 28, 28), 0.5)
    noisy = corrupt(x, "salt_pepper", 0.2, torch.Generator().manual_seed(0))
    salt = (noisy == 1.0).float().mean().item()
    pepper = (noisy == 0.0).float().mean().item()
    assert abs(salt + pepper - 0.2) < 5e-3
    assert abs(salt - pepper) < 5e-3
    assert ((noisy == 0.5) | (noisy == 0.0) | (noisy == 1.0)).all()


def test_fixed_test_noise_is_the_same_for_every_arm_with_a_seed():
    x = torch.rand(300, 1, 28, 28)
    a = corrupt_fixed(x, "gaussian", 0.3, stream(5, "test_noise"), chunk=128)
    b = corrupt_fixed(x, "gaussian", 0.3, stream(5, "test_noise"))
    c = corrupt_fixed(x, "gaussian", 0.3, stream(6, "test_noise"))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert corrupt_fixed(x, "none", 0.3, stream(5, "test_noise")) is x


# --------------------------------------------------------------------------- augmentation

def test_augment_identity_parameters_leave_images_unchanged(mnist5k):
    x = mnist5k.train_images[:16].unsqueeze(1).float() / 255
    identity = AugmentSpec(degrees=0.0, translate=0.0, scale=(1.0, 1.0), brightness=0.0, contrast=0.0)
    out = augment_batch(x, torch.Generator().manual_seed(0), identity)
    assert torch.allclose(out, x, atol=1e-5)


def test_augment_batch_is_random_per_image_and_reproducible(mnist5k):
    x = mnist5k.train_images[:64].unsqueeze(1).float() / 255
    a = augment_batch(x, torch.Generator().manual_seed(1))
    b = augment_batch(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b)
    assert 0.0 <= a.min() and a.max() <= 1.0
    changed = (a - x).abs().flatten(1).mean(1)
    assert (changed > 0.005).float().mean() > 0.9  # nearly every image moved
    # mild: ink stays (scale 0.9-1.1, shift <= 10%) so digits keep their mass roughly
    ratio = a.flatten(1).sum(1) / x.flatten(1).sum(1)
    assert 0.6 < ratio.median().item() < 1.4
