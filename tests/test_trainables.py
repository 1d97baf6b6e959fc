"""The two trainables against docs/architecture.md §1: reports, checkpoints, resume, bad input.

Budgets are tiny (a 1,300-image slice of mnist-5k, 1-3 epochs) so the file runs in well
under a minute on one core; only the accuracy test uses all of mnist-5k.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainables import common, models
from trainables.autoencoder import train_autoencoder
from trainables.checkpoint import CheckpointError
from trainables.classifier import train_classifier
from trainables.common import TrainingDiverged
from trainables.config import (
    AUTOENCODER_SCHEMA, CLASSIFIER_SCHEMA, ConfigError, resolve_autoencoder_config,
    resolve_classifier_config,
)
from small_data import full, one_thread, tiny  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
EPOCH_KEYS = {"epoch", "train/loss", "val/loss", "final", "precision"}
TEST_KEYS = {"test/acc", "test/precision_macro", "test/recall_macro", "test/f1_macro", "test/roc_auc",
             "test/log_loss"}
COST_KEYS = {"model/trainable_params", "cost/wall_seconds", "cost/images_per_second"}
TIME_TO_KEYS = {"time_to/epoch_99", "time_to/step_99", "time_to/seconds_99"}   # tests/test_time_to.py


class Recorder:
    """A reporter that keeps every report and copies every checkpoint (as Tune would)."""

    def __init__(self, root: Path, stop_after: int | None = None) -> None:
        self.root, self.stop_after = root, stop_after
        self.reports: list[dict] = []
        self.dirs: list[Path] = []

    def __call__(self, metrics: dict, checkpoint_dir: str) -> None:
        # floats, and the precision the run trained in as a string (the runner makes it a tag)
        assert metrics["precision"] in ("fp32", "bf16"), metrics
        assert all(isinstance(v, float) for k, v in metrics.items() if k != "precision"), metrics
        kept = self.root / f"epoch-{int(metrics['epoch'])}"
        shutil.copytree(checkpoint_dir, kept)
        self.reports.append(dict(metrics))
        self.dirs.append(kept)
        if self.stop_after is not None and len(self.reports) >= self.stop_after:
            raise KeyboardInterrupt("simulated preemption")


@pytest.fixture(scope="module")
def pretrained(tiny, tmp_path_factory) -> Path:
    """A denoising autoencoder trained for 200 small steps (it first has to leave the plateau of
    predicting the mean image, about 150 steps in); its final checkpoint directory."""
    root = tmp_path_factory.mktemp("ae")
    recorder = Recorder(root)
    train_autoencoder({"epochs": 4, "batch_size": 16, "lr": 2e-3, "corruption": "salt_pepper",
                       "noise_level": 0.2, "val_fraction": 0.2}, recorder, dataset=tiny)
    return recorder.dirs[-1]


# --------------------------------------------------------------------------- learning

def test_cnn_learns_full_far_above_chance(full, tmp_path):
    recorder = Recorder(tmp_path)
    result = train_classifier({"model": "cnn", "epochs": 3, "batch_size": 64, "lr": 3e-3}, recorder,
                              dataset=full)
    assert result["test/acc"] >= 0.90, result
    assert result["checkpoint"] is None
    assert [r["epoch"] for r in recorder.reports] == [1.0, 2.0, 3.0]
    assert [r["final"] for r in recorder.reports] == [0.0, 0.0, 1.0]
    for report in recorder.reports[:-1]:
        assert set(report) == EPOCH_KEYS | {"val/acc", "val/examples"}
    final = recorder.reports[-1]
    assert EPOCH_KEYS | {"val/acc"} | TEST_KEYS | COST_KEYS | TIME_TO_KEYS <= set(final)
    assert {f"test/acc_class_{k}" for k in range(10)} <= set(final)
    assert {k: v for k, v in result.items() if k != "checkpoint"} == final
    assert final["cost/images_per_second"] > 0 and final["model/trainable_params"] > 80_000
    # checkpoint files: every epoch state.pt + meta.json; the final one also the deliverables
    assert sorted(os.listdir(recorder.dirs[0])) == ["meta.json", "state.pt"]
    assert sorted(os.listdir(recorder.dirs[-1])) == ["evaluation.json", "history.csv", "meta.json",
                                                     "model.pt", "state.pt"]
    evaluation = json.loads((recorder.dirs[-1] / "evaluation.json").read_text())
    assert len(evaluation["confusion_matrix"]) == 10 and evaluation["class_names"][3] == "3"
    assert sum(map(sum, evaluation["confusion_matrix"])) == 1000
    assert len(evaluation["misclassified"]["indices"]) <= 64
    with open(recorder.dirs[-1] / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["epoch"]) for r in rows] == [1.0, 2.0, 3.0]
    assert [r["precision"] for r in rows] == ["fp32"] * 3   # the default
    meta = json.loads((recorder.dirs[-1] / "meta.json").read_text())
    assert meta["precision"] == "fp32"
    assert meta["trainable"] == "classifier" and meta["config"] == resolve_classifier_config(
        {"model": "cnn", "epochs": 3, "batch_size": 64, "lr": 3e-3})
    assert meta["data_sha256"] == full.sha256


def test_autoencoder_validation_loss_falls_and_writes_encoder(pretrained):
    history = list(csv.DictReader(open(pretrained / "history.csv")))
    losses = [float(r["val/loss"]) for r in history]
    assert losses[-1] < losses[0] and losses[-1] < 0.045  # the mean image scores about 0.067
    assert float(history[-1]["val/psnr"]) > float(history[0]["val/psnr"])
    assert sorted(os.listdir(pretrained)) == ["autoencoder.pt", "encoder.pt", "history.csv", "meta.json",
                                              "model.pt", "state.pt"]
    encoder = torch.load(pretrained / "encoder.pt", weights_only=True)
    assert {"state_dict", "latent_dim", "dataset", "data_sha256", "corruption", "noise_level"} <= set(encoder)
    assert encoder["latent_dim"] == 32 and encoder["corruption"] == "salt_pepper"
    assert encoder["state_dict"]["latent.weight"].shape == (32, 3136)


def test_autoencoder_report_keys(tiny, tmp_path):
    recorder = Recorder(tmp_path)
    result = train_autoencoder({"epochs": 1, "val_fraction": 0.5}, recorder, dataset=tiny)
    assert set(recorder.reports[0]) == {"epoch", "train/loss", "val/loss", "val/psnr", "final", "precision",
                                        "val/best_epoch"} | COST_KEYS
    assert result["final"] == 1.0 and result["checkpoint"] is None


@pytest.mark.parametrize("mode", ["frozen", "finetuned"])
def test_pretrained_encoder_frozen_or_finetuned(tiny, pretrained, tmp_path, mode):
    recorder = Recorder(tmp_path)
    result = train_classifier({"encoder_checkpoint": str(pretrained / "encoder.pt"), "encoder_mode": mode,
                               "epochs": 4, "lr": 1e-2, "batch_size": 32}, recorder, dataset=tiny)
    before = torch.load(pretrained / "encoder.pt", weights_only=True)["state_dict"]
    after = torch.load(recorder.dirs[-1] / "model.pt", weights_only=True)
    same = all(torch.equal(before[k], after[f"encoder.{k}"]) for k in before)
    if mode == "frozen":
        assert same, "a frozen encoder must not change"
        assert result["model/trainable_params"] == 970.0  # only seed 003's head trains
    else:
        assert not same
        assert result["model/trainable_params"] == 119_200 + 970
    assert result["test/acc"] > 0.3  # ten classes: chance is 0.1


def test_even_odd_task_uses_one_logit(tiny, tmp_path):
    recorder = Recorder(tmp_path)
    result = train_classifier({"task": "even_odd", "model": "cnn", "epochs": 3, "lr": 3e-3,
                                                "batch_size": 32}, recorder,
                              dataset=tiny)
    assert {"test/acc_class_0", "test/acc_class_1"} <= set(result)
    assert "test/acc_class_2" not in result
    model_state = torch.load(recorder.dirs[-1] / "model.pt", weights_only=True)
    last_layer = [v for k, v in model_state.items() if k.endswith("weight") and v.dim() == 2][-1]
    assert last_layer.shape == (1, 32)  # one logit, BCEWithLogitsLoss
    evaluation = json.loads((recorder.dirs[-1] / "evaluation.json").read_text())
    assert evaluation["class_names"] == ["even", "odd"]
    assert result["test/acc"] > 0.6


def test_denoiser_in_front_and_noisy_test_set(tiny, pretrained, tmp_path):
    config = {"model": "cnn", "denoiser_checkpoint": str(pretrained / "autoencoder.pt"), "epochs": 1,
              "train_corruption": "salt_pepper", "train_noise_level": 0.2,
              "test_corruption": "salt_pepper", "test_noise_level": 0.2, "augment": True}
    recorder = Recorder(tmp_path)
    result = train_classifier(config, recorder, dataset=tiny)
    meta = json.loads((recorder.dirs[-1] / "meta.json").read_text())
    assert meta["model_description"].startswith("DenoisedClassifier(denoiser latent_dim=32")
    cnn_params = models.count_trainable(models.SmallCNN(10))
    assert result["model/trainable_params"] == cnn_params  # the denoiser is frozen
    evaluation = json.loads((recorder.dirs[-1] / "evaluation.json").read_text())
    assert evaluation["test_corruption"] == "salt_pepper"


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def test_denoiser_at_test_time_only(tiny, pretrained, tmp_path):
    """denoiser_at="test": the classifier trains and validates exactly as the same config without a
    denoiser (same seed, same weights), and only the test inputs pass through the denoiser; the
    delivered model.pt is the denoiser + classifier that was tested."""
    from trainables.model_export import load_classifier

    noisy_test = {"model": "cnn", "epochs": 2, "dropout": 0.25, "batch_size": 64, "seed": 1,
                  "test_corruption": "salt_pepper", "test_noise_level": 0.2}
    alone, behind = Recorder(tmp_path / "alone"), Recorder(tmp_path / "behind")
    plain = train_classifier(noisy_test, alone, dataset=tiny)
    denoised = train_classifier({**noisy_test, "denoiser_checkpoint": str(pretrained / "autoencoder.pt"),
                                 "denoiser_at": "test"}, behind, dataset=tiny)
    assert [r["val/loss"] for r in behind.reports] == [r["val/loss"] for r in alone.reports]
    assert denoised["train/loss"] == plain["train/loss"]
    assert denoised["time_to/epoch_99"] == plain["time_to/epoch_99"]
    a, b = _weights(alone.dirs[-1] / "model.pt"), _weights(behind.dirs[-1] / "model.pt")
    assert {k for k in b if k.startswith("denoiser.")} and {k.removeprefix("classifier.") for k in b
                                                            if k.startswith("classifier.")} == set(a)
    assert all(torch.equal(a[k], b[f"classifier.{k}"]) for k in a)
    assert denoised["test/acc"] != plain["test/acc"]                  # the test inputs were denoised
    assert denoised["model/trainable_params"] == plain["model/trainable_params"]
    evaluation = json.loads((behind.dirs[-1] / "evaluation.json").read_text())
    assert evaluation["denoiser_at"] == "test" and evaluation["test_corruption"] == "salt_pepper"
    meta = json.loads((behind.dirs[-1] / "meta.json").read_text())
    assert meta["model_description"].startswith("SmallCNN(")          # what trained: the classifier alone
    # the delivered model (the MLflow model's) is the pipeline that was tested
    model = load_classifier(behind.dirs[-1] / "model.pt", meta["config"], 10)
    assert isinstance(model, models.DenoisedClassifier)


def test_denoiser_at_test_needs_a_denoiser(tiny):
    with pytest.raises(ConfigError, match="'denoiser_at' = 'test' but no denoiser_checkpoint"):
        train_classifier({"model": "cnn", "epochs": 1, "denoiser_at": "test"}, lambda m, d: None, dataset=tiny)


def test_a_test_time_denoiser_costs_no_training_time():
    from trainables.cost import classifier_epoch_seconds

    base = {"model": "cnn", "dataset": "mnist-5k"}
    trained_behind = classifier_epoch_seconds({**base, "denoiser_artifact": "dae/0/autoencoder.pt"}, "cpu")
    tested_behind = classifier_epoch_seconds({**base, "denoiser_artifact": "dae/0/autoencoder.pt",
                                              "denoiser_at": "test"}, "cpu")
    assert tested_behind == classifier_epoch_seconds(base, "cpu") < trained_behind


def test_label_fraction_keeps_a_stratified_subset(tiny, tmp_path):
    recorder = Recorder(tmp_path)
    train_classifier({"model": "cnn", "epochs": 1, "label_fraction": 0.1, "evaluate_test": False},
                     recorder, dataset=tiny)
    meta = json.loads((recorder.dirs[-1] / "meta.json").read_text())
    assert meta["n_val"] == 10 and meta["n_train"] == 90  # 1 / 9 per class: validation from the labels kept
    assert not TEST_KEYS & set(recorder.reports[-1])  # evaluate_test=False: no test metrics
    assert COST_KEYS <= set(recorder.reports[-1])
    assert "evaluation.json" not in os.listdir(recorder.dirs[-1])


def test_early_stopping_ends_the_run_and_reports_final(tiny, tmp_path, monkeypatch):
    """A constant validation loss never improves after epoch 1: patience 1 stops at epoch 2."""
    import trainables.classifier as classifier

    monkeypatch.setattr(classifier, "predict", lambda model, x, backend: torch.zeros(len(x), 10))
    recorder = Recorder(tmp_path)
    result = train_classifier({"model": "cnn", "epochs": 6, "early_stopping_patience": 1}, recorder,
                              dataset=tiny)
    assert [r["epoch"] for r in recorder.reports] == [1.0, 2.0]
    assert result["final"] == 1.0 and "test/acc" in result
    evaluation = json.loads((recorder.dirs[-1] / "evaluation.json").read_text())
    assert evaluation["weights_from_epoch"] == 1  # the best validation epoch's weights


# --------------------------------------------------------------------------- protocol (issue 9)

def _optimizer_steps(checkpoint: Path) -> int:
    state = torch.load(checkpoint / "state.pt", weights_only=False)
    return int(next(iter(state["optimizer"]["state"].values()))["step"])


def test_label_fractions_take_the_same_optimizer_steps(tiny, tmp_path):
    """An epoch is the full training split's worth of examples whatever the label fraction,
    so the 10% arm is not trained 10x shorter than the 100% arm."""
    steps = {}
    for fraction in (1.0, 0.1):
        recorder = Recorder(tmp_path / str(fraction))
        train_classifier({"model": "cnn", "epochs": 2, "label_fraction": fraction, "evaluate_test": False,
                          "batch_size": 64}, recorder, dataset=tiny)
        meta = json.loads((recorder.dirs[-1] / "meta.json").read_text())
        steps[fraction] = (_optimizer_steps(recorder.dirs[-1]), meta["n_train"])
    assert steps[0.1][1] * 10 == steps[1.0][1]               # a tenth of the images ...
    assert steps[0.1][0] == steps[1.0][0] == 2 * -(-900 // 64)  # ... and the same steps


def test_validation_follows_the_training_distribution_not_the_test_corruption(tiny, tmp_path):
    """No oracle selection: the clean-trained arm validates on clean images even when it is
    scored on corrupted ones; the noisy-trained arm validates on its own training noise."""
    base = {"model": "cnn", "epochs": 1, "batch_size": 64}
    noisy_test = {"test_corruption": "salt_pepper", "test_noise_level": 0.2}
    noisy_train = {"train_corruption": "salt_pepper", "train_noise_level": 0.2}
    clean = train_classifier(base, Recorder(tmp_path / "a"), dataset=tiny)
    shifted = train_classifier({**base, **noisy_test}, Recorder(tmp_path / "b"), dataset=tiny)
    noisy = train_classifier({**base, **noisy_test, **noisy_train}, Recorder(tmp_path / "c"), dataset=tiny)
    assert shifted["val/loss"] == clean["val/loss"] and shifted["val/acc"] == clean["val/acc"]
    assert shifted["test/acc"] != clean["test/acc"]          # scored on the corrupted test set
    assert noisy["val/loss"] != clean["val/loss"]             # validated on its own (noisy) inputs


def test_classifier_tests_the_best_validation_epoch(tiny, tmp_path):
    """The delivered (and tested) weights are the best validation epoch's, not the last's."""
    recorder = Recorder(tmp_path)
    result = train_classifier({"model": "cnn", "epochs": 4, "lr": 3e-2, "batch_size": 32}, recorder, dataset=tiny)
    keys = [(r["val/acc"], -r["val/loss"]) for r in recorder.reports]
    chosen = max(range(len(keys)), key=lambda i: keys[i]) + 1
    assert result["val/best_epoch"] == chosen
    evaluation = json.loads((recorder.dirs[-1] / "evaluation.json").read_text())
    assert evaluation["weights_from_epoch"] == chosen
    delivered = torch.load(recorder.dirs[-1] / "model.pt", weights_only=True)
    at_chosen = torch.load(recorder.dirs[chosen - 1] / "state.pt", weights_only=False)["model"]
    assert all(torch.equal(delivered[k], at_chosen[k]) for k in delivered)


def test_autoencoder_stops_early_and_delivers_its_best_epoch(tiny, tmp_path, monkeypatch):
    """Validation loss that worsens after epoch 2: patience 2 stops at epoch 4 and the
    delivered autoencoder and encoder are epoch 2's weights."""
    import trainables.autoencoder as autoencoder

    calls = []
    real_predict = autoencoder.predict

    def worsening(model, x, backend):
        calls.append(1)
        out = real_predict(model, x, backend)
        return out if len(calls) <= 2 else (out + 0.1 * len(calls)).clamp(0, 1)

    monkeypatch.setattr(autoencoder, "predict", worsening)
    recorder = Recorder(tmp_path)
    result = train_autoencoder({"epochs": 8, "patience": 2, "val_fraction": 0.2, "batch_size": 64}, recorder,
                               dataset=tiny)
    assert [r["epoch"] for r in recorder.reports] == [1.0, 2.0, 3.0, 4.0]
    assert result["val/best_epoch"] == 2.0
    delivered = torch.load(recorder.dirs[-1] / "autoencoder.pt", weights_only=True)["state_dict"]
    at_best = torch.load(recorder.dirs[1] / "state.pt", weights_only=False)["model"]
    assert all(torch.equal(delivered[k], at_best[k]) for k in delivered)
    encoder = torch.load(recorder.dirs[-1] / "encoder.pt", weights_only=True)
    assert encoder["epoch"] == 2


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd", "rmsprop", "adagrad", "adadelta"])
def test_every_optimizer_trains(tiny, pretrained, optimizer):
    lr = {"sgd": 0.05, "adagrad": 0.05, "adadelta": 1.0}.get(optimizer, 3e-3)
    result = train_classifier({"optimizer": optimizer, "lr": lr, "encoder_checkpoint": str(pretrained),
                               "encoder_mode": "frozen", "epochs": 2, "batch_size": 32, "evaluate_test": False},
                              lambda metrics, directory: None, dataset=tiny)
    assert result["train/loss"] < 2.3  # below the uniform guess, ln 10


# --------------------------------------------------------------------------- resume

RESUME_CASES = {
    # every random stream in play: dropout (global RNG), augmentation, train noise, order
    "classifier": (train_classifier, {"model": "cnn", "epochs": 3, "dropout": 0.3, "augment": True,
                                      "train_corruption": "gaussian", "train_noise_level": 0.2,
                                      "label_noise": 0.2, "early_stopping_patience": 5, "seed": 3}),
    "autoencoder": (train_autoencoder, {"epochs": 3, "corruption": "gaussian", "noise_level": 0.3,
                                        "val_fraction": 0.5, "seed": 3}),
}


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("name", sorted(RESUME_CASES))
def test_resume_is_bit_identical_to_an_uninterrupted_run(tiny, tmp_path, name, precision):
    train, config = RESUME_CASES[name]
    config = {**config, "precision": precision}   # bf16: emulated, with a warning, on CPUs without it
    straight = Recorder(tmp_path / "straight")
    expected = train(config, straight, dataset=tiny)
    interrupted = Recorder(tmp_path / "interrupted", stop_after=1)
    with pytest.raises(KeyboardInterrupt):
        train(config, interrupted, dataset=tiny)
    resumed = Recorder(tmp_path / "resumed")
    result = train(config, resumed, dataset=tiny, resume_from=str(interrupted.dirs[0]))
    assert [r["epoch"] for r in resumed.reports] == [2.0, 3.0]
    a = torch.load(straight.dirs[-1] / "state.pt", weights_only=False)
    b = torch.load(resumed.dirs[-1] / "state.pt", weights_only=False)
    assert a["epoch"] == b["epoch"] == 3
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for index, slot in a["optimizer"]["state"].items():  # Adam's moments too
        for name, value in slot.items():
            assert torch.equal(value, b["optimizer"]["state"][index][name]), (index, name)
    for name, state in a["rng"]["generators"].items():
        assert torch.equal(state, b["rng"]["generators"][name]), name
    for key in ("train/loss", "val/loss"):
        assert result[key] == expected[key]
    if name == "classifier":     # the time to 99% counts the epochs before the interruption too
        assert TIME_TO_KEYS <= set(result)
        assert [result[k] for k in ("time_to/epoch_99", "time_to/step_99")] == \
            [expected[k] for k in ("time_to/epoch_99", "time_to/step_99")]
    assert [r["val/loss"] for r in b["progress"]["history"]] == [r["val/loss"] for r in a["progress"]["history"]]
    assert {r["precision"] for r in straight.reports + resumed.reports} == {precision}
    # resuming a final checkpoint has nothing left to do and returns its metrics
    again = train(config, Recorder(tmp_path / "again"), dataset=tiny, resume_from=str(resumed.dirs[-1]))
    assert again["epoch"] == 3.0 and again["val/loss"] == expected["val/loss"]


# --------------------------------------------------------------------------- bad input

def test_unknown_config_key_is_named():
    with pytest.raises(ConfigError, match="'learning_rate'") as err:
        resolve_classifier_config({"learning_rate": 0.1})
    assert "lr" in str(err.value)  # the valid keys are listed


@pytest.mark.parametrize("key, value, allowed", [
    ("lr", -1.0, "(0, 10]"), ("batch_size", 0, "[2, 65536]"), ("optimizer", "lbfgs", "'adam'"),
    ("dropout", 1.0, "[0, 1)"), ("cnn_kernel_size", 4, "3, 5, 7"), ("epochs", 2.5, "int"),
    ("augment", "yes", "true or false"), ("dataset", "cifar", "'mnist-5k'"), ("device", "tpu", "cuda"),
    ("precision", "fp16", "'fp32', 'bf16', 'auto'"),
])
def test_out_of_range_value_names_key_and_range(key, value, allowed):
    with pytest.raises(ConfigError) as err:
        resolve_classifier_config({key: value})
    assert repr(key) in str(err.value) and allowed in str(err.value)


def test_schemas_share_keys_and_resolve_defaults():
    ae, clf = resolve_autoencoder_config({}), resolve_classifier_config({})
    assert set(ae) == set(AUTOENCODER_SCHEMA) and set(clf) == set(CLASSIFIER_SCHEMA)
    assert ae["epochs"] == 10 and clf["epochs"] == 5 and clf["label_fraction"] == 1.0
    with pytest.raises(ConfigError, match="model='cnn'"):
        resolve_classifier_config({"model": "cnn", "encoder_checkpoint": "/x/encoder.pt"})


@pytest.mark.parametrize("fraction, message", [
    (0.0, "out of range"), (1.2, "out of range"), (0.001, "too small to hold one example per class"),
])
def test_bad_label_fraction_in_config(tiny, fraction, message):
    with pytest.raises(ConfigError, match=message) as err:
        train_classifier({"label_fraction": fraction, "epochs": 1}, dataset=tiny)
    assert "label_fraction" in str(err.value)


def test_unknown_dataset_in_config_lists_names():
    with pytest.raises(ConfigError, match="fashion-mnist"):
        train_classifier({"dataset": "svhn"})


@pytest.mark.parametrize("trainable", ["classifier", "autoencoder"])
def test_nan_loss_raises_training_diverged(tiny, monkeypatch, trainable):
    if trainable == "classifier":
        original = models.SmallCNN.forward
        monkeypatch.setattr(models.SmallCNN, "forward", lambda self, x: original(self, x) * float("nan"))
        run = lambda: train_classifier({"model": "cnn", "epochs": 2}, lambda m, d: None, dataset=tiny)
    else:
        original = models.Autoencoder.forward
        monkeypatch.setattr(models.Autoencoder, "forward", lambda self, x: original(self, x) + float("inf"))
        run = lambda: train_autoencoder({"epochs": 2, "val_fraction": 0.5}, lambda m, d: None, dataset=tiny)
    with pytest.raises(TrainingDiverged, match="epoch 1") as err:
        run()
    assert "train/loss" in str(err.value)


def test_encoder_of_another_shape_names_both_shapes(tiny, tmp_path):
    recorder = Recorder(tmp_path)
    train_autoencoder({"epochs": 1, "latent_dim": 16, "val_fraction": 0.5}, recorder, dataset=tiny)
    with pytest.raises(CheckpointError) as err:
        train_classifier({"encoder_checkpoint": str(recorder.dirs[-1] / "encoder.pt"), "latent_dim": 32},
                         dataset=tiny)
    assert "latent_dim=16" in str(err.value) and "latent_dim=32" in str(err.value)
    assert "[16, 3136]" in str(err.value) and "[32, 3136]" in str(err.value)


def test_resume_with_another_model_shape_names_both_shapes(tiny, tmp_path):
    recorder = Recorder(tmp_path)
    train_classifier({"epochs": 1, "head_hidden": 16, "evaluate_test": False}, recorder, dataset=tiny)
    with pytest.raises(CheckpointError) as err:
        train_classifier({"epochs": 2, "head_hidden": 8}, dataset=tiny, resume_from=str(recorder.dirs[0]))
    assert "head_hidden=16" in str(err.value) and "head_hidden=8" in str(err.value)
    with pytest.raises(CheckpointError, match="trainable 'classifier'"):
        train_autoencoder({"epochs": 2}, dataset=tiny, resume_from=str(recorder.dirs[0]))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU paths")
def test_bf16_without_native_support_warns_and_cuda_must_exist(tiny, monkeypatch):
    monkeypatch.setattr(common, "cpu_has_native_bf16", lambda: False)   # a CPU without AVX512_BF16/AMX
    with pytest.warns(UserWarning, match="'precision' = 'bf16' on cpu without native bf16") as caught:
        result = train_classifier({"model": "cnn", "epochs": 1, "precision": "bf16", "channels_last": True,
                                   "evaluate_test": False}, lambda m, d: None, dataset=tiny)
    assert "channels_last" not in " ".join(str(w.message) for w in caught)   # a layout: fine on CPU
    assert result["final"] == 1.0 and result["precision"] == "bf16"      # asked for: honoured
    with pytest.raises(ConfigError, match="CUDA is not available"):
        train_classifier({"device": "cuda"}, dataset=tiny)


def test_missing_encoder_checkpoint_is_named(tiny, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        train_classifier({"encoder_checkpoint": str(tmp_path / "nope.pt")}, dataset=tiny)


# --------------------------------------------------------------------------- standalone CLIs

def _cli(module: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_cli_pretrain_then_classify_with_frozen_encoder(tmp_path):
    out = tmp_path / "ae"
    ae = _cli("trainables.autoencoder", "--dataset", "mnist-5k", "--epochs", "2", "--val-fraction", "0.5",
              "--corruption", "gaussian", "--noise-level", "0.3", "--output", str(out))
    assert ae.returncode == 0, ae.stderr
    lines = [l for l in ae.stdout.splitlines() if l.startswith("epoch")]
    assert len(lines) == 2 and "val/psnr" in lines[0] and "(final)" in lines[1]
    assert (out / "encoder.pt").is_file()
    clf = _cli("trainables.classifier", "--dataset", "mnist-5k", "--epochs", "1", "--encoder-checkpoint",
               str(out / "encoder.pt"), "--encoder-mode", "frozen", "--label-fraction", "0.1", "--no-augment")
    assert clf.returncode == 0, clf.stderr
    lines = [l for l in clf.stdout.splitlines() if l.startswith("epoch")]
    assert len(lines) == 1 and "test/acc" in lines[0]


def test_cli_rejects_out_of_range_value():
    result = _cli("trainables.classifier", "--lr", "-1")
    assert result.returncode == 2
    assert "'lr'" in result.stderr and "(0, 10]" in result.stderr
    assert "Traceback" not in result.stderr
