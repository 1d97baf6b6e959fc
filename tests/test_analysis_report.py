"""The report end to end, from an MLflow store written the way the runner writes it
(docs/architecture.md §2, study/protocol.py and study/tracking.py): parent run + child runs
with all tags, per-epoch metrics with steps, final scalars at the last step, artifacts.

The test metrics of the runs are synthetic with known effects (so the statistics can be
checked); the model artifacts (model.pt, encoder.pt, autoencoder.pt, evaluation.json,
meta.json) come from really running the trainables for one epoch on mnist-5k, shared by the
runs of the same stage to keep the suite fast.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import matplotlib  # noqa: E402

matplotlib.use("Agg")

from analysis import stats  # noqa: E402
from analysis.compare import main  # noqa: E402
from analysis.load import load_study  # noqa: E402
from analysis.report import analyze, build_report  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

FACTORIAL = "ablation_pretraining"
SINGLE_SEED = "ablation_dropout"
RUNNING = "ablation_optimizer"
SEEDS = (0, 1, 2)
TUNE_SEED = 1000
PRETRAIN_KEY = "dae-salt_pepper-0.2"
BASELINE = "pretraining=none,encoder=finetuned,labels=100%"
FAILED_CELL = ("pretraining=dae,encoder=frozen,labels=10%", 2)
EPOCHS = 4
T0 = int(time.time() * 1000) - 3_600_000   # the simulated study started an hour ago (ms)

# Known effects on test/acc (see ``true_acc``): the report must find these.
EFFECT = {"dae": 0.01, "frozen": -0.01, "10%": -0.08, "dae x 10%": 0.04}
SEED_SHIFT = {0: 0.0, 1: -0.004, 2: 0.003}      # shared by every arm: the pairing removes it


def true_acc(levels: dict[str, str], seed: int) -> float:
    key = hashlib.sha256(f"{sorted(levels.items())}/{seed}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(key[:8], "little"))
    dae, frozen, few = (levels["pretraining"] == "dae", levels["encoder"] == "frozen",
                        levels["labels"] == "10%")
    return (0.95 + EFFECT["dae"] * dae + EFFECT["frozen"] * frozen + EFFECT["10%"] * few
            + EFFECT["dae x 10%"] * (dae and few) + SEED_SHIFT.get(seed, 0.0) + rng.normal(0, 0.002))


def factorial_arms() -> list[dict[str, str]]:
    cells = [dict(zip(("pretraining", "encoder", "labels"), c))
             for c in itertools.product(("none", "dae"), ("finetuned", "frozen"), ("100%", "10%"))]
    # declared invalid in the registry: nothing pretrained to freeze
    return [c for c in cells if not (c["pretraining"] == "none" and c["encoder"] == "frozen")]


def arm_name(levels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in levels.items())


# ---------------------------------------------------------------------------------------------
# Real artifacts from the trainables (one epoch on mnist-5k)
# ---------------------------------------------------------------------------------------------

def copy_last_checkpoint(target: Path):
    """A reporter keeping the last checkpoint dir the trainable hands over (as Tune does)."""
    def reporter(metrics: dict, checkpoint_dir: str) -> None:
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(checkpoint_dir, target)
    return reporter


AE_CONFIG = {"dataset": "mnist-5k", "epochs": 1, "seed": 0, "val_fraction": 0.5, "device": "cpu",
             "corruption": "salt_pepper", "noise_level": 0.2, "batch_size": 256}
CLF_CONFIG = {"dataset": "mnist-5k", "epochs": 1, "seed": 0, "label_fraction": 0.25, "device": "cpu",
              "model": "encoder_head", "lr": 3e-3}


def train_artifacts(dst: Path) -> dict[str, Path]:
    from trainables.autoencoder import train_autoencoder
    from trainables.classifier import train_classifier

    train_autoencoder(AE_CONFIG, copy_last_checkpoint(dst / "autoencoder"))
    train_classifier({**CLF_CONFIG, "encoder_checkpoint": str(dst / "autoencoder" / "encoder.pt")},
                     copy_last_checkpoint(dst / "classifier"))
    return {"autoencoder": dst / "autoencoder", "classifier": dst / "classifier"}


@pytest.fixture(scope="session")
def trained(request, tmp_path_factory) -> dict[str, Path]:
    """Trained once per source version of trainables/ and kept in pytest's cache folder
    (in a temporary folder when the cache is off: ``-p no:cacheprovider``)."""
    source = b"".join(p.read_bytes() for p in sorted((ROOT / "trainables").glob("*.py")))
    key = hashlib.sha256(source + json.dumps([AE_CONFIG, CLF_CONFIG]).encode()).hexdigest()[:16]
    cache_plugin = getattr(request.config, "cache", None)
    folder = cache_plugin.mkdir("analysis-trained") if cache_plugin else tmp_path_factory.mktemp("trained")
    cache = Path(folder) / key
    done = cache / "done"
    if not done.exists():
        shutil.rmtree(cache, ignore_errors=True)
        train_artifacts(cache)
        done.touch()
    return {"autoencoder": cache / "autoencoder", "classifier": cache / "classifier"}


# ---------------------------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------------------------

class Writer:
    """Writes runs the way study/tracking.py does."""

    def __init__(self, uri: str, root: Path):
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(uri)
        self.root = root
        self.clock = T0

    def experiment(self, name: str) -> str:
        return self.client.create_experiment(name, artifact_location=(self.root / "artifacts" / name).as_uri())

    def parent(self, exp: str, study: str, design: str, factors: list[str], baseline: str,
               status: str, seeds=SEEDS, extra: dict | None = None) -> str:
        tags = {"study": study, "run_kind": "study", "budget": "smoke", "baseline_arm": baseline,
                "design": design, "factors": json.dumps(factors), "dataset": "mnist-5k",
                "data_sha256": "64935364c9f70d8e", "git_commit": "0123456789abcdef0123",
                "git_dirty": "false", "hardware": "1x NVIDIA H100; 16 CPU cores (x86_64)",
                "gpus_per_trial": "0.5", "cpus_per_trial": "2",
                "command": f"python -m study.run {study} --budget smoke", "metric": "val/acc",
                "mode": "max", "seeds": json.dumps(list(seeds)), "study_status": status,
                "versions.torch": "2.14.1", "versions.mlflow": "3.17.2", "versions.ray": "2.60.0",
                "versions.optuna": "5.0.0", **(extra or {})}
        run = self.client.create_run(exp, start_time=self.clock, tags=tags, run_name=f"{study}-smoke")
        return run.info.run_id

    def finish_parent(self, run_id: str, status: str) -> None:
        self.client.set_tag(run_id, "study_status", status)
        if status != "running":
            self.client.set_terminated(run_id, "FINISHED" if status == "finished" else "KILLED", end_time=self.clock)

    def trial(self, exp: str, parent: str, study: str, *, stage: str, arm: str, phase: str, seed: int,
              config: dict, curve: list[dict], final: dict | None, outcome: str, wall: float,
              tags: dict | None = None, artifacts: Path | None = None, failure: str | None = None) -> str:
        from mlflow.entities import Metric, Param

        trial_id = hashlib.sha1(f"{study}{stage}{arm}{phase}{seed}{self.clock}".encode()).hexdigest()[:8]
        own = {k: v for k, v in config.items() if not k.startswith("meta.")}
        base = {"study": study, "run_kind": "trial", "stage": stage, "arm": arm, "phase": phase,
                "seed": str(seed), "trial_id": trial_id, "trial_key": f"{study}/{trial_id}",
                "config_hash": hashlib.sha256(json.dumps(own, sort_keys=True, default=str).encode()).hexdigest()[:16],
                "git_commit": "0123456789abcdef0123", "git_dirty": "false", "dataset": "mnist-5k",
                "data_sha256": "64935364c9f70d8e", "versions.torch": "2.14.1",
                "hardware": "1x NVIDIA H100; 16 CPU cores (x86_64)", "gpus_per_trial": "0.5",
                "cpus_per_trial": "2", "outcome": "running", "mlflow.parentRunId": parent,
                "budget": "smoke", **(tags or {})}
        start = self.clock
        # The runner tags outcome=running first and the final outcome at the end; only the
        # final state is stored, so it is written in one go (fewer SQLite transactions).
        final_tags = {"outcome": outcome}
        if failure:
            final_tags["failure_reason"] = failure
        if outcome == "pruned":
            final_tags["stop_reason"] = "stopped early by ASHA"
        run = self.client.create_run(exp, start_time=start, tags={**base, **final_tags},
                                     run_name=f"{arm}/{trial_id}")
        rid = run.info.run_id
        metrics = []
        for i, row in enumerate(curve, 1):
            ts = start + int(wall * 1000 * i / max(len(curve), 1))
            metrics += [Metric(k, float(v), ts, i) for k, v in row.items()]
        if final:
            metrics += [Metric(k, float(v), start, len(curve)) for k, v in final.items()]
        if outcome in ("completed", "pruned"):   # the runner's on_trial_complete
            metrics += [Metric("cost/wall_seconds_trial", wall, start, len(curve)),
                        Metric("cost/gpu_seconds", 0.5 * wall, start, len(curve)),
                        Metric("cost/cpu_seconds", 2 * wall, start, len(curve))]
        self.client.log_batch(rid, metrics=metrics, params=[Param(k, str(v)) for k, v in config.items()])
        if artifacts is not None:
            for f in sorted(artifacts.iterdir()):
                if f.name != "state.pt":            # the runner keeps state.pt out of the record
                    self.client.log_artifact(rid, str(f))
        self.clock += int(wall * 1000) + 1000
        if outcome != "running":
            self.client.set_terminated(rid, "FAILED" if outcome == "failed" else "FINISHED",
                                       end_time=start + int(wall * 1000))
        return rid


def classifier_config(levels: dict[str, str] | None, seed: int, phase: str, lr: float, **extra) -> dict:
    from trainables.config import resolve_classifier_config

    levels = levels or {}
    cfg = resolve_classifier_config({
        "dataset": "mnist-5k", "seed": seed, "epochs": EPOCHS, "lr": lr, "latent_dim": 32,
        "encoder_mode": levels.get("encoder", "finetuned"),
        "label_fraction": 0.1 if levels.get("labels") == "10%" else 1.0,
        "evaluate_test": phase == "replicate", **extra})
    meta = {"meta.arm": arm_name(levels) if levels else extra.get("model", "?"), "meta.stage": "classify",
            "meta.phase": phase, "meta.trainable": "trainables.classifier:train_classifier"}
    if levels.get("pretraining") == "dae":
        meta["meta.encoder_artifact"] = f"{PRETRAIN_KEY}/{seed}"
    return {**cfg, **meta}


def curve_to(acc: float, epochs: int, final: bool) -> list[dict]:
    """A learning curve that ends near ``acc``; the last row carries final = 1 when finished."""
    rows = []
    for e in range(1, epochs + 1):
        f = e / EPOCHS
        rows.append({"epoch": e, "train/loss": 2.3 * (1 - f) + 0.1, "val/loss": 2.0 * (1 - f) + 0.15,
                     "val/acc": 0.1 + (acc - 0.1) * f ** 0.5, "final": float(final and e == epochs)})
    return rows


def final_test_metrics(acc: float) -> dict:
    return {"test/acc": acc, "test/f1_macro": acc - 0.004, "test/precision_macro": acc - 0.002,
            "test/recall_macro": acc, "test/roc_auc": 0.99 + 0.1 * (acc - 0.95),
            "test/log_loss": 0.2 - 2 * (acc - 0.95), "model/trainable_params": 120170.0,
            "cost/wall_seconds": 30.0, "cost/images_per_second": 1000.0,
            **{f"test/acc_class_{c}": acc for c in range(10)}}


def write_factorial_study(w: Writer, trained: dict[str, Path] | None) -> None:
    exp = w.experiment(FACTORIAL)
    parent = w.parent(exp, FACTORIAL, "factorial", ["pretraining", "encoder", "labels"], BASELINE, "running")
    ae_dir = trained["autoencoder"] if trained else None
    clf_dir = trained["classifier"] if trained else None
    from trainables.config import resolve_autoencoder_config

    pre_cfg = {**resolve_autoencoder_config({**AE_CONFIG, "epochs": EPOCHS}), "meta.arm": PRETRAIN_KEY,
               "meta.stage": "pretrain", "meta.trainable": "trainables.autoencoder:train_autoencoder"}
    ptags = {"pretraining": PRETRAIN_KEY}
    # pretrain stage: tune (one trial pruned), then one autoencoder per seed (and the tune seed)
    for i, outcome in enumerate(("completed", "pruned")):
        n = EPOCHS if outcome == "completed" else 1
        curve = [{"epoch": e, "train/loss": 0.1 / e, "val/loss": 0.08 / e + 0.01 * i, "val/psnr": 12 + e,
                  "final": float(outcome == "completed" and e == n)} for e in range(1, n + 1)]
        w.trial(exp, parent, FACTORIAL, stage="pretrain", arm=PRETRAIN_KEY, phase="tune", seed=TUNE_SEED,
                config={**pre_cfg, "seed": TUNE_SEED, "lr": 10 ** (-3 + i), "meta.phase": "tune"},
                curve=curve, final=None, outcome=outcome, wall=40.0 * n / EPOCHS, tags=ptags)
    pretrained = {}
    for seed in (*SEEDS, TUNE_SEED):
        curve = [{"epoch": e, "train/loss": 0.1 / e, "val/loss": 0.08 / e, "val/psnr": 12 + e,
                  "final": float(e == EPOCHS)} for e in range(1, EPOCHS + 1)]
        pretrained[f"{PRETRAIN_KEY}/{seed}"] = w.trial(
            exp, parent, FACTORIAL, stage="pretrain", arm=PRETRAIN_KEY, phase="replicate", seed=seed,
            config={**pre_cfg, "seed": seed, "meta.phase": "replicate"}, curve=curve,
            final={"model/trainable_params": 278369.0, "cost/wall_seconds": 40.0}, outcome="completed",
            wall=40.0, tags={**ptags, "pretrain_cache_key": f"k{seed}"}, artifacts=ae_dir)
    w.client.set_tag(parent, "pretrained_runs", json.dumps(pretrained))
    # classify stage: tune (2 trials per arm, one pruned by ASHA), then replicates
    for i, levels in enumerate(factorial_arms()):
        arm = arm_name(levels)
        cell_tags = {"is_baseline": str(arm == BASELINE).lower(),
                     **{f"factor.{k}": v for k, v in levels.items()}}
        for j, outcome in enumerate(("completed", "pruned")):
            n = EPOCHS if outcome == "completed" else 1 + (i % 2)
            w.trial(exp, parent, FACTORIAL, stage="classify", arm=arm, phase="tune", seed=TUNE_SEED,
                    config=classifier_config(levels, TUNE_SEED, "tune", 10 ** (-3.5 + 0.5 * j)),
                    curve=curve_to(true_acc(levels, 0) - 0.05 * j, n, outcome == "completed"),
                    final=None, outcome=outcome, wall=20.0 * n / EPOCHS, tags=cell_tags)
        lr = round(10 ** (-3.5 + 0.1 * i), 6)    # the tuned lr differs per arm
        for seed in SEEDS:
            acc = true_acc(levels, seed)
            if (arm, seed) == FAILED_CELL:
                w.trial(exp, parent, FACTORIAL, stage="classify", arm=arm, phase="replicate", seed=seed,
                        config=classifier_config(levels, seed, "replicate", lr),
                        curve=curve_to(acc, 1, False), final=None, outcome="failed", wall=5.0,
                        tags=cell_tags, failure="TrainingDiverged: val/loss is nan in epoch 2")
                continue
            w.trial(exp, parent, FACTORIAL, stage="classify", arm=arm, phase="replicate", seed=seed,
                    config=classifier_config(levels, seed, "replicate", lr),
                    curve=curve_to(acc, EPOCHS, True), final=final_test_metrics(acc), outcome="completed",
                    wall=30.0, tags=cell_tags, artifacts=clf_dir)
    w.finish_parent(parent, "finished")


def write_single_seed_study(w: Writer) -> None:
    exp = w.experiment(SINGLE_SEED)
    arms = {"dropout=0": 0.0, "dropout=0.25": 0.25}
    parent = w.parent(exp, SINGLE_SEED, "one_at_a_time", ["dropout"], "dropout=0", "running", seeds=(0,))
    for arm, p in arms.items():
        acc = 0.97 + 0.01 * p
        w.trial(exp, parent, SINGLE_SEED, stage="classify", arm=arm, phase="replicate", seed=0,
                config=classifier_config(None, 0, "replicate", 1e-3, model="cnn", dropout=p),
                curve=curve_to(acc, EPOCHS, True), final=final_test_metrics(acc), outcome="completed", wall=10.0,
                tags={"is_baseline": str(arm == "dropout=0").lower(), "factor.dropout": str(p)})
    w.finish_parent(parent, "finished")


def write_running_study(w: Writer) -> None:
    exp = w.experiment(RUNNING)
    parent = w.parent(exp, RUNNING, "one_at_a_time", ["optimizer"], "optimizer=adam", "running")
    for arm in ("optimizer=adam", "optimizer=sgd"):
        for seed in SEEDS:
            if arm == "optimizer=sgd" and seed > 0:
                continue       # not started yet: missing cells
            running = arm == "optimizer=sgd"
            acc = 0.96 + 0.001 * seed
            w.trial(exp, parent, RUNNING, stage="classify", arm=arm, phase="replicate", seed=seed,
                    config=classifier_config(None, seed, "replicate", 1e-3, model="cnn"),
                    curve=curve_to(acc, 2 if running else EPOCHS, not running),
                    final=None if running else final_test_metrics(acc),
                    outcome="running" if running else "completed", wall=10.0,
                    tags={"is_baseline": str(arm == "optimizer=adam").lower(),
                          "factor.optimizer": arm.split("=")[1]})


TUNING = "ablation_noise"


def write_tuning_study(w: Writer) -> None:
    """Still in its tune phase: no replicate run yet."""
    exp = w.experiment(TUNING)
    parent = w.parent(exp, TUNING, "one_at_a_time", ["noise"], "noise=clean", "running")
    for arm, outcome in (("noise=clean", "pruned"), ("noise=clean", "running"), ("noise=gaussian", "running")):
        w.trial(exp, parent, TUNING, stage="classify", arm=arm, phase="tune", seed=TUNE_SEED,
                config=classifier_config(None, TUNE_SEED, "tune", 1e-3, model="cnn"),
                curve=curve_to(0.9, 1, False), final=None, outcome=outcome, wall=10.0,
                tags={"is_baseline": str(arm == "noise=clean").lower(), "factor.noise": arm.split("=")[1]})


def build_store(root: Path, trained: dict[str, Path] | None) -> str:
    root.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    w = Writer(uri, root)
    write_factorial_study(w, trained)
    write_single_seed_study(w)
    write_running_study(w)
    write_tuning_study(w)
    return uri


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> str:
    """Metrics and tags only (no model artifacts): fast."""
    return build_store(tmp_path_factory.mktemp("store"), None)


@pytest.fixture(scope="session")
def store_with_models(tmp_path_factory, trained) -> str:
    return build_store(tmp_path_factory.mktemp("store_models"), trained)


def run_cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "analysis.compare", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------

def test_load_study_frame(store):
    study = load_study(FACTORIAL, store)
    runs = study.runs
    n_arms = len(factorial_arms())
    # pretrain: 2 tune + 4 replicate; classify: 2 tune per arm + 3 seeds per arm
    assert len(runs) == 6 + n_arms * 5
    assert set(runs["stage"]) == {"upstream", "classify"}      # an older store's "pretrain" reads "upstream"
    assert runs["seed"].dtype.name == "Int64"
    assert {"factor.pretraining", "factor.encoder", "factor.labels", "params.lr",
            "metrics.test/acc", "metrics.val/acc"} <= set(runs.columns)
    assert study.baseline_arm == BASELINE and study.design == "factorial"
    assert study.factors == ["pretraining", "encoder", "labels"]
    assert study.seeds() == list(SEEDS) and not study.is_partial
    assert len(study.comparison_runs()) == n_arms * len(SEEDS) - 1      # one failed cell
    scores = study.scores(["test/acc"])
    # rows: one per (arm, seed, metric)
    assert len(scores) == n_arms * len(SEEDS) - 1
    assert scores.set_index(["arm", "seed"]).loc[(BASELINE, 1), "value"] == pytest.approx(
        true_acc(dict(zip(("pretraining", "encoder", "labels"), ("none", "finetuned", "100%"))), 1))


# ---------------------------------------------------------------------------------------------
# The report, fast (no model artifacts)
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def factorial_report(store, tmp_path_factory):
    from analysis.figures import FigureOptions
    out = tmp_path_factory.mktemp("report_fast")
    return build_report(FACTORIAL, tracking_uri=store, output_dir=out, log_figures=False,
                        command="pytest", figure_options=FigureOptions(tsne_points=200))


def test_report_files_and_statistics(factorial_report):
    out = factorial_report.output_dir
    for name in ("comparison.md", "comparison.html", "comparison.tex", "report.html",
                 "comparison_arms.csv", "comparison_differences.csv", "factorial_effects.csv",
                 "completeness_classify.csv", "hyperparameters_classify.csv", "cost.csv", "scores.csv"):
        assert (out / name).is_file(), name
    diff = pd.read_csv(out / "comparison_differences.csv")
    acc = diff[diff["metric"] == "test/acc"].set_index("arm")
    few = acc.loc["pretraining=none,encoder=finetuned,labels=10%"]
    assert few["diff"] == pytest.approx(EFFECT["10%"], abs=0.005)
    # the same difference as the baseline-comparisons family's contrast: its verdict (one wording)
    assert few["planned_contrast"] == "pretraining=none,encoder=finetuned,labels=10% vs baseline"
    assert few["verdict"] == "different, at least the SESOI (0.5 pp)" and few["n"] == 3
    # the failed seed is not paired: 2 pairs
    assert acc.loc[FAILED_CELL[0], "n"] == 2
    # Holm within a metric over the 5 comparisons
    assert acc["p_t_holm"].to_numpy() == pytest.approx(stats.holm(acc["p_t"]))
    # log-loss: lower is better, so the 10% arm is worse with a positive difference
    ll = diff[(diff["metric"] == "test/log_loss")].set_index("arm").loc["pretraining=none,encoder=finetuned,labels=10%"]
    assert ll["diff"] > 0 and ll["verdict"] == "worse" and pd.isna(ll["planned_contrast"])

    eff = pd.read_csv(out / "factorial_effects.csv")
    eff = eff[eff["metric"] == "test/acc"]
    labels = eff[(eff["effect"] == "main") & (eff["factor"] == "labels")].iloc[0]
    # mean over the other factors' valid cells: 3 (pretraining, encoder) combos, of which 2 are dae
    assert labels["estimate"] == pytest.approx(EFFECT["10%"] + EFFECT["dae x 10%"] * 2 / 3, abs=0.006)
    inter = eff[(eff["effect"] == "interaction") & (eff["factor"] == "pretraining x labels")].iloc[0]
    assert inter["estimate"] == pytest.approx(EFFECT["dae x 10%"], abs=0.006)
    assert inter["verdict"] == "different"          # an interaction is not better or worse
    # the encoder main effect exists only where pretraining = dae (none x frozen is invalid)
    enc = eff[(eff["effect"] == "main") & (eff["factor"] == "encoder")].iloc[0]
    assert enc["averaged_over"] == 2 and enc["estimate"] == pytest.approx(EFFECT["frozen"], abs=0.006)


def test_report_markdown_tables(factorial_report):
    md = factorial_report.markdown
    assert md == (factorial_report.output_dir / "comparison.md").read_text()
    assert "PARTIAL" not in md
    assert re.search(r"0\.9\d{3} ± 0\.0\d{3} \(n=3\)", md)          # mean ± CI (n)
    assert "n.s." in md and "failed" in md and "(baseline)" in md
    # completeness: the failed cell is shown, not dropped
    comp = pd.read_csv(factorial_report.output_dir / "completeness_classify.csv").set_index("arm")
    assert comp.loc[FAILED_CELL[0], str(FAILED_CELL[1])] == "failed"
    # the diverged replicate is a failure in the arms table, next to the mean of the other seeds
    row = next(line for line in md.splitlines() if line.startswith(f"| {FAILED_CELL[0]} †"))
    assert "(n=2)" in row and f"† 1 of 3 (33%): seed {FAILED_CELL[1]}: diverged" in row
    # a study recorded without study.json: the baseline comparisons form the family, said so
    assert "No planned contrasts recorded for this invocation" in md
    planned = pd.read_csv(factorial_report.output_dir / "planned_contrasts.csv")
    assert set(planned["family"]) == {"baseline comparisons"} and len(planned) == len(factorial_arms()) - 1
    # tuned hyperparameters: lr differs per arm, label_fraction/encoder_mode are the factors
    hp = pd.read_csv(factorial_report.output_dir / "hyperparameters_classify.csv")
    assert {"lr", "label_fraction", "encoder_mode"} <= set(hp.columns) and "seed" not in hp.columns
    # cost: pruned tune trials counted, pretraining included, a total row
    cost = pd.read_csv(factorial_report.output_dir / "cost.csv").set_index("arm")
    assert cost.loc[BASELINE, "tune_pruned"] == 1 and cost.loc[PRETRAIN_KEY, "replicate_runs"] == 4
    assert cost.loc["total", "gpu_s"] == pytest.approx(cost.drop("total")["gpu_s"].sum())
    dae = "pretraining=dae,encoder=finetuned,labels=100%"
    assert cost.loc[dae, "gpu_with_pretraining_s"] == pytest.approx(
        cost.loc[dae, "gpu_s"] + cost.loc[PRETRAIN_KEY, "gpu_s"])
    assert cost.loc[BASELINE, "gpu_with_pretraining_s"] == cost.loc[BASELINE, "gpu_s"]
    for field in ("git commit", "0123456789abcdef0123", "dirty: false", "python -m study.run",
                  "sha256 64935364c9f70d8e", "NVIDIA H100", "torch 2.14.1", "report command", "pytest"):
        assert field in md, field


def test_report_latex_escapes(factorial_report):
    tex = (factorial_report.output_dir / "comparison.tex").read_text()
    assert r"\begin{tabular}" in tex and r"$\pm$" in tex
    assert "labels=100\\%" in tex and "±" not in tex
    for line in tex.splitlines():
        if not line.startswith("%"):
            assert not re.search(r"(?<!\\)%", line), line        # every % escaped


def test_history_figures_without_model_artifacts(factorial_report):
    by_name = {f.name: f for f in factorial_report.figures}
    for name in ("learning_curves", "tune_classify", "tune_upstream"):
        assert by_name[name].path is not None and by_name[name].path.is_file()
    # model figures whose inputs the store does not hold are left out, each with what a trainable
    # must log to get it, not silently dropped
    assert by_name["confusion_matrix"].path is None
    assert "evaluation.json with confusion_matrix" in by_name["confusion_matrix"].needs
    assert "Figures left out" in factorial_report.markdown


def test_html_references_only_existing_files(factorial_report):
    check_html_refs(factorial_report.output_dir / "report.html")


def check_html_refs(page: Path) -> None:
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and "</html>" in text
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", text)
    for ref in refs:
        if ref.startswith(("data:", "http://", "https://", "#")):
            continue
        assert (page.parent / ref).is_file(), f"report.html references missing {ref}"


def test_single_seed_claims_nothing(store, tmp_path):
    r = build_report(SINGLE_SEED, tracking_uri=store, output_dir=tmp_path, figures=False)
    md = r.markdown
    assert "n/a (n=1)" in md
    diff = pd.read_csv(tmp_path / "comparison_differences.csv")
    # test/acc: the baseline-comparisons family's verdict; the other metrics: the exploratory one
    assert set(diff.loc[diff["metric"] == "test/acc", "verdict"]) == {"no verdict (n=1 < 3)"}
    assert set(diff.loc[diff["metric"] != "test/acc", "verdict"]) == {"n/a (n=1)"} and not diff["significant"].any()


def test_running_study_gives_partial_report(store, tmp_path):
    r = build_report(RUNNING, tracking_uri=store, output_dir=tmp_path, figures=False)
    assert "PARTIAL REPORT" in r.markdown and "still running" in r.markdown
    comp = pd.read_csv(tmp_path / "completeness_classify.csv").set_index("arm")
    assert comp.loc["optimizer=sgd", "0"] == "running"
    assert comp.loc["optimizer=sgd", "1"] == "missing"
    assert "PARTIAL REPORT" in (tmp_path / "report.html").read_text()


def test_study_in_tune_phase_reports_what_exists(store, tmp_path):
    r = build_report(TUNING, tracking_uri=store, output_dir=tmp_path, log_figures=False)
    md = r.markdown
    assert "PARTIAL REPORT" in md and "has no completed replicate run yet" in md
    comp = pd.read_csv(tmp_path / "completeness_classify.csv").set_index("arm")
    assert set(comp.loc["noise=gaussian"]) == {"missing"} and list(comp.columns) == [str(s) for s in SEEDS]
    by_name = {f.name: f for f in r.figures}
    assert by_name["tune_classify"].path.is_file()
    assert "no completed replicate runs yet" in by_name["learning_curves"].skipped
    check_html_refs(tmp_path / "report.html")


def test_formats_option(store, tmp_path):
    assert main([FACTORIAL, "--tracking-uri", store, "--output", str(tmp_path), "--format", "md,csv",
                 "--no-figures"]) == 0
    assert (tmp_path / "comparison.md").exists() and (tmp_path / "comparison_arms.csv").exists()
    assert not (tmp_path / "report.html").exists() and not (tmp_path / "comparison.tex").exists()
    assert main([FACTORIAL, "--tracking-uri", store, "--output", str(tmp_path), "--format", "tex",
                 "--no-figures"]) == 0
    assert r"\label{tab:planned_contrasts}" in (tmp_path / "comparison.tex").read_text()
    assert main([FACTORIAL, "--tracking-uri", store, "--output", str(tmp_path), "--format", "pdf",
                 "--no-figures"]) == 2


def test_baseline_option(store, tmp_path, capsys):
    other = "pretraining=dae,encoder=finetuned,labels=100%"
    assert main([FACTORIAL, "--tracking-uri", store, "--output", str(tmp_path), "--baseline", other,
                 "--no-figures", "--metric", "test/f1_macro"]) == 0
    diff = pd.read_csv(tmp_path / "comparison_differences.csv")
    assert set(diff["baseline"]) == {other} and diff["metric"].iloc[0] == "test/f1_macro"
    assert "Exploratory: differences to the baseline arm (pretraining=dae" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------

def test_unknown_study_names_uri_and_studies(store):
    r = run_cli("no_such_study", "--tracking-uri", store, "--no-figures")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert store in r.stderr and FACTORIAL in r.stderr and SINGLE_SEED in r.stderr and TUNING in r.stderr


def test_empty_store_and_missing_store(tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    MlflowClient(empty).search_experiments()          # creates the (empty) database
    assert main([FACTORIAL, "--tracking-uri", empty, "--no-figures"]) == 2
    err = capsys.readouterr().err
    assert empty in err and "none" in err
    missing = f"sqlite:///{tmp_path / 'nothing_here.db'}"
    assert main([FACTORIAL, "--tracking-uri", missing]) == 2
    assert "nothing_here.db" in capsys.readouterr().err
    assert not (tmp_path / "nothing_here.db").exists()   # no empty store created as a side effect


def test_budget_and_parent_run_selection(store):
    from analysis.load import StudyNotFound

    study = load_study(FACTORIAL, store, budget="smoke")
    assert load_study(FACTORIAL, store, parent_run_id=study.parent_run_id).parent_run_id == study.parent_run_id
    with pytest.raises(StudyNotFound, match="budgets: smoke"):
        load_study(FACTORIAL, store, budget="full")
    with pytest.raises(StudyNotFound, match=study.parent_run_id):
        load_study(FACTORIAL, store, parent_run_id="0" * 32)


def test_metric_not_logged_lists_metrics(store, tmp_path, capsys):
    assert main([FACTORIAL, "--tracking-uri", store, "--output", str(tmp_path), "--metric", "test/top5"]) == 2
    err = capsys.readouterr().err
    assert "test/top5" in err and "test/acc" in err and "test/log_loss" in err


def test_unknown_baseline(store, tmp_path, capsys):
    assert main([FACTORIAL, "--tracking-uri", store, "--output", str(tmp_path), "--baseline", "nope"]) == 2
    assert BASELINE in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Figures from real model artifacts, through the CLI as a user types it
# ---------------------------------------------------------------------------------------------

EXPECTED_FIGURES = ("effects", "learning_curves", "tune_classify", "tune_upstream", "confusion_matrix",
                    "per_class_accuracy", "misclassified", "filters_classifier",
                    "feature_maps_classifier", "reconstructions", "filters_encoder",
                    "feature_maps_encoder", "top_activating", "tsne")


@pytest.fixture(scope="session")
def cli_report(store_with_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("report_cli")
    r = run_cli(FACTORIAL, "--tracking-uri", store_with_models, "--output", str(out), "--tsne-points", "300")
    return r, out


@pytest.mark.slow
def test_cli_report_end_to_end(cli_report, store_with_models):
    r, out = cli_report
    assert r.returncode == 0, r.stderr
    assert "# Study report: ablation_pretraining" in r.stdout          # the Markdown is printed
    assert "Figures skipped" not in r.stdout, r.stdout
    check_html_refs(out / "report.html")
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(EXPECTED_FIGURES)
    assert "python -m analysis.compare ablation_pretraining" in r.stdout   # the report's command
    # figures are logged to the parent run under figures/
    study = load_study(FACTORIAL, store_with_models)
    logged = {f.path for f in study.client.list_artifacts(study.parent_run_id, "figures")}
    assert {f"figures/{n}.png" for n in EXPECTED_FIGURES} <= logged


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPECTED_FIGURES)
def test_figure_is_a_real_image(cli_report, name):
    from PIL import Image

    _, out = cli_report
    path = out / "figures" / f"{name}.png"
    assert path.is_file(), f"{name}.png missing"
    with Image.open(path) as img:
        assert img.format == "PNG"
        width, height = img.size
        pixels = np.asarray(img.convert("L"), dtype=float)
    assert width >= 300 and height >= 200, (width, height)
    assert pixels.std() > 5, "blank image"                            # not a single colour
    assert (pixels < 128).mean() > 0.002, "nothing dark drawn"


@pytest.mark.slow
def test_figure_content_follows_artifacts(store_with_models, trained, tmp_path):
    """The confusion matrix pools the evaluation.json of every seed of the best arm."""
    from analysis.artifacts import load_autoencoder, read_evaluation

    study = load_study(FACTORIAL, store_with_models)
    a = analyze(study)
    assert a.best_arm == "pretraining=dae,encoder=finetuned,labels=100%"
    ev = read_evaluation(trained["classifier"] / "evaluation.json")
    assert np.asarray(ev["confusion_matrix"]).sum() == 1000
    net, payload = load_autoencoder(trained["autoencoder"] / "autoencoder.pt")
    assert payload["corruption"] == "salt_pepper" and net.latent_dim == 32
