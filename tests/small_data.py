"""Fixtures of the trainables' tests: mnist-5k, a stratified slice of it, and one torch thread
per test module (other jobs share this machine's two cores). A test module imports the fixtures
it uses: ``from small_data import full, one_thread, tiny  # noqa: F401``."""
from __future__ import annotations

import pytest
import torch

from trainables.data import ImageDataset, load_dataset
from trainables.splits import stratified_split


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread, in force before the module-scoped training fixtures run."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def full() -> ImageDataset:
    return load_dataset("mnist-5k")


@pytest.fixture(scope="module")
def tiny(full) -> ImageDataset:
    """A stratified slice of mnist-5k (100 train / 30 test images per class), same name."""
    generator = torch.Generator().manual_seed(0)
    _, train = stratified_split(full.train_labels, 0.25, generator)
    _, test = stratified_split(full.test_labels, 0.3, generator)
    return ImageDataset(name="mnist-5k", train_images=full.train_images[train],
                        train_labels=full.train_labels[train], test_images=full.test_images[test],
                        test_labels=full.test_labels[test], class_names=full.class_names, sha256=full.sha256)
