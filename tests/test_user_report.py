"""The report of a study that is not ours (issue 19, items 3 and 8-11): a user's 2 x 2 factorial on
tabular data with its own trainable (``fit_tabular`` below, never ours), selected on val/loss,
compared on test/acc, on test/auc and on test/mse (lower is better), each with its own smallest
effect of interest, and reporting an undeclared test/loss too.

The MLflow store is written the way the runner writes it (the parent's study.json from the
study's own ``Study.definition()``, with the ``trainables`` entry the runner adds; tags as
study/records.py names them; replicate runs with known effects), without training anything:
fast. Three invocations: with the trainable's declarations, the same with per-example
predictions in evaluation.json, and one recorded before study.json held the declarations.
"""
from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pandas as pd
import pytest

import test_analysis_report as runner_store     # the runner-shaped store writer (same folder)
from analysis.report import build_report
from study.api import Budget, Factor, Level, Metric, Param, SearchSpace, Study, difference, interaction

SEEDS = (0, 1, 2, 3, 4)
N_TEST = 300
FIT_SCHEMA = {"seed": 0, "epochs": 30, "dataset": "cancer", "evaluate_test": True,
              "lr": 1e-3, "batch_size": 32, "hidden": 16, "dropout": 0.0}


def fit_tabular(config, report, *, dataset=None, resume_from=None):
    """The user's trainable (a small MLP on scikit-learn's breast cancer data); the store below
    is written as if the runner had run it."""
    raise AssertionError("not run: the store is written directly")


fit_tabular.schema = FIT_SCHEMA
LABEL = f"{__name__}:fit_tabular"

# the user's planned contrasts; the interaction is written the other way round from the
# exploratory table's coding ((64 − 16) × (0.3 − 0)): the same quantity with the opposite sign
CONTRASTS = (
    difference("width 64 vs 16 (AUC)", {"width": "64"}, {"width": "16"}, metric="test/auc"),
    difference("dropout 0.3 vs 0 (MSE)", {"dropout": "0.3"}, {"dropout": "0"}, metric="test/mse"),
    difference("dropout 0.3 vs 0", {"dropout": "0.3"}, {"dropout": "0"}),
    interaction("dropout helps more at width 16 than at 64", {"width": "16", "dropout": "0.3"},
                {"width": "16", "dropout": "0"}, {"width": "64", "dropout": "0.3"}, {"width": "64", "dropout": "0"}),
)
# the budget's field for the tune phase's trials (trials_per_arm, renamed trials_per_tuning when each
# arm is tuned per seed): the analysis does not depend on how the tune phase is organised
TRIALS = next(f.name for f in dataclasses.fields(Budget) if f.name.startswith("trials_per"))
SMOKE = Budget(dataset="cancer", epochs=3, seeds=SEEDS, **{TRIALS: 2})


def user_study(name: str) -> Study:
    return Study(
        name=name, description="a user's tabular 2x2", question="width x dropout on tabular data?",
        factors=(Factor("width", (Level("16", {"hidden": 16}), Level("64", {"hidden": 64}))),
                 Factor("dropout", (Level("0", {"dropout": 0.0}), Level("0.3", {"dropout": 0.3})))),
        baseline={"width": "16", "dropout": "0"}, design="factorial",
        search_space=SearchSpace("tabular", (Param("lr", 1e-4, 1e-2, log=True, start=1e-3, reason="test"),)),
        trainable=fit_tabular, budgets={"smoke": SMOKE, "full": SMOKE}, metric="val/loss", mode="min",
        fixed={"batch_size": 64}, contrasts=CONTRASTS,
        metrics=(Metric("test/auc", 0.02, "max"), Metric("test/mse", 0.05, "min")))


PRUNED_ARM = "width=64,dropout=0.3"


def truth(levels: dict[str, str], seed: int, rng) -> dict[str, float]:
    """Known effects: width adds 0.08 AUC; dropout adds 2 pp of accuracy at width 16 only; the MSE
    does not move (within noise far below its margin)."""
    wide, dropout = levels["width"] == "64", levels["dropout"] == "0.3"
    return {"acc": 0.86 + 0.02 * (dropout and not wide) + 0.005 * seed,
            "test/auc": 0.88 + 0.08 * wide + 0.002 * seed + rng.normal(0, 0.002),
            "test/mse": 0.30 + 0.001 * seed + rng.normal(0, 0.001),
            "test/loss": 0.40 - 0.05 * wide + rng.normal(0, 0.005)}


def correct_per_example(acc: float, seed: int, rng) -> np.ndarray:
    """N_TEST booleans with (about) the given accuracy; the hard examples shared by every arm."""
    hardness = np.random.default_rng(seed).random(N_TEST)
    return hardness + rng.normal(0, 0.02, N_TEST) < acc


def write_user_study(w, root, name: str, *, predictions: bool, declarations: bool) -> None:
    study = user_study(name)
    exp = w.experiment(name)
    arms = [a.name for a in study.arms()]
    chosen = {a: {"params": {"lr": 1e-3}, "tune_run_id": "", "val_metric": 0.3, "outcome": "completed"} for a in arms}
    parent = w.parent(exp, name, "factorial", ["width", "dropout"], arms[0], "running", seeds=SEEDS,
                      extra={"arms": json.dumps(arms), "dataset": "cancer", "metric": "val/loss", "mode": "min"})
    definition = study.definition()
    if declarations:        # what the runner adds: the trainable's declarations
        definition["trainables"] = {LABEL: {"schema": FIT_SCHEMA, "claims": [], "mlflow_model": False}}
    (root / "study.json").write_text(json.dumps(definition))
    w.client.log_artifact(parent, str(root / "study.json"))
    rng = np.random.default_rng(0)
    targets = np.random.default_rng(99).integers(0, 2, N_TEST)
    for arm in study.arms():
        tags = {"is_baseline": str(arm.is_baseline).lower(), "dataset": "cancer",
                **{f"factor.{k}": v for k, v in arm.levels.items()}}
        base = {**arm.settings, "epochs": 3, "dataset": "cancer", "lr": 1e-3, "meta.trainable": LABEL,
                "meta.arm": arm.name, "meta.stage": "classify"}
        # the runner prefers a trial that ran to full length: an arm is configured from a pruned
        # trial only when none of its trials did
        for j, outcome in enumerate(("pruned", "pruned") if arm.name == PRUNED_ARM else ("completed", "pruned")):
            n = 3 if outcome == "completed" else 1
            run_id = w.trial(exp, parent, name, stage="classify", arm=arm.name, phase="tune", seed=1000,
                             config={**base, "seed": 1000, "lr": 10 ** (-3 - j), "meta.phase": "tune"},
                             curve=curves(n, 0.3), final=None, outcome=outcome, wall=2.0, tags=tags)
            if j == 0:
                chosen[arm.name].update(tune_run_id=run_id, outcome=outcome, val_metric=0.3)
        for seed in SEEDS:
            values = truth(dict(arm.levels), seed, rng)
            correct = correct_per_example(values.pop("acc"), seed, rng)
            folder = root / "runs" / f"{arm.name}-{seed}"
            folder.mkdir(parents=True)
            (folder / "model.pt").write_bytes(b"the user's weights")
            if predictions:
                (folder / "evaluation.json").write_text(json.dumps(
                    {"predictions": np.where(correct, targets, 1 - targets).tolist(), "targets": targets.tolist()}))
            w.trial(exp, parent, name, stage="classify", arm=arm.name, phase="replicate", seed=seed,
                    config={**base, "seed": seed, "meta.phase": "replicate"}, curve=curves(3, 0.3),
                    final={"test/acc": float(correct.mean()), **values}, outcome="completed", wall=3.0,
                    tags=tags, artifacts=folder)
    w.client.set_tag(parent, "best_configs.classify", json.dumps(chosen))
    w.finish_parent(parent, "finished")


def curves(epochs: int, loss: float) -> list[dict]:
    return [{"epoch": e, "train/loss": loss + 0.2 / e, "val/loss": loss + 0.1 / e, "val/acc": 0.8 + 0.02 * e}
            for e in range(1, epochs + 1)]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("user_store")
    w = runner_store.Writer(f"sqlite:///{root / 'mlflow.db'}", root)
    for name, predictions, declarations in (("tab_user", False, True), ("tab_user_pred", True, True),
                                            ("tab_user_legacy", False, False)):
        (root / name).mkdir()
        write_user_study(w, root / name, name, predictions=predictions, declarations=declarations)
    return f"sqlite:///{root / 'mlflow.db'}"


@pytest.fixture(scope="module")
def report(store, tmp_path_factory):
    from analysis.figures import FigureOptions
    return build_report("tab_user", tracking_uri=store, output_dir=tmp_path_factory.mktemp("tab_user"),
                        log_figures=False, command="pytest", figure_options=FigureOptions(tsne_points=100))


@pytest.fixture(scope="module")
def report_with_predictions(store, tmp_path_factory):
    return build_report("tab_user_pred", tracking_uri=store, output_dir=tmp_path_factory.mktemp("tab_user_pred"),
                        figures=False, command="pytest")


def section(md: str, title: str) -> str:
    part = md[md.index(title):]
    return part[:part.index("\n### ", 1)] if "\n### " in part[1:] else part


# -- item 8: every test metric, contrasts on any metric with its own margin ---------------------

def test_every_test_metric_appears_in_the_tables(report):
    md = report.markdown
    arms_table = section(md, "### Test metrics per arm")
    assert "| arm | accuracy | test/auc | test/mse |" in arms_table            # primary, then declared
    other = section(md, "### Other test metrics per arm")
    assert "test/loss" in other and "no verdict" in other                     # undeclared: mean ± CI only
    csv = pd.read_csv(report.output_dir / "comparison_arms.csv")
    assert {"test/acc", "test/auc", "test/mse", "test/loss"} <= set(csv["metric"])
    assert "Not logged" not in md and "f1_macro" not in md                    # ours are not asked for


def test_each_planned_contrast_on_its_metric_with_its_margin(report):
    every = pd.read_csv(report.output_dir / "planned_contrasts.csv")
    planned = every[every["family"] == "planned"].set_index("contrast")
    auc = planned.loc["width 64 vs 16 (AUC)"]
    assert auc["metric"] == "test/auc" and auc["margin"] == pytest.approx(0.02)
    assert auc["estimate"] == pytest.approx(0.08, abs=0.01) and auc["verdict"] == "different, at least the SESOI (0.02)"
    mse = planned.loc["dropout 0.3 vs 0 (MSE)"]
    assert mse["metric"] == "test/mse" and mse["verdict"] == "equivalent within ±0.05"
    assert planned.loc["dropout 0.3 vs 0", "metric"] == "test/acc"
    assert planned.loc["dropout 0.3 vs 0", "margin"] == pytest.approx(0.005)
    # one Holm family over every planned contrast, whatever its metric
    assert planned["p_holm"].notna().all() and len(planned) == 4
    table = section(report.markdown, "### Planned contrasts")
    assert "test/auc: ±0.02" in table and "test/mse: ±0.05, lower is better" in table


def test_no_per_example_predictions_the_footnote_says_over_seeds(report):
    planned = pd.read_csv(report.output_dir / "planned_contrasts.csv")
    assert set(planned["interval_over"]) == {"seeds"} and set(planned["n_examples"]) == {0}
    table = section(report.markdown, "### Planned contrasts")
    assert "Over seeds only for every contrast, because no replicate logged per-example predictions" in table
    assert "evaluation.json with predictions" in table
    assert "test examples (each level" not in table
    assert "test images" not in report.markdown[:report.markdown.index("Figures left out")]
    caption = next(f.caption for f in report.figures if f.name == "effects")
    assert "over seeds" in caption and "test examples" not in caption


def test_with_predictions_only_the_accuracy_is_paired_per_example(report_with_predictions):
    planned = pd.read_csv(report_with_predictions.output_dir / "planned_contrasts.csv").set_index("contrast")
    assert planned.loc["dropout 0.3 vs 0", "interval_over"] == "seeds and test examples"
    assert planned.loc["dropout 0.3 vs 0", "n_examples"] == N_TEST
    for name in ("width 64 vs 16 (AUC)", "dropout 0.3 vs 0 (MSE)"):
        assert planned.loc[name, "interval_over"] == "seeds", name
        assert "not the share of correct predictions" in planned.loc[name, "seeds_only_why"]
    table = section(report_with_predictions.markdown, "### Planned contrasts")
    assert ("For contrasts on test/acc: 95% CI from a hierarchical paired bootstrap over seeds and test examples"
            in table)
    assert "Over seeds only for width 64 vs 16 (AUC), dropout 0.3 vs 0 (MSE), because test/auc is not" in table


def test_no_label_prefixes_test_to_a_metric_name(report):
    md = report.markdown
    assert not re.search(r"\btest test/", md)
    finding = next(line for line in md.splitlines() if line.startswith("- width 64 vs 16 (AUC)"))
    assert "— test/auc contrast" in finding and "Verdict: different, at least the SESOI (0.02)" in finding
    mse = next(line for line in md.splitlines() if line.startswith("- dropout 0.3 vs 0 (MSE)"))
    assert "test/mse (lower is better)" in mse and "Verdict: equivalent within ±0.05" in mse


# -- item 9: the settings table's defaults are the user's -------------------------------------

def test_settings_table_shows_the_users_schema_defaults(report):
    table = section(report.markdown, "### Configuration of the classify")
    assert "batch_size (fixed; default 32)" in table and "epochs (fixed; default 30)" in table
    assert "default 128" not in table and "default 5)" not in table


def test_a_store_without_declarations_claims_no_defaults(store, tmp_path):
    r = build_report("tab_user_legacy", tracking_uri=store, output_dir=tmp_path, figures=False)
    table = section(r.markdown, "### Configuration of the classify")
    assert "(fixed;" not in table                                            # no "fixed; default ..." column
    assert "did not have its schema defaults recorded" in r.markdown
    # and the model: nothing declared, so nothing claimed but what the store holds
    models = section(r.markdown, "### Representative run of each arm")
    assert "none logged" in models and "0 of 20 completed replicate runs hold an MLflow model" in models
    assert "Every completed replicate run holds its model" not in r.markdown


# -- item 10: one computation, one wording --------------------------------------------------------

def test_models_are_described_as_the_store_holds_them(report):
    models = section(report.markdown, "### Representative run of each arm")
    assert models.count("no MLflow model: the trainable declares none") == 4
    assert "trainable declares no MLflow model" in models and "no completed replicate run holds one" in models
    assert "Every completed replicate run holds its model" not in report.markdown
    assert "load_model" not in models


def test_exploratory_effects_give_the_planned_estimate_and_verdict(report):
    planned = pd.read_csv(report.output_dir / "planned_contrasts.csv").set_index("contrast")
    effects = pd.read_csv(report.output_dir / "factorial_effects.csv").fillna({"planned_contrast": ""})
    linked = effects[effects["planned_contrast"] != ""]
    # the dropout main effect on test/acc and test/mse, the width main effect on test/auc, the interaction
    assert len(linked) == 4, linked[["metric", "effect", "factor", "planned_contrast"]]
    for r in linked.itertuples(index=False):
        p = planned.loc[r.planned_contrast]
        assert r.verdict == p["verdict"]
        # the same quantity: the exploratory estimate is the planned one, turned by the sign
        assert r.estimate == pytest.approx(r.planned_sign * p["estimate"], abs=1e-9)
    inter = linked[linked["effect"] == "interaction"].iloc[0]
    assert inter["planned_sign"] == -1 and inter["planned_contrast"].startswith("dropout helps more")
    table = section(report.markdown, "### Exploratory: main effects")
    row = next(line for line in table.splitlines() if "| interaction |" in line and "| accuracy |" in line)
    estimate = planned.loc[inter["planned_contrast"], "estimate"]
    assert "= −1 × planned “dropout helps more at width 16 than at 64”" in row
    assert f"{-estimate * 100:+.2f} pp".replace("-", "−") in row                # its sign, the row's coding
    assert "better" not in row and "worse" not in row
    # no verdict word about a linked quantity other than the planned one
    for r in linked.itertuples(index=False):
        assert planned.loc[r.planned_contrast, "verdict"] in table


# -- item 11: figures that do not apply ----------------------------------------------------------

def test_figures_that_do_not_apply_are_left_out_with_what_to_log(report):
    md = report.markdown
    by_name = {f.name: f for f in report.figures}
    for name in ("effects", "learning_curves", "tune_classify"):
        assert by_name[name].path is not None, (name, by_name[name].skipped)
    assert "Figures skipped" not in md and "failed:" not in md and "KeyError" not in md
    assert "DatasetError" not in md and "unknown dataset" not in md
    left_out = md[md.index("Figures left out"):md.index("### Provenance")]
    assert "Confusion matrix of the best arm: log evaluation.json with confusion_matrix" in left_out
    assert "t-SNE of the latent space:" in left_out
    assert len([line for line in left_out.splitlines() if line.startswith("- ")]) == 10
    # the learning curves show the study's selection metric
    assert "val/loss" in by_name["learning_curves"].caption


# -- item 3: a configuration chosen from a pruned tune trial ----------------------------------------

def test_a_configuration_from_a_pruned_trial_is_said_so(report):
    md = report.markdown
    findings = md[md.index("## Findings"):md.index("Primary metric")]
    assert "Configured from a tune trial that ASHA stopped early, so never trained to full length" in findings
    assert f"{PRUNED_ARM} (tune trial " in findings and "stopped by ASHA at epoch 1; val/loss 0.3 there" in findings
    # every planned contrast weighs that arm (alone or in a cell's mean): each sentence says so
    sentences = [line for line in findings.splitlines() if line.startswith("- ")]
    assert len(sentences) == 4
    assert all(f"configured from a tune trial ASHA stopped early: {PRUNED_ARM}" in s for s in sentences)
    notes = md[md.index("Primary metric"):md.index("### Test metrics per arm")]
    assert f"- Configured from a tune trial that ASHA stopped early" in notes and PRUNED_ARM in notes


# -- what the study declares, and what an older store falls back to --------------------------------

def test_declarations_and_their_fallbacks():
    from analysis import definition as d
    from analysis.settings import our_defaults, recorded_defaults

    assert d.compared_metrics(None) == {"test/acc": d.MetricSpec("test/acc", 0.005, "max")}
    assert d.compared_metrics({"equivalence_margin": 0.01})["test/acc"].margin == 0.01
    declared = d.compared_metrics(user_study("x").definition())
    assert list(declared) == ["test/acc", "test/auc", "test/mse"] and declared["test/mse"].minimize
    # an undeclared metric: no margin, the direction its name suggests
    assert d.metric_spec("test/loss", declared) == d.MetricSpec("test/loss", None, "min")
    older = user_study("x").definition()
    assert d.trainable_schema(older, "classify") is None and d.declares_mlflow_model(older) is None
    recorded = {**older, "trainables": {LABEL: {"schema": FIT_SCHEMA, "claims": [], "mlflow_model": False}}}
    assert d.trainable_schema(recorded, "classify") == FIT_SCHEMA and d.declares_mlflow_model(recorded) is False
    # our defaults only for our trainable (or a store that names none)
    ours = pd.DataFrame({"params.meta.trainable": ["trainables.classifier:train_classifier"]})
    assert recorded_defaults(None, "classify", ours) == our_defaults("classify")
    assert recorded_defaults(older, "classify", ours) is None                # study.json names the user's
    assert recorded_defaults(recorded, "classify", ours) == FIT_SCHEMA
    tags = {"best_configs.classify": json.dumps({"a": {"outcome": "pruned"}, "b": {"outcome": "completed"}})}
    assert list(d.pruned_choices(d.chosen_configs(tags))) == ["a"]
    assert d.chosen_configs({"best_configs.classify": "{bad"}) == {}
    # a record of one tuning per (arm, seed): each choice names its arm
    per_seed = {"a/0": {"arm": "a", "seed": 0, "outcome": "pruned"}, "a/1": {"arm": "a", "seed": 1, "outcome": "pruned"},
                "b/0": {"arm": "b", "seed": 0, "outcome": "completed"}}
    assert [c["seed"] for c in d.pruned_choices(per_seed)["a"]] == [0, 1] and "b" not in d.pruned_choices(per_seed)


# -- end to end: the user's study run by the runner, then reported ----------------------------------

TRAINABLE_FILE = '''
import os, tempfile
import torch
from sklearn.datasets import load_breast_cancer
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from torch import nn
from torch.nn.functional import binary_cross_entropy_with_logits as bce

DEFAULTS = {"seed": 0, "epochs": 30, "dataset": "cancer", "evaluate_test": True,
            "lr": 1e-3, "batch_size": 32, "hidden": 16, "dropout": 0.0}


def load(name="cancer", data_dir=None):
    x, y = load_breast_cancer(return_X_y=True)
    x, y = ((x - x.mean(0)) / x.std(0)).astype("float32"), y.astype("float32")
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=0.3, stratify=y, random_state=0)
    x_train, x_val, y_train, y_val = train_test_split(x_rest, y_rest, test_size=0.25, stratify=y_rest, random_state=0)
    return {"train": (x_train, y_train), "val": (x_val, y_val), "test": (x_test, y_test)}


def fit(config, report, *, dataset=None, resume_from=None):
    cfg = {**DEFAULTS, **config}
    torch.manual_seed(cfg["seed"])
    data = dataset if dataset is not None else load()
    (x, y), (x_val, y_val), (x_test, y_test) = [map(torch.as_tensor, data[s]) for s in ("train", "val", "test")]
    model = nn.Sequential(nn.Linear(30, cfg["hidden"]), nn.ReLU(), nn.Dropout(cfg["dropout"]), nn.Linear(cfg["hidden"], 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    for epoch in range(1, cfg["epochs"] + 1):
        model.train()
        for batch in torch.randperm(len(y)).split(cfg["batch_size"]):
            loss = bce(model(x[batch]).squeeze(1), y[batch])
            optimizer.zero_grad(); loss.backward(); optimizer.step()
        model.eval()
        with torch.no_grad():
            val = model(x_val).squeeze(1)
        metrics = {"epoch": epoch, "train/loss": loss.item(), "val/loss": bce(val, y_val).item()}
        with tempfile.TemporaryDirectory() as checkpoint:
            torch.save(model.state_dict(), os.path.join(checkpoint, "state.pt"))
            if epoch == cfg["epochs"] and cfg["evaluate_test"]:
                with torch.no_grad():
                    logits = model(x_test).squeeze(1)
                metrics.update({"test/acc": ((logits > 0).float() == y_test).float().mean().item(),
                                "test/auc": float(roc_auc_score(y_test.numpy(), logits.numpy())),
                                "test/loss": bce(logits, y_test).item()})
                torch.save(model.state_dict(), os.path.join(checkpoint, "model.pt"))
            report(metrics, checkpoint)


fit.schema = DEFAULTS
'''

STUDY_FILE = '''
from tabular_mlp import fit, load
from study.api import Budget, Data, Factor, Level, Metric, Param, SearchSpace, Study, difference, interaction

SMOKE = Budget(dataset="cancer", epochs=3, {trials}=2, seeds=(0, 1, 2))
tabular = Study(
    name="tabular_e2e", description="a user's tabular 2x2", question="width x dropout?",
    factors=(Factor("width", (Level("16", {"hidden": 16}), Level("64", {"hidden": 64}))),
             Factor("dropout", (Level("0", {"dropout": 0.0}), Level("0.3", {"dropout": 0.3})))),
    baseline={"width": "16", "dropout": "0"}, design="factorial",
    search_space=SearchSpace("s", (Param("lr", 1e-4, 1e-2, log=True, start=1e-3, reason="test"),)),
    trainable=fit, data=Data(load), budgets={"smoke": SMOKE, "full": SMOKE},
    metric="val/loss", mode="min", fixed={"batch_size": 64},
    metrics=(Metric("test/auc", 0.01, "max"),),
    contrasts=(difference("width 64 vs 16", {"width": "64"}, {"width": "16"}, metric="test/auc"),
               interaction("width x dropout", {"width": "64", "dropout": "0.3"}, {"width": "16", "dropout": "0.3"},
                           {"width": "64", "dropout": "0"}, {"width": "16", "dropout": "0"})),
)
'''


@pytest.mark.slow
def test_a_user_study_run_by_the_runner_reports_what_it_logged(tmp_path, ray_local):
    from study.run import main

    folder = tmp_path / "my_studies"
    folder.mkdir()
    (folder / "tabular_mlp.py").write_text(TRAINABLE_FILE)
    (folder / "tabular.py").write_text(STUDY_FILE.replace("{trials}", TRIALS))
    results, uri = tmp_path / "results", f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}"
    assert main([str(folder / "tabular.py"), "--budget", "smoke", "--results-dir", str(results),
                 "--tracking-uri", uri, "--quiet"]) == 0
    r = build_report("tabular_e2e", tracking_uri=uri, output_dir=tmp_path / "report", log_figures=False)
    md = r.markdown
    assert "| arm | accuracy | test/auc |" in md and "test/loss" in section(md, "### Other test metrics")
    planned = pd.read_csv(tmp_path / "report" / "planned_contrasts.csv").set_index("contrast")
    assert planned.loc["width 64 vs 16", "metric"] == "test/auc"
    assert planned.loc["width 64 vs 16", "margin"] == pytest.approx(0.01)
    assert set(planned["interval_over"]) == {"seeds"}
    table = section(md, "### Configuration of the classify")
    assert "batch_size (fixed; default 32)" in table and "epochs (fixed; default 30)" in table
    assert not re.search(r"\btest test/", md) and "DatasetError" not in md and "failed:" not in md
    assert "Every completed replicate run holds its model" not in md and "Figures left out" in md
