"""The report of issues 20 and 23 on runner-shaped MLflow stores written in the test (no training):
the tuning diagnostics from the parent's tuning-<stage>.json (one arm's tuning degenerate), what
the intervals cover in a store with tunings per seed and in an older one, conditional
contrasts beside a planned contrast that averages over a factor (the frozen encoder's
interaction with the label fraction, as docs/results measured it) and their disagreement rule,
the looks of a sequential study from the parent's sequential.json, the Wilcoxon column where
it cannot reject. Fast: about 60 runs per store, seed-level scores only."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest

import test_analysis_report as runner_store     # the runner-shaped store writer (same folder)
from analysis import conditional, contrasts, looks, stats, tables
from analysis.report import build_report
from study import inference, sequential
from study.api import Contrast
from study.registry import get_study

PRETRAINING = get_study("ablation_pretraining")
# one more contrast, averaged over pretraining and labels, whose first cell leaves pretraining out and
# whose second fixes it: its per-level contrasts are no planned contrast
EXTRA = Contrast("frozen (any pretraining) vs fine-tuned DAE",
                 (({"encoder": "frozen"}, 1.0), ({"pretraining": "dae", "encoder": "finetuned"}, -1.0)))
STUDY = dataclasses.replace(PRETRAINING, contrasts=PRETRAINING.contrasts + (EXTRA,))
AVERAGED = next(c.name for c in PRETRAINING.contrasts if c.name.startswith("frozen vs fine-tuned"))
SEEDS = (0, 1, 2, 3, 4)
DEGENERATE = "pretraining=ae,encoder=frozen,labels=10%"
VAL_EXAMPLES = 400
# frozen vs fine-tuned, per label fraction (docs/results: -3.9 to -4.3 pp at 100%, about even at 10%)
FROZEN = {"100%": -0.04, "10%": -0.0005}


def accuracy(levels: dict[str, str], seed: int, rng) -> float:
    few = levels["labels"] == "10%"
    gain = {"none": 0.0, "ae": 0.010, "dae": 0.012}[levels["pretraining"]]
    frozen = FROZEN[levels["labels"]] if levels["encoder"] == "frozen" else 0.0
    return 0.95 + gain - 0.06 * few + frozen + 0.003 * seed + rng.normal(0, 0.0008)


def tuning_record() -> dict:
    """tuning-classify.json as study.tuning.choose writes it: one tuning per (arm, seed). The
    degenerate arm's tunings each ran one trial to full length; ASHA stopped the runner-up at
    epoch 1, where the lead was measured; seed 4's tuning scored no other trial."""
    out = {}
    for arm in STUDY.arms():
        for seed in SEEDS:
            bad = arm.name == DEGENERATE
            lead = (0.01 if seed < 4 else None) if bad else 0.0025 * (seed + 1)
            out[f"{arm.name}@{seed}"] = {
                "arm": arm.name, "seed": seed, "params": {"lr": 3e-3 if bad else 1e-3 * (seed + 1),
                                                          "batch_size": 64 if seed % 2 else 128},
                "tune_run_id": f"tune-{seed}", "val_metric": 0.95, "outcome": "completed", "epochs": 10,
                "trials": 4, "full_length": 1 if bad else 2 + seed % 2, "failed": 0,
                "first_guess_won": bad or seed == 0, "lead": lead,
                "lead_epoch": (1 if bad else 10) if lead else None,
                "lead_examples": round(lead * VAL_EXAMPLES) if lead else None}
    return out


PRETRAIN_RECORD = {key: {"arm": key, "seed": 1000, "params": {"lr": 1e-3}, "tune_run_id": "t", "val_metric": 0.01,
                         "outcome": "completed", "epochs": 20, "trials": 4, "full_length": 2, "failed": 0,
                         "first_guess_won": False, "lead": 0.0004, "lead_examples": None}
                   for key in ("ae", "dae-salt_pepper-0.2")}


def log_json(w, root, parent: str, name: str, content) -> None:
    folder = root / parent
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(content))
    w.client.log_artifact(parent, str(folder / name))


def write_pretraining(w, root, exp: str, *, per_seed: bool) -> str:
    """One invocation of the factorial: per-seed tunings (new runner) or one per arm (older)."""
    arms = [a.name for a in STUDY.arms()]
    chosen = {a: {"params": {"lr": 1e-3}, "tune_run_id": "", "val_metric": 0.95, "outcome": "completed"} for a in arms}
    extra = {"arms": json.dumps(arms)} | ({} if per_seed else {"best_configs.classify": json.dumps(chosen)})
    parent = w.parent(exp, STUDY.name, "factorial", ["pretraining", "encoder", "labels"], arms[0], "running",
                      seeds=SEEDS, extra=extra)
    log_json(w, root, parent, "study.json", STUDY.definition())
    if per_seed:
        log_json(w, root, parent, "tuning-classify.json", tuning_record())
        log_json(w, root, parent, "tuning-pretrain.json", PRETRAIN_RECORD)
    rng = np.random.default_rng(1)
    for arm in STUDY.arms():
        tags = {"is_baseline": str(arm.is_baseline).lower(), **{f"factor.{k}": v for k, v in arm.levels.items()}}
        for seed in SEEDS:
            acc = accuracy(dict(arm.levels), seed, rng)
            w.trial(exp, parent, STUDY.name, stage="classify", arm=arm.name, phase="replicate", seed=seed,
                    config=runner_store.classifier_config(dict(arm.levels) | {"pretraining": "none"}, seed,
                                                          "replicate", 1e-3),
                    curve=runner_store.curve_to(acc, 2, True), final={"test/acc": acc}, outcome="completed",
                    wall=2.0, tags=tags | ({"tuning": f"{arm.name}@{seed}"} if per_seed else {}))
    w.finish_parent(parent, "finished")
    return parent


DROPOUT = get_study("ablation_dropout")
SEQ_SEEDS = tuple(range(8))
DESIGN = {"max_seeds": 8, "seed_batch": 3, "start_seeds": 5}
# dropout 0.25: +2 pp, tight (decided at the first look); dropout 0.5: about +0.3 pp, noisy (the cap)
SEQ_EFFECT = {"dropout=0": [0.0] * 8, "dropout=0.25": [0.02, 0.0204, 0.0197, 0.0201, 0.0199, 0.0203, 0.0196, 0.02],
              "dropout=0.5": [0.004, -0.006, 0.012, -0.002, 0.008, -0.004, 0.010, 0.0]}


def write_sequential(w, root) -> tuple[str, dict]:
    exp = w.experiment(DROPOUT.name)
    arms = [a.name for a in DROPOUT.arms()]
    parent = w.parent(exp, DROPOUT.name, "one_at_a_time", ["dropout"], arms[0], "running", seeds=SEQ_SEEDS,
                      extra={"arms": json.dumps(arms)})
    log_json(w, root, parent, "study.json", DROPOUT.definition())
    scores = {(a, s): 0.97 + SEQ_EFFECT[a][s] + 0.002 * s for a in arms for s in SEQ_SEEDS}
    for arm in DROPOUT.arms():
        tags = {"is_baseline": str(arm.is_baseline).lower(), **{f"factor.{k}": v for k, v in arm.levels.items()}}
        for seed in SEQ_SEEDS:
            acc = scores[(arm.name, seed)]
            w.trial(exp, parent, DROPOUT.name, stage="classify", arm=arm.name, phase="replicate", seed=seed,
                    config=runner_store.classifier_config(None, seed, "replicate", 1e-3, model="cnn"),
                    curve=runner_store.curve_to(acc, 2, True), final={"test/acc": acc}, outcome="completed",
                    wall=2.0, tags=tags)
    margins = {c.name: DROPOUT.contrast_metric(c).margin for c in DROPOUT.contrasts}
    stats, record = [], []
    for k, n in enumerate((5, 8), start=1):
        stats.append({c.name: sequential.look_statistic(np.array(
            [sum(wt * scores[(a, s)] for a, wt in DROPOUT.contrast_weights(c).items()) for s in SEQ_SEEDS[:n]]))
            for c in DROPOUT.contrasts})
        decision = sequential.decide(stats, margins, **DESIGN)
        # the runner's shape for the first look (study/looks.py), decide()'s own for the second
        record.append({"look": k, "seeds": list(SEQ_SEEDS[:n]), "statistics": stats[-1], "decision": decision}
                      if k == 1 else decision)
    log_json(w, root, parent, "sequential.json", {"design": record[-1]["design"], "looks": record})
    w.finish_parent(parent, "finished")
    return parent, record[-1]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("tuning_store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    w = runner_store.Writer(uri, root)
    exp = w.experiment(STUDY.name)
    old = write_pretraining(w, root, exp, per_seed=False)
    new = write_pretraining(w, root, exp, per_seed=True)
    seq, last = write_sequential(w, root)
    return {"uri": uri, "old": old, "new": new, "sequential": seq, "last_look": last}


def report_of(store, which: str, tmp_path_factory):
    name = DROPOUT.name if which == "sequential" else STUDY.name
    return build_report(name, tracking_uri=store["uri"], parent_run_id=store[which], figures=which == "sequential",
                        output_dir=tmp_path_factory.mktemp(which), log_figures=False, command="pytest")


@pytest.fixture(scope="module")
def new_report(store, tmp_path_factory):
    return report_of(store, "new", tmp_path_factory)


@pytest.fixture(scope="module")
def old_report(store, tmp_path_factory):
    return report_of(store, "old", tmp_path_factory)


@pytest.fixture(scope="module")
def seq_report(store, tmp_path_factory):
    return report_of(store, "sequential", tmp_path_factory)


def section(md: str, title: str) -> str:
    part = md[md.index(title):]
    return part[:part.index("\n### ", 1)] if "\n### " in part[1:] else part


# -- tuning diagnostics (issue 20 item 2) ------------------------------------------------------------

def test_tuning_table_from_the_record(new_report):
    arms = pd.read_csv(new_report.output_dir / "tuning.csv").set_index(["stage", "arm"])
    normal = arms.loc[("classify", "pretraining=dae,encoder=finetuned,labels=100%")]
    assert normal["tunings"] == 5 and normal["per_seed"] and not normal["degenerate"]
    assert (normal["full_length_min"], normal["full_length_max"]) == (2, 3) and normal["compared"] == 5
    assert normal["first_guess_won"] == 1                               # seed 0's tuning
    assert normal["lead_examples_median"] == 3 and (normal["lead_examples_min"], normal["lead_examples_max"]) == (1, 5)
    assert json.loads(normal["chosen_values"])["lr"] == pytest.approx([1e-3, 2e-3, 3e-3, 4e-3, 5e-3])
    assert "lr 0.001 – 0.005 (×5, 5 distinct)" in normal["chosen_spread"]
    assert "batch_size 128 ×3, 64 ×2" in normal["chosen_spread"]
    bad = arms.loc[("classify", DEGENERATE)]
    assert bad["degenerate"] and bad["compared"] == 0 and bad["runner_up"] == 4
    assert bad["first_guess_won"] == 5 and bad["full_length_max"] == 1
    why = bad["degenerate_why"]
    assert "at most 1 full-length trial per tuning" in why and "4 of 5 compared the winner with a runner-up at an ASHA rung only" in why
    assert "first guess won every one" in why
    assert not arms.loc[("upstream", "ae")]["per_seed"] and arms.loc[("upstream", "ae")]["tunings"] == 1
    per_tuning = pd.read_csv(new_report.output_dir / "tunings.csv")
    assert len(per_tuning) == 5 * len(STUDY.arms()) + 2
    table = section(new_report.markdown, "### Tuning")
    assert ("| classify | pretraining=dae,encoder=finetuned,labels=100% | 5 | 4 | 2–3 (median 2) | 1 of 5 | 3 [1 – 5] "
            "(at full length)" in table)
    assert "| 4 (4 of 5 had a runner-up, 0 at full length) |" in table                      # the degenerate arm
    assert "degenerate" in table and "Degenerate: no tuning" in table
    assert set(per_tuning[per_tuning["arm"] == DEGENERATE]["lead_epoch"].dropna()) == {1}


def test_degenerate_tuning_is_warned_in_the_findings(new_report):
    findings = new_report.markdown[:new_report.markdown.index("### ")]
    warning = next(line for line in findings.splitlines() if line.startswith("Tuning was degenerate"))
    assert "for 1 arm:" in warning and DEGENERATE in warning and "first guess won every one" in warning


def test_a_tuning_without_search_is_warned_in_whole_words():
    """Tunings of one trial (smoke) are degenerate; the warning gives their reason uncut."""
    from analysis import tuning as tuning_report
    arms = pd.DataFrame([{"stage": "classify", "arm": "a", "tunings": 2, "degenerate": True,
                          "degenerate_why": tuning_report._why(pd.DataFrame([{"full_length": 0, "trials": 0}]))}])
    text = tuning_report.warning(tuning_report.Diagnostics(pd.DataFrame(), arms, per_seed=True))
    assert text.endswith("trained as the choice).") and "no search: one trial per tuning" in text, text


def test_footnote_says_the_interval_counts_the_tuning_per_seed(new_report):
    planned = pd.read_csv(new_report.output_dir / "planned_contrasts.csv")
    covers = ("the tuning (each seed tuned on its own), the seeds (initialisation, split, order) and the test "
              "examples (where paired per example)")
    assert planned["interval_covers"].str.startswith(covers).all()
    assert "not the upstream stages' tuning" in planned["interval_covers"].iloc[0]
    assert f"The intervals count {covers}" in new_report.markdown
    assert f"The intervals count {covers}" in section(new_report.markdown, "### Planned contrasts")


def test_footnote_of_an_older_store_leaves_the_tuning_out(old_report):
    planned = pd.read_csv(old_report.output_dir / "planned_contrasts.csv")
    assert planned["interval_covers"].str.contains("it leaves the tuning out: one tuning per arm").all()
    assert "the tuning (each seed" not in old_report.markdown
    table = section(old_report.markdown, "### Tuning")
    assert "1 (tune seed, shared by every seed)" in table and "This store tuned every arm once" in table


# -- conditional contrasts (issue 20 item 4) ---------------------------------------------------------

def test_the_averaged_contrast_is_shown_per_label_fraction_and_they_disagree(new_report):
    frame = pd.read_csv(new_report.output_dir / "planned_contrasts.csv", keep_default_na=False)
    planned = frame[frame["family"] == "planned"].set_index("contrast")
    rows = frame[frame["conditional_of"] == AVERAGED]
    per_level = rows[rows["family"] == "conditional"].set_index("level")
    assert set(per_level.index) == {"10%", "100%"} and set(rows["factor"]) == {"labels"}
    for level in ("10%", "100%"):
        same = per_level.loc[level, "same_as"]
        assert same.startswith(f"frozen vs fine-tuned encoder at {level} labels")     # the planned one: its row
        assert float(per_level.loc[level, "estimate"]) == pytest.approx(float(planned.loc[same, "estimate"]))
        assert per_level.loc[level, "verdict"] == planned.loc[same, "verdict"]
        assert float(per_level.loc[level, "estimate"]) == pytest.approx(FROZEN[level], abs=0.002)
    assert per_level.loc["100%", "verdict_kind"] == inference.AT_LEAST
    assert per_level.loc["10%", "verdict_kind"] == inference.EQUIVALENT
    diff = rows[rows["family"] == "interaction"].iloc[0]
    assert diff["level"] == "10% minus 100%" and diff["disagree"] == "True"
    assert float(diff["estimate"]) == pytest.approx(FROZEN["10%"] - FROZEN["100%"], abs=0.002)
    finding = planned.loc[AVERAGED, "finding"]
    assert "Per level of labels: labels=100% −4.0" in finding and "They disagree: 10% minus 100% is +4.0" in finding
    assert "the average hides an interaction with labels" in finding
    table = section(new_report.markdown, "### Planned contrasts")
    assert "| ↳ labels=10% (= planned “frozen vs fine-tuned encoder at 10% labels" in table
    assert "| ↳ difference labels: 10% minus 100% — they disagree |" in table
    # the seed 003 contrast: a frozen DAE encoder loses about 2 pp with 10% of the labels
    seed003 = planned.loc["seed 003: frozen DAE encoder, 10% vs 100% labels"]
    assert float(seed003["estimate"]) == pytest.approx(-0.06 + 0.012 - 0.012 + FROZEN["10%"] - FROZEN["100%"], abs=0.002)
    assert seed003["verdict_kind"] == inference.AT_LEAST


def test_a_term_that_names_the_factor_keeps_its_level(new_report):
    frame = pd.read_csv(new_report.output_dir / "planned_contrasts.csv", keep_default_na=False)
    rows = frame[frame["conditional_of"] == EXTRA.name]
    assert set(rows["factor"]) == {"pretraining", "labels"}
    pre = rows[(rows["factor"] == "pretraining") & (rows["family"] == "conditional")].set_index("level")
    assert set(pre.index) == {"ae", "dae"}                   # none x frozen is invalid: no such level
    formula = pre.loc["ae", "formula"]           # the first term takes the level, the second keeps its own
    assert formula.startswith("+1 [encoder=frozen, pretraining=ae]") and "−1 [pretraining=dae, encoder=finetuned]" in formula
    assert (pre["same_as"] == "").all()
    # one Holm family over every per-level contrast no planned contrast is, one over the differences
    own = frame[(frame["family"] == "conditional") & (frame["same_as"] == "")]
    p = own["p"].astype(float)
    assert own["p_holm"].astype(float).to_numpy() == pytest.approx(stats.holm(p))
    levels = frame[frame["family"] == "interaction"]["holm_level"].astype(float).to_numpy()
    assert levels == pytest.approx(0.05 / len(levels))


def test_per_level_and_difference_specs():
    levels = {a.name: dict(a.levels) for a in STUDY.arms()}
    spec = next(s for s in contrasts.from_definition(STUDY.definition(), "test/acc") if s.name == AVERAGED)
    assert conditional.averaged_factors(spec, levels) == ["labels"]
    ten, hundred = conditional.per_level(spec, "labels", ["100%", "10%"], levels)[::-1]
    assert ten[1].weights == pytest.approx({f"pretraining={p},encoder={e},labels=10%": w for p in ("ae", "dae")
                                            for e, w in (("frozen", 0.5), ("finetuned", -0.5))})
    diff = conditional.difference(spec.name, "labels", hundred, ten)
    assert sum(diff.weights.values()) == pytest.approx(0) and len(diff.weights) == 8 and diff.family == "interaction"


def rows(*specs) -> pd.DataFrame:
    """A conditional frame by hand: (family, level, estimate, low, high, p_holm, verdict_kind)."""
    return pd.DataFrame([{"conditional_of": "c", "factor": "labels", "family": f, "level": lv, "metric": "test/acc",
                          "estimate": e, "low": lo, "high": hi, "p_holm": p, "verdict_kind": k, "n": 5, "same_as": "",
                          "disagree": p < 0.05 if f == "interaction" else ""}
                         for f, lv, e, lo, hi, p, k in specs])


def test_disagreement_needs_a_significant_difference():
    sign_only = rows(("conditional", "100%", -0.004, -0.009, 0.001, 0.2, inference.INCONCLUSIVE),
                     ("conditional", "10%", 0.002, -0.003, 0.007, 0.4, inference.INCONCLUSIVE),
                     ("interaction", "10% minus 100%", 0.006, -0.002, 0.014, 0.2, inference.INCONCLUSIVE))
    text = conditional.summary("c", sign_only)
    assert "They differ in sign, but no difference between them is significant" in text
    assert "no evidence that the contrast depends on labels" in text and "disagree" not in text
    one_decided = rows(("conditional", "100%", -0.02, -0.03, -0.01, 0.001, inference.AT_LEAST),
                       ("conditional", "10%", -0.01, -0.03, 0.01, 0.3, inference.INCONCLUSIVE),
                       ("interaction", "10% minus 100%", 0.01, -0.01, 0.03, 0.3, inference.INCONCLUSIVE))
    assert "have different verdicts, but no difference between them is significant" in conditional.summary("c", one_decided)
    agree = rows(("conditional", "100%", 0.01, 0.008, 0.012, 0.001, inference.AT_LEAST),
                 ("conditional", "10%", 0.011, 0.009, 0.013, 0.001, inference.AT_LEAST),
                 ("interaction", "10% minus 100%", 0.001, -0.001, 0.003, 0.4, inference.EQUIVALENT))
    assert "They agree within the margin" in conditional.summary("c", agree)
    split = rows(("conditional", "100%", 0.01, 0.008, 0.012, 0.001, inference.AT_LEAST),
                 ("conditional", "10%", 0.001, -0.001, 0.003, 0.4, inference.EQUIVALENT),
                 ("interaction", "10% minus 100%", -0.009, -0.012, -0.006, 0.001, inference.AT_LEAST))
    assert "They disagree: 10% minus 100% is −0.90 pp" in conditional.summary("c", split)
    assert "the average hides an interaction with labels" in conditional.summary("c", split)
    small = rows(("conditional", "100%", 0.01, 0.008, 0.012, 0.001, inference.AT_LEAST),
                 ("conditional", "10%", 0.012, 0.010, 0.014, 0.001, inference.AT_LEAST),
                 ("interaction", "10% minus 100%", 0.002, 0.001, 0.003, 0.01, inference.SMALLER))
    assert "They disagree" in conditional.summary("c", small)
    assert "an interaction smaller than the SESOI" in conditional.summary("c", small)


# -- the looks of a sequential study (issue 23) ------------------------------------------------------

def test_the_looks_are_shown_per_planned_contrast(seq_report, store):
    last = store["last_look"]["contrasts"]
    planned = pd.read_csv(seq_report.output_dir / "planned_contrasts.csv", keep_default_na=False).set_index("contrast")
    early = planned.loc["dropout 0.25 vs none"]
    record = last["dropout 0.25 vs none"]
    assert record["decision"] == "different" and record["n"] == 5 and record["look"] == 1
    assert early["seq_decision"] == "different" and float(early["seq_n"]) == 5 and int(early["n"]) == 8
    b = record["boundary"]
    for col, key in (("seq_level", "level"), ("seq_nominal_p", "nominal_p"), ("seq_t_critical", "t_critical")):
        assert float(early[col]) == pytest.approx(b[key])
    assert (float(early["seq_low"]), float(early["seq_high"])) == pytest.approx(tuple(record["interval"]))
    assert early["verdict"] == "different, at least the SESOI (0.5 pp)"
    finding = early["finding"]
    assert "decided different at n = 5 (look 1 of 2, cap 8 seeds)" in finding
    assert f"crossed the difference boundary at Holm level {b['level']:.3g}" in finding
    assert f"|t| ≥ {b['t_critical']:.3g}" in finding and "interval adjusted for the looks" in finding
    # the interval at the level it was decided excludes zero, as the decision says
    low, high = float(early["seq_boundary_low"]), float(early["seq_boundary_high"])
    assert (low, high) == pytest.approx(tuple(b["interval"])) and (low > 0 or high < 0)
    assert "interval at that level" in finding
    assert "All 8 seeds in the store, not adjusted for the looks" in finding
    late = planned.loc["dropout 0.5 vs none"]
    assert late["seq_decision"] == last["dropout 0.5 vs none"]["decision"] == "inconclusive"
    assert "cap reached at n = 8 (look 2 of 2, cap 8 seeds)" in late["finding"]
    assert late["verdict"] == "inconclusive — undecided at the cap (8 seeds)"
    table = section(seq_report.markdown, "### Planned contrasts")
    assert "sequential looks" in table and "Sequential looks (obrien-fleming spending" in table


def test_one_estimate_and_verdict_everywhere_with_looks(seq_report, store):
    h = seq_report.analysis.headline
    shown = h.shown.set_index("contrast").loc["dropout 0.25 vs none"]
    record = store["last_look"]["contrasts"]["dropout 0.25 vs none"]
    assert shown["estimate"] == pytest.approx(record["estimate"]) and shown["low"] == pytest.approx(record["interval"][0])
    diffs = section(seq_report.markdown, "### Exploratory: differences")
    row = next(line for line in diffs.splitlines() if "| dropout=0.25 |" in line)
    assert contrasts.amount(record["estimate"], "test/acc") in row and "(n=5)" in row
    assert "different, at least the SESOI (0.5 pp)" in row
    caption = next(f.caption for f in seq_report.figures if f.name == "effects")
    assert "interval adjusted for the looks" in caption


def test_without_the_record_nothing_changes(new_report):
    planned = pd.read_csv(new_report.output_dir / "planned_contrasts.csv")
    assert not any(c.startswith("seq_") for c in planned.columns)
    assert "sequential looks" not in new_report.markdown


def test_the_record_reads_either_look_shape():
    decision = {"look": 1, "contrasts": {"a": {"decision": "undecided", "n": 5}}, "next_n": 8,
                "design": {"looks": [5, 8], "max_seeds": 8}}
    frame = pd.DataFrame([{"contrast": "a", "margin": 0.005, "metric": "test/acc", "verdict": "x", "verdict_kind": "x"}])
    for look in (decision, {"look": 1, "seeds": [0, 1, 2, 3, 4], "statistics": {}, "decision": decision}):
        record = {"design": decision["design"], "looks": [look.get("decision", look) if "contrasts" not in look else look]}
        out = looks.columns(frame, record, 0.05).iloc[0]
        assert out["verdict"] == "undecided — the next look has 8 seeds" and out["seq_next_n"] == 8


# -- no test column that cannot reject (issue 20 item 5) --------------------------------------------

def test_the_wilcoxon_column_is_left_out_where_it_cannot_reject(new_report):
    diffs = section(new_report.markdown, "### Exploratory: differences")
    assert "Wilcoxon: p / Holm" not in diffs.splitlines()[2]
    assert "The Wilcoxon signed-rank column is left out: its smallest attainable two-sided p (0.0625 at n = 5)" in diffs
    csv = pd.read_csv(new_report.output_dir / "comparison_differences.csv")
    assert not csv["wilcoxon_can_reject"].any() and csv["p_wilcoxon"].notna().all()


def test_a_row_that_cannot_reject_says_so():
    frame = pd.DataFrame({"n": [4, 10], "wilcoxon_can_reject": [False, True]})
    display = pd.DataFrame({"Wilcoxon: p / Holm": ["cannot reject at n=4", "0.002 / 0.004"]})
    kept, note = tables.wilcoxon_column(display, frame, "Wilcoxon: p / Holm", 0.05)
    assert list(kept.columns) == ["Wilcoxon: p / Holm"] and "cannot reject" in note
    from analysis.stats import wilcoxon_can_reject, wilcoxon_min_p
    assert wilcoxon_min_p(5) == 0.0625 and wilcoxon_min_p(6) == pytest.approx(0.03125)
    assert list(wilcoxon_can_reject(pd.Series([6, 10]), 0.05)) == [True, True]
    assert list(wilcoxon_can_reject(pd.Series([6, 6]), 0.05)) == [False, False]     # 0.031 > 0.05 / 2
    assert math.isclose(wilcoxon_min_p(10), 2 / 1024)
