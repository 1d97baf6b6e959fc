"""A dataset on the trial's device: the stratified validation split, the labelled subset of a
label-fraction arm, the targets of a task (digits, even/odd) and their symmetric label noise.

Every choice is drawn from a named seed stream (trainables.seeds), so every arm with the same
seed sees the same images, and the subsets are nested across fractions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from trainables.seeds import stream

if TYPE_CHECKING:
    from trainables.data import ImageDataset

EVEN_ODD_NAMES = ("even", "odd")



def stratified_split(labels: torch.Tensor, fraction: float, generator: torch.Generator
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices into (rest, chosen), `chosen` holding round(fraction * n_c) of each class c.

    Vectorised: one random permutation, a stable sort by class, then rank within class. Both
    index tensors are sorted. For the same generator state the chosen sets are nested in
    `fraction` (the 10% subset is part of the 20% subset): arms differ only in what they add.
    """
    labels = labels.cpu()
    n = labels.numel()
    perm = torch.randperm(n, generator=generator)
    grouped = perm[torch.sort(labels[perm], stable=True).indices]  # by class, random within class
    counts = torch.bincount(labels)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(n) - starts[labels[grouped]]
    take = torch.floor(counts.double() * fraction + 0.5).long()
    chosen_mask = rank < take[labels[grouped]]
    chosen = torch.sort(grouped[chosen_mask]).values
    rest = torch.sort(grouped[~chosen_mask]).values
    return rest, chosen


def _check_fraction(what: str, fraction: float, labels: torch.Tensor, class_names) -> None:
    if not (0.0 < fraction <= 1.0):
        raise ValueError(f"{what} = {fraction!r} is out of range; allowed: float in (0, 1]")
    counts = torch.bincount(labels, minlength=len(class_names))
    present = counts > 0
    taken = torch.floor(counts.double() * fraction + 0.5).long()
    starved = present & (taken < 1)
    if bool(starved.any()):
        smallest = int(counts[present].min())
        worst = int(torch.nonzero(starved)[0])
        raise ValueError(
            f"{what} = {fraction!r} is too small to hold one example per class: class "
            f"{class_names[worst]!r} has {int(counts[worst])} examples and would keep 0; "
            f"the smallest fraction that keeps one of each is {0.5 / smallest:.4g} (or more)")


@dataclass
class Splits:
    """Train / validation / test inputs on the trial's device, float32 [n, 1, 28, 28] in [0, 1]."""

    train_x: torch.Tensor
    train_y: torch.Tensor  # int64 class indices of the dataset (not yet mapped to a task)
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    train_index: torch.Tensor  # indices into dataset.train_images (provenance), CPU
    val_index: torch.Tensor
    full_train_size: int  # training images at label_fraction 1: the size of an epoch's budget


def make_splits(dataset: ImageDataset, *, seed: int, val_fraction: float,
                label_fraction: float = 1.0, device: str | torch.device = "cpu") -> Splits:
    """Hold out a stratified validation split, keep a stratified labelled subset, move to `device`.

    The validation split comes from the `split` stream. Under a label fraction < 1 the
    labelled subset keeps that share of the training part AND of the validation part (both
    stratified, from the `labels` stream): a practitioner with 10% of the labels validates on
    10% too, and the validation images stay inside the full validation split, which no
    autoencoder of the same seed and val_fraction trained on. Both depend only on (seed,
    fractions): every arm with the same seed sees the same images, and the subsets are nested
    (the 10% subset is part of the 20% one). The test set is only moved here, never selected on.
    """
    labels = dataset.train_labels
    _check_fraction("val_fraction", val_fraction, labels, dataset.class_names)
    train_index, val_index = stratified_split(labels, val_fraction, stream(seed, "split"))
    full_train_size = int(train_index.numel())
    if label_fraction != 1.0:
        generator = stream(seed, "labels")
        _check_fraction("label_fraction", label_fraction, labels[train_index], dataset.class_names)
        _check_fraction("label_fraction (of the validation split)", label_fraction, labels[val_index],
                        dataset.class_names)
        _, kept_train = stratified_split(labels[train_index], label_fraction, generator)
        _, kept_val = stratified_split(labels[val_index], label_fraction, generator)
        train_index, val_index = train_index[kept_train], val_index[kept_val]
    device = torch.device(device)

    def to_device(images: torch.Tensor) -> torch.Tensor:
        # uint8 crosses the bus (4x less than float), then one conversion on the device
        return images.to(device, non_blocking=True).unsqueeze(1).float().div_(255.0)

    return Splits(
        train_x=to_device(dataset.train_images[train_index]),
        train_y=labels[train_index].to(device),
        val_x=to_device(dataset.train_images[val_index]),
        val_y=labels[val_index].to(device),
        test_x=to_device(dataset.test_images),
        test_y=dataset.test_labels.to(device),
        train_index=train_index,
        val_index=val_index,
        full_train_size=full_train_size,
    )


def make_targets(labels: torch.Tensor, task: str) -> torch.Tensor:
    """Class indices for `task`: digits keeps them; even_odd maps 0,2,4,6,8 -> 0 and 1,3,5,7,9 -> 1."""
    if task == "digits":
        return labels
    if task == "even_odd":
        return labels.remainder(2)
    raise ValueError(f"unknown task {task!r}; valid tasks: digits, even_odd")


def task_class_names(dataset: ImageDataset, task: str) -> tuple[str, ...]:
    return EVEN_ODD_NAMES if task == "even_odd" else dataset.class_names


def flip_labels(targets: torch.Tensor, index: torch.Tensor, rate: float, n_classes: int, *, seed: int,
                pool_size: int) -> torch.Tensor:
    """Symmetric label noise: `rate` of the `targets` replaced by a wrong class; a new tensor.

    `targets` are a task's class indices of the images `index` (indices into the dataset's
    training pool of `pool_size` images: a split after its label fraction). In each class c,
    exactly round(rate * n_c) labels are flipped (stratified, as every subset here: each class
    loses the same share), and a flipped label is uniform over the OTHER n_classes - 1 classes,
    so `rate` is the share of wrong labels itself (with "uniform over all classes" a tenth of
    the draws would land on the true digit and only 0.9 * rate would be wrong); at
    rate = (n_classes - 1) / n_classes the labels carry no information (0.9 for digits).

    Which images flip, and to which class, comes from the `label_noise` stream drawn once per
    image of the pool (a uniform key, and an offset in 1..n_classes-1 added modulo n_classes):
    it depends on the seed alone, not on the arm, so the same images get the same wrong labels
    in every arm of a seed. The images of a class with the smallest keys flip first, so the
    flips of a lower rate are part of those of a higher one. Rate 0 returns `targets` itself.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"label_noise = {rate!r} is out of range; allowed: float in [0, 1]")
    if rate == 0.0:
        return targets
    generator = stream(seed, "label_noise")
    key = torch.rand(pool_size, generator=generator)                     # who flips first, per image
    offset = torch.randint(1, n_classes, (pool_size,), generator=generator)  # to which wrong class
    labels, index = targets.cpu(), index.cpu()
    by_key = torch.argsort(key[index])
    grouped = by_key[torch.sort(labels[by_key], stable=True).indices]   # by class, by key within class
    counts = torch.bincount(labels, minlength=n_classes)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(labels.numel()) - starts[labels[grouped]]
    take = torch.floor(counts.double() * rate + 0.5).long()
    flipped = grouped[rank < take[labels[grouped]]]
    noisy = labels.clone()
    noisy[flipped] = (labels[flipped] + offset[index[flipped]]) % n_classes
    return noisy.to(targets.device)
