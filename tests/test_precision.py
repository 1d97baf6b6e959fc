"""The CPU fast paths of issue 21: the `precision` key (fp32 | bf16 | auto, resolved where the
trial runs), channels_last on by default, what every report records, and the benchmark.

Resume under bf16 is tests/test_trainables.py's resume test, parametrized over precision.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from trainables import common
from trainables.autoencoder import train_autoencoder
from trainables.classifier import train_classifier
from trainables.common import Backend, predict, select_backend
from trainables.config import ConfigError, resolve_autoencoder_config, resolve_classifier_config
from trainables.models import SmallCNN
from small_data import full, one_thread, tiny  # noqa: F401


class Keep:
    """A reporter that keeps every report and the last checkpoint directory; with `stop_after`,
    it interrupts the run after that many reports (a preemption)."""

    def __init__(self, root: Path, stop_after: int | None = None) -> None:
        self.root, self.reports, self.stop_after = root, [], stop_after

    def __call__(self, metrics: dict, checkpoint_dir: str) -> None:
        self.reports.append(dict(metrics))
        shutil.copytree(checkpoint_dir, self.root, dirs_exist_ok=True)
        if self.stop_after is not None and len(self.reports) >= self.stop_after:
            raise KeyboardInterrupt("simulated preemption")


def native(monkeypatch, has: bool) -> None:
    """Pretend this node's CPU has (or lacks) native bf16 instructions."""
    monkeypatch.setattr(common, "cpu_has_native_bf16", lambda: has)


# --------------------------------------------------------------------------- config

def test_defaults_are_fp32_and_channels_last_and_the_old_path_stays_selectable():
    for cfg in (resolve_classifier_config({}), resolve_autoencoder_config({})):
        assert cfg["precision"] == "fp32" and cfg["channels_last"] is True
    old = select_backend({"device": "cpu", "precision": "fp32", "channels_last": False})
    assert (old.precision, old.channels_last) == ("fp32", False)
    with pytest.raises(ConfigError, match="'bf16'"):   # the one precision key replaced the bool
        resolve_classifier_config({"bf16": True})


@pytest.mark.parametrize("has, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_is_decided_by_the_node(monkeypatch, has, expected):
    native(monkeypatch, has)
    assert select_backend({"device": "cpu", "precision": "auto", "channels_last": True}).precision == expected
    assert select_backend({"device": "cpu", "precision": "fp32", "channels_last": True}).precision == "fp32"


def test_cpu_detection_reads_the_bf16_flags():
    flags = open("/proc/cpuinfo").read() if Path("/proc/cpuinfo").is_file() else ""
    if "flags" not in flags:
        pytest.skip("no x86 CPU flags in /proc/cpuinfo here")
    line = next(l for l in flags.splitlines() if l.startswith("flags"))
    expected = bool({"avx512_bf16", "amx_bf16"} & set(line.split(":", 1)[1].split()))
    assert common.cpu_has_native_bf16() is expected


# --------------------------------------------------------------------------- what a run records

@pytest.mark.parametrize("trainable", ["classifier", "autoencoder"])
def test_every_report_says_what_the_run_used(tiny, tmp_path, monkeypatch, trainable):
    native(monkeypatch, True)
    keep = Keep(tmp_path)
    config = {"epochs": 2, "precision": "auto", "val_fraction": 0.5}
    if trainable == "classifier":
        result = train_classifier({**config, "model": "cnn"}, keep, dataset=tiny)
    else:
        result = train_autoencoder(config, keep, dataset=tiny)
    assert [r["precision"] for r in keep.reports] == ["bf16", "bf16"] and result["precision"] == "bf16"
    assert json.loads((tmp_path / "meta.json").read_text())["precision"] == "bf16"
    assert "precision" in (tmp_path / "history.csv").read_text().splitlines()[0].split(",")


def test_channels_last_default_reaches_the_weights(tiny, tmp_path):
    for name, layout in {"default": {}, "old": {"channels_last": False}}.items():
        train_classifier({"model": "cnn", "epochs": 1, "evaluate_test": False, **layout}, Keep(tmp_path / name),
                         dataset=tiny)
        conv = torch.load(tmp_path / name / "state.pt", weights_only=False)["model"]["features.4.weight"]
        assert conv.is_contiguous(memory_format=torch.channels_last) is (name == "default"), name


def test_a_resumed_auto_run_keeps_its_precision_on_another_node(tiny, tmp_path, monkeypatch):
    config = {"model": "cnn", "epochs": 2, "precision": "auto", "evaluate_test": False, "seed": 1}
    native(monkeypatch, True)
    straight = train_classifier(config, lambda m, d: None, dataset=tiny)
    with pytest.raises(KeyboardInterrupt):
        train_classifier(config, Keep(tmp_path / "first", stop_after=1), dataset=tiny)
    native(monkeypatch, False)   # the trial continues on a node without native bf16
    resumed = Keep(tmp_path / "resumed")
    with pytest.warns(UserWarning, match="stays bf16"):
        result = train_classifier(config, resumed, dataset=tiny, resume_from=str(tmp_path / "first"))
    assert [r["precision"] for r in resumed.reports] == ["bf16"]
    assert result["train/loss"] == straight["train/loss"] and result["val/loss"] == straight["val/loss"]


# --------------------------------------------------------------------------- numerics under bf16

def test_bf16_keeps_batchnorm_statistics_and_master_weights_in_fp32(tiny, tmp_path):
    keep = Keep(tmp_path)
    train_classifier({"model": "cnn", "epochs": 1, "precision": "bf16", "evaluate_test": False}, keep, dataset=tiny)
    state = torch.load(tmp_path / "state.pt", weights_only=False)
    floats = {k: v.dtype for k, v in state["model"].items() if v.is_floating_point()}
    assert set(floats.values()) == {torch.float32}, floats   # running_mean/var and every weight
    moments = [v for slot in state["optimizer"]["state"].values() for k, v in slot.items() if k != "step"]
    assert {m.dtype for m in moments} == {torch.float32}


def test_evaluation_is_fp32_whatever_the_training_precision():
    torch.manual_seed(0)
    model = SmallCNN(10).eval()
    x = torch.rand(300, 1, 28, 28)
    with torch.inference_mode():
        reference = model(x)
    for precision in ("fp32", "bf16"):
        logits = predict(model, x, Backend(torch.device("cpu"), precision, False), batch_size=128)
        assert logits.dtype == torch.float32 and torch.equal(logits, reference), precision


def test_bf16_learns_like_fp32(full):
    """Not the precision study (that is a study of its own): one seed, a sanity bound."""
    accuracy = {}
    for precision in ("fp32", "bf16"):
        accuracy[precision] = train_classifier({"model": "cnn", "epochs": 2, "batch_size": 64, "lr": 3e-3,
                                                "precision": precision}, lambda m, d: None, dataset=full)["test/acc"]
    assert min(accuracy.values()) >= 0.9 and abs(accuracy["bf16"] - accuracy["fp32"]) <= 0.02, accuracy


# --------------------------------------------------------------------------- the benchmark runs

def test_precision_benchmark_prints_every_variant_and_the_targets(capsys):
    from benchmarks import precision

    precision.main(["--models", "encoder_head", "--rounds", "1", "--epochs", "1", "--step-images", "128"])
    out = capsys.readouterr().out
    assert "load average" in out
    for variant in ("old", "default", "bf16+cl"):
        assert f"encoder_head {variant}" in out
    assert "target >= 1.2x" in out
