"""Symmetric label noise (config key label_noise, trainables.splits.flip_labels): the rate is exact
per class, a flipped label is another class, the flips depend on the seed alone (the same in
every arm of a seed, nested across rates), validation labels are flipped and test labels never,
and a rate of 0 leaves every run as it was."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

import trainables.classifier as classifier
from trainables.classifier import train_classifier
from trainables.config import ConfigError, resolve_classifier_config
from trainables.splits import flip_labels, make_splits, make_targets
from small_data import full, one_thread, tiny  # noqa: F401


def _noisy(dataset, seed, rate, label_fraction=1.0, task="digits"):
    """(clean, noisy) training and validation targets of a split, as the classifier builds them."""
    splits = make_splits(dataset, seed=seed, val_fraction=0.1, label_fraction=label_fraction)
    k = 2 if task == "even_odd" else 10
    out = {}
    for part, index in (("train", splits.train_index), ("val", splits.val_index)):
        clean = make_targets(getattr(splits, f"{part}_y"), task)
        out[part] = (index, clean, flip_labels(clean, index, rate, k, seed=seed, pool_size=len(dataset.train_labels)))
    return out


@pytest.mark.parametrize("rate", [0.2, 0.4, 0.6, 1.0])
def test_rate_is_exact_per_class_and_every_flip_is_another_class(full, rate):
    for part, (_, clean, noisy) in _noisy(full, 0, rate).items():
        flipped = noisy != clean
        for c in range(10):
            n_c = int((clean == c).sum())
            assert int(flipped[clean == c].sum()) == int(n_c * rate + 0.5), (part, c)
        assert noisy.dtype == clean.dtype and noisy.shape == clean.shape
        assert int(noisy.min()) >= 0 and int(noisy.max()) <= 9


def test_a_flipped_label_is_uniform_over_the_other_classes(full):
    """Every label wrong (rate 1): the offset to the wrong class is 1..9 with equal chances
    (3,600 draws: each offset 400 expected; a chi-square with 8 df stays below 26.1, p = 0.001)."""
    _, clean, noisy = _noisy(full, 0, 1.0)["train"]
    offsets = torch.bincount((noisy - clean) % 10, minlength=10)
    assert offsets[0] == 0
    expected = clean.numel() / 9
    chi2 = float(((offsets[1:].double() - expected) ** 2 / expected).sum())
    assert chi2 < 26.1, offsets.tolist()


def test_flips_depend_on_the_seed_only_and_are_nested_across_rates(full):
    a, again, other = _noisy(full, 3, 0.4), _noisy(full, 3, 0.4), _noisy(full, 4, 0.4)
    lower = _noisy(full, 3, 0.2)
    for part in ("train", "val"):
        assert torch.equal(a[part][2], again[part][2])
        # another seed has another split: compare the flips of the images both splits hold
        index_a, clean_a, noisy_a = a[part]
        index_o, clean_o, noisy_o = other[part]
        flipped_a, flipped_o = clean_a != noisy_a, clean_o != noisy_o
        position_a = {int(i): k for k, i in enumerate(index_a)}
        shared = [(position_a[int(i)], k) for k, i in enumerate(index_o) if int(i) in position_a]
        assert len(shared) > 20
        assert [bool(flipped_a[i]) for i, _ in shared] != [bool(flipped_o[j]) for _, j in shared]
        # 20%: a subset of 40%'s flips, each to the same wrong label
        low = lower[part][1] != lower[part][2]
        assert bool((flipped_a | ~low).all())
        assert torch.equal(lower[part][2][low], noisy_a[low])


def test_flips_follow_the_image_not_its_position(full):
    """Under a label fraction the kept images keep the wrong labels they have in the full split
    whenever they are flipped in both (the draws are per image of the pool), and the rate is
    exact within the kept subset."""
    whole = _noisy(full, 0, 0.4)["train"]
    part = _noisy(full, 0, 0.4, label_fraction=0.1)["train"]
    label_of = {int(i): int(y) for i, y in zip(whole[0], whole[2])}
    flipped_full = {int(i) for i, c, n in zip(*whole) if c != n}
    index, clean, noisy = part
    both = [k for k, i in enumerate(index) if int(i) in flipped_full and clean[k] != noisy[k]]
    assert both and all(int(noisy[k]) == label_of[int(index[k])] for k in both)
    for c in range(10):
        n_c = int((clean == c).sum())
        assert int((noisy != clean)[clean == c].sum()) == int(n_c * 0.4 + 0.5)


def test_even_odd_flips_the_task_targets(full):
    _, clean, noisy = _noisy(full, 0, 0.2, task="even_odd")["train"]
    flipped = noisy != clean
    assert torch.equal(noisy[flipped], 1 - clean[flipped])
    assert abs(int(flipped.sum()) - 0.2 * clean.numel()) <= 1


def test_rate_zero_returns_the_targets_themselves(full):
    _, clean, noisy = _noisy(full, 0, 0.0)["train"]
    assert noisy is clean


@pytest.mark.parametrize("rate", [-0.1, 1.5])
def test_rate_out_of_range_names_the_key(rate):
    with pytest.raises(ConfigError, match="'label_noise'.*float in \\[0, 1\\]"):
        resolve_classifier_config({"label_noise": rate})


# --------------------------------------------------------------------------- in the classifier

class Keep:
    """Reporter that keeps the reports and the final checkpoint directory."""

    def __init__(self, root: Path) -> None:
        self.root, self.reports = root, []

    def __call__(self, metrics, checkpoint_dir):
        self.reports.append(dict(metrics))
        if metrics.get("final"):
            shutil.copytree(checkpoint_dir, self.root)


def _digest(path: Path) -> str:
    state = torch.load(path, weights_only=True)
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode() + state[key].numpy().tobytes())
    return h.hexdigest()


def test_every_arm_of_a_seed_trains_on_the_same_wrong_labels_and_tests_on_clean_ones(tiny, tmp_path, monkeypatch):
    seen = []

    def recording(targets, index, rate, n_classes, **kw):
        noisy = flip_labels(targets, index, rate, n_classes, **kw)
        seen.append((targets.clone(), noisy.clone()))
        return noisy

    monkeypatch.setattr(classifier, "flip_labels", recording)
    arms = {"cnn": {"model": "cnn", "dropout": 0.25}, "encoder": {"model": "encoder_head", "batch_size": 64}}
    evaluations = {}
    for name, arm in arms.items():
        keep = Keep(tmp_path / name)
        train_classifier({**arm, "epochs": 1, "label_noise": 0.4, "seed": 5}, keep, dataset=tiny)
        evaluations[name] = json.loads((tmp_path / name / "evaluation.json").read_text())
        meta = json.loads((tmp_path / name / "meta.json").read_text())
        assert meta["labels_flipped"] == {"train": 360, "val": 40}   # 90 and 10 per class, 40% of each
    (train_a, val_a, train_b, val_b) = seen
    assert torch.equal(train_a[1], train_b[1]) and torch.equal(val_a[1], val_b[1])
    assert int((val_a[0] != val_a[1]).sum()) == 40                      # validation flipped too
    for evaluation in evaluations.values():                            # test labels untouched
        assert evaluation["targets"] == tiny.test_labels.tolist()


def test_label_noise_zero_is_bit_identical_to_no_label_noise_key(tiny, tmp_path):
    config = {"model": "cnn", "epochs": 2, "dropout": 0.25, "batch_size": 64, "seed": 2}
    runs = {}
    for name, extra in (("without", {}), ("zero", {"label_noise": 0.0})):
        keep = Keep(tmp_path / name)
        result = train_classifier({**config, **extra}, keep, dataset=tiny)
        runs[name] = (result["val/loss"], result["val/acc"], result["test/acc"], result["test/log_loss"],
                      _digest(tmp_path / name / "model.pt"))
    assert runs["zero"] == runs["without"]


def test_noisy_labels_change_training_but_not_the_test_labels(tiny, tmp_path):
    clean = train_classifier({"model": "cnn", "epochs": 1, "seed": 2}, Keep(tmp_path / "a"), dataset=tiny)
    noisy = train_classifier({"model": "cnn", "epochs": 1, "seed": 2, "label_noise": 0.6}, Keep(tmp_path / "b"),
                             dataset=tiny)
    assert noisy["train/loss"] > clean["train/loss"]
    # scored against the noisy validation labels: a classifier right on the true digit agrees
    # with at most 40% of them
    assert noisy["val/acc"] <= 0.41
