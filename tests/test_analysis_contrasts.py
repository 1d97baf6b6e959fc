"""Planned contrasts end to end on a runner-shaped MLflow store: the parent run's study.json
(the registry's real ablation_noise definition), replicate runs with per-example predictions
in evaluation.json, known effects, one diverged replicate. Fast (no training, no Ray)."""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest

import test_analysis_report as runner_store     # the runner-shaped store writer (same folder)
from analysis import contrasts, overlap, stats
from analysis.definition import MetricSpec
from analysis.report import build_report
from study.registry import get_study

STUDY = get_study("ablation_noise")
SEEDS = (0, 1, 2, 3, 4)
N_TEST = 2000
DIVERGED = ("noise=gaussian,training=noisy", 4)
ACC_ONLY = {"test/acc": MetricSpec("test/acc", 0.005, "max")}
VERDICT_WORDS = re.compile(r"\b(different|equivalent|inconclusive|better|worse|n\.s\.)\b")
# Known effects (accuracy, in the whole test set): the denoiser adds 5 pp under gaussian noise
# and nothing under salt-and-pepper (the two arms disagree on 0.4% of the images, both ways).
ACC = {"noise=clean,training=clean": 0.97, "noise=gaussian,training=clean": 0.60,
       "noise=gaussian,training=noisy": 0.90, "noise=gaussian,training=denoised": 0.95,
       "noise=salt_pepper,training=clean": 0.40, "noise=salt_pepper,training=noisy": 0.93,
       "noise=salt_pepper,training=denoised": 0.93,
       "noise=gaussian,training=denoiser-at-test": 0.92, "noise=salt_pepper,training=denoiser-at-test": 0.91}


def predictions(rng, targets: np.ndarray) -> dict[tuple[str, int], np.ndarray]:
    """(arm, seed) -> predicted labels. Each seed's "hard" images are mostly shared (one test
    set), a few flip from seed to seed."""
    hardness = rng.random(N_TEST)
    out = {}
    for seed in SEEDS:
        jitter = rng.normal(0, 0.01, N_TEST)                  # images that change with the seed
        for arm, acc in ACC.items():
            correct = hardness + jitter < acc
            if arm == "noise=salt_pepper,training=denoised":
                # its noisy-trained twin, except for 6-10 images either way
                correct = (out[("noise=salt_pepper,training=noisy", seed)] == targets).copy()
                right, wrong = np.flatnonzero(correct), np.flatnonzero(~correct)
                correct[rng.choice(wrong, rng.integers(6, 11), replace=False)] = True
                correct[rng.choice(right, rng.integers(6, 11), replace=False)] = False
            out[(arm, seed)] = np.where(correct, targets, (targets + 1) % 10)
    return out


@pytest.fixture(scope="module")
def noise_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("noise_store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    w = runner_store.Writer(uri, root)
    exp = w.experiment(STUDY.name)
    arms = [a.name for a in STUDY.arms()]
    parent = w.parent(exp, STUDY.name, "factorial", ["noise", "training"], arms[0], "running", seeds=SEEDS,
                      extra={"arms": json.dumps(arms)})
    (root / "study.json").write_text(json.dumps(STUDY.definition()))
    w.client.log_artifact(parent, str(root / "study.json"))
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 10, N_TEST)
    preds = predictions(rng, targets)
    for arm in STUDY.arms():
        tags = {"is_baseline": str(arm.is_baseline).lower(), **{f"factor.{k}": v for k, v in arm.levels.items()}}
        for seed in SEEDS:
            config = runner_store.classifier_config(None, seed, "replicate", 1e-3, model="cnn", dropout=0.25)
            if (arm.name, seed) == DIVERGED:
                w.trial(exp, parent, STUDY.name, stage="classify", arm=arm.name, phase="replicate", seed=seed,
                        config=config, curve=runner_store.curve_to(0.5, 1, False), final=None, outcome="failed",
                        wall=3.0, tags=tags, failure="TrainingDiverged: train/loss is nan in epoch 2")
                continue
            acc = float((preds[(arm.name, seed)] == targets).mean())
            folder = root / "eval" / f"{arm.name}-{seed}"
            folder.mkdir(parents=True)
            (folder / "evaluation.json").write_text(json.dumps(
                {"predictions": preds[(arm.name, seed)].tolist(), "targets": targets.tolist(), "n_test": N_TEST}))
            w.trial(exp, parent, STUDY.name, stage="classify", arm=arm.name, phase="replicate", seed=seed,
                    config=config, curve=runner_store.curve_to(acc, runner_store.EPOCHS, True),
                    final=runner_store.final_test_metrics(acc), outcome="completed", wall=10.0, tags=tags,
                    artifacts=folder)
    w.finish_parent(parent, "finished")
    return uri


@pytest.fixture(scope="module")
def report(noise_store, tmp_path_factory):
    from analysis.figures import FigureOptions
    out = tmp_path_factory.mktemp("noise_report")
    return build_report(STUDY.name, tracking_uri=noise_store, output_dir=out, log_figures=False,
                        command="pytest", figure_options=FigureOptions(tsne_points=100))


def test_definition_names_every_averaged_cell():
    specs = contrasts.from_definition(get_study("ablation_pretraining").definition(), "test/acc")
    frozen = next(s for s in specs if s.name.startswith("frozen vs fine-tuned"))
    # the frozen cells average 2 arms each (10% and 100% labels): the formula names them
    assert frozen.formula.count("mean of 2 arms") == 4 and "labels=10%" in frozen.formula
    assert sum(frozen.weights.values()) == pytest.approx(0) and len(frozen.weights) == 8
    assert frozen.difference is None
    noise = contrasts.from_definition(STUDY.definition(), "test/acc")
    assert [s.difference for s in noise][0] == ("noise=gaussian,training=denoised", "noise=gaussian,training=noisy")


def test_findings_answer_the_noise_question(report):
    md = report.markdown
    planned = pd.read_csv(report.output_dir / "planned_contrasts.csv").set_index("contrast")
    assert len(planned) == len(STUDY.contrasts) and set(planned["family"]) == {"planned"}
    # one Holm family over the planned contrasts
    assert planned["p_holm"].to_numpy() == pytest.approx(stats.holm(planned["p"]), nan_ok=True)
    assert planned["p_tost_holm"].to_numpy() == pytest.approx(stats.holm(planned["p_tost"]), nan_ok=True)
    gauss = planned.loc["denoiser vs training on noisy inputs, gaussian noise"]
    assert gauss["estimate"] == pytest.approx(0.05, abs=0.01) and gauss["low"] > 0
    assert gauss["verdict"] == "different, at least the SESOI (0.5 pp)" and gauss["n_examples"] == N_TEST
    # the diverged seed of the noisy arm: left out of the pairing, and said so
    assert gauss["n"] == 4 and gauss["seeds"] == "0,1,2,3"
    assert "seed 4" in gauss["left_out"] and "diverged" in gauss["failed_replicates"]
    sp = planned.loc["denoiser vs training on noisy inputs, salt_pepper noise"]
    assert sp["verdict"] == "equivalent within ±0.5 pp" and -0.005 < sp["low"] < sp["high"] < 0.005
    assert abs(sp["estimate"]) < 0.001 and sp["p_holm"] > 0.05
    assert planned.loc["training on noisy inputs vs on clean ones, salt_pepper noise", "verdict"].startswith("different, at least")
    accuracy = planned[planned["metric"] == "test/acc"]      # the fixture scores accuracy only
    for col in ("mde", "p_superiority", "p_seed", "se_seeds", "se_examples", "df"):
        assert accuracy[col].notna().all(), col
    # Findings come first, one sentence per contrast with estimate, CI, adjusted p, n, verdict
    assert md.index("## Findings") < md.index("### Test metrics per arm") < md.index("### Planned contrasts")
    sentence = next(line for line in md.splitlines() if line.startswith("- denoiser vs training on noisy inputs, gaussian"))
    for part in ("+5.", "95% CI", "Holm-adjusted p", "n = 4 seeds × 2,000 test examples",
                 "Verdict: different, at least the SESOI (0.5 pp)",
                 "minimum detectable effect"):
        assert part in sentence, part
    assert "Best arm: noise=clean,training=clean (n = 5)" in md


def test_diverged_replicate_is_counted_and_marked(report):
    arms = pd.read_csv(report.output_dir / "comparison_arms.csv")
    acc = arms[arms["metric"] == "test/acc"].set_index("arm")
    assert acc.loc[DIVERGED[0], "failed"] == 1 and acc.loc[DIVERGED[0], "failure_rate"] == pytest.approx(0.2)
    assert acc.loc[DIVERGED[0], "n"] == 4 and "diverged" in acc.loc[DIVERGED[0], "failure_reasons"]
    md = report.markdown
    row = next(line for line in md.splitlines() if line.startswith(f"| {DIVERGED[0]} †"))
    assert "† 1 of 5 (20%): seed 4: diverged" in row
    # marked in every table that lists arms, and explained in each table's note
    for title in ("Test metrics per arm", "Exploratory: differences", "Completeness of the classify",
                  "Configuration of the classify"):
        section = md[md.index(title):]
        section = section[:section.index("\n### ")] if "\n### " in section else section
        assert f"{DIVERGED[0]} †" in section and "† failed replicates" in section, title


def test_forest_plot_opens_the_html_report(report):
    from PIL import Image

    path = report.output_dir / "figures" / "effects.png"
    with Image.open(path) as img:
        assert img.size[0] >= 600
        assert np.asarray(img.convert("L"), dtype=float).std() > 5
    html = (report.output_dir / "report.html").read_text()
    assert html.index('id="fig-effects"') < html.index('id="findings"') < html.index("Test metrics per arm")
    assert html.count('id="fig-effects"') == 1


def test_two_seeds_give_no_verdict():
    """The same contrasts from two seeds: estimates and intervals, no verdict word."""
    rng = np.random.default_rng(1)
    targets = rng.integers(0, 10, 500)
    correct = {(a, s): rng.random(500) < ACC[a] for a in ACC for s in (0, 1)}
    scores = pd.DataFrame([{"arm": a, "seed": s, "metric": "test/acc", "value": c.mean()}
                           for (a, s), c in correct.items()])
    specs = [s for s in contrasts.from_definition(STUDY.definition(), "test/acc") if s.metric == "test/acc"]
    frame = contrasts.contrast_frame(specs, scores, ACC_ONLY, correct)
    assert set(frame["verdict"]) == {"no verdict (n=2 < 3)"}
    assert frame["low"].notna().all()
    for sentence in frame["finding"]:
        assert "No verdict at n = 2" in sentence and not VERDICT_WORDS.search(sentence), sentence
    del targets


def test_identical_arms_are_not_estimable():
    same = {(a, s): np.ones(300, bool) for a in ("x", "y") for s in range(4)}
    scores = pd.DataFrame([{"arm": a, "seed": s, "metric": "test/acc", "value": 1.0} for a, s in same])
    spec = contrasts.versus_baseline(["y", "x"], "y", "test/acc")
    row = contrasts.contrast_frame(spec, scores, ACC_ONLY, same).iloc[0]
    assert row["verdict"] == "not estimable" and not row["estimable"]
    assert math.isnan(row["p"]) and math.isnan(row["d_z"]) and math.isnan(row["p_seed"])
    assert "not estimable" in row["finding"] and "p = 0" not in row["finding"]


def test_without_per_example_data_the_interval_is_seed_level():
    scores = pd.DataFrame([{"arm": a, "seed": s, "metric": "test/acc", "value": v}
                           for a, vals in {"b": [0.90, 0.91, 0.92, 0.90], "a": [0.93, 0.95, 0.94, 0.95]}.items()
                           for s, v in enumerate(vals)])
    row = contrasts.contrast_frame(contrasts.versus_baseline(["b", "a"], "b", "test/acc"), scores, ACC_ONLY).iloc[0]
    d = np.array([0.03, 0.04, 0.02, 0.05])
    assert row["n_examples"] == 0 and row["df"] == 3 and row["estimate"] == pytest.approx(d.mean())
    assert row["method"] == "paired bootstrap over seeds"
    assert row["interval_over"] == "seeds" and row["seeds_only_why"] == contrasts.NO_PREDICTIONS
    assert row["p_superiority"] == 1.0 and row["wins"] == 4


def test_per_example_data_pairs_only_a_metric_that_is_their_accuracy():
    """A metric is paired per example only where its logged value is the share of correct
    predictions, run by run (an accuracy under any name); any other metric (AUC, a loss), or an
    accuracy that disagrees with the predictions, is paired by seed, and the frame says why."""
    rng = np.random.default_rng(3)
    correct = {(a, s): rng.random(400) < p for a, p in (("a", 0.9), ("b", 0.8)) for s in range(4)}
    scores = pd.DataFrame([{"arm": a, "seed": s, "metric": m, "value": v}
                           for (a, s), c in correct.items()
                           for m, v in (("test/accuracy", c.mean()), ("test/auc", 0.9 + 0.01 * s + 0.02 * (a == "a")))])
    specs = [contrasts.versus_baseline(["b", "a"], "b", m)[0] for m in ("test/accuracy", "test/auc")]
    frame = contrasts.contrast_frame(specs, scores, {}, correct).set_index("metric")
    assert frame.loc["test/accuracy", "interval_over"] == "seeds and test examples"
    assert frame.loc["test/accuracy", "n_examples"] == 400
    auc = frame.loc["test/auc"]
    assert auc["interval_over"] == "seeds" and auc["n_examples"] == 0
    assert "not the share of correct predictions" in auc["seeds_only_why"]
    # an accuracy that disagrees with the predictions: paired by seed, and why
    off = scores.assign(value=np.where(scores["metric"] == "test/accuracy", scores["value"] + 0.01, scores["value"]))
    row = contrasts.contrast_frame(specs[:1], off, {}, correct).iloc[0]
    assert row["interval_over"] == "seeds" and "a seed 0" in row["seeds_only_why"]
    # evaluation.json files without predictions, or with another test set: none is paired per example
    assert contrasts.correct_per_example({("a", 0): {"confusion_matrix": []}})[0] == {}
    ev = {("a", 0): {"predictions": [1, 2, 3], "targets": [1, 2, 0]}, ("b", 0): {"predictions": [1], "targets": [1]}}
    correct, why = contrasts.correct_per_example(ev)
    assert correct == {} and "targets differ" in why


def test_exploratory_comparisons_a_planned_contrast_estimates_are_linked_to_it():
    """ablation_pretraining (a factorial with invalid cells): its planned "frozen vs fine-tuned"
    contrast is the exploratory main effect of the encoder, and "AE pretraining vs none, 100%
    labels" the exploratory difference of that arm to the baseline: each shows one estimate and
    the planned verdict; the effects no planned contrast estimates keep their own."""
    study = get_study("ablation_pretraining")
    specs = contrasts.from_definition(study.definition(), "test/acc")
    arm_levels = pd.DataFrame([{"arm": a.name, **a.levels} for a in study.arms()])
    rng = np.random.default_rng(0)
    scores = pd.DataFrame([{"arm": a, "seed": s, "metric": "test/acc", "value": 0.9 + rng.normal(0, 0.01)}
                           for a in arm_levels["arm"] for s in range(5)])
    planned = contrasts.contrast_frame(specs, scores, ACC_ONLY).set_index("contrast")
    effects = stats.factorial_effects(scores, arm_levels, [f.name for f in study.factors], dict(study.baseline))
    effects = overlap.link(effects, overlap.effect_weights, specs, planned.reset_index())
    encoder = effects[(effects["effect"] == "main") & (effects["factor"] == "encoder")].iloc[0]
    assert encoder["planned_contrast"].startswith("frozen vs fine-tuned") and encoder["planned_sign"] == 1
    assert encoder["estimate"] == pytest.approx(planned.loc[encoder["planned_contrast"], "estimate"])
    assert encoder["verdict"] == planned.loc[encoder["planned_contrast"], "verdict"]
    assert (effects["planned_contrast"] == "").sum() >= 1            # the others keep their own verdict
    baseline = next(a.name for a in study.arms() if a.is_baseline)
    diffs = overlap.link(stats.compare_to_baseline(scores, baseline), overlap.difference_weights, specs,
                         planned.reset_index()).set_index("arm")
    ae = diffs.loc["pretraining=ae,encoder=finetuned,labels=100%"]
    assert ae["planned_contrast"] == "AE pretraining vs none, fine-tuned, 100% labels" and ae["planned_sign"] == 1
    assert ae["diff"] == pytest.approx(planned.loc[ae["planned_contrast"], "estimate"])
    # a planned contrast on another metric estimates something else
    assert overlap.same_contrast(dict(specs[0].weights), specs, "test/f1_macro") is None
    assert overlap.same_contrast({a: -w for a, w in specs[0].weights.items()}, specs, "test/acc") == (specs[0], -1)
