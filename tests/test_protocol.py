"""The protocol's rules that need no training: search ranges per optimizer, the reuse key of a
trained autoencoder, the tune seed kept out of the replicate seeds, budgets, contrasts."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from search_spaces.classifier import CLASSIFIER
from builtin_studies.mnist import autoencoder as Pretraining
from study import configs
from study.registry import STUDIES
from study.spec import Budget, Contrast, Study, difference
from trainables import versions

ROOT = Path(__file__).resolve().parents[1]
SHA = "0" * 64


def _range(optimizer: str, name: str):
    return next((p.low, p.high) for p in CLASSIFIER.resolve({"optimizer": optimizer}) if p.name == name)


def test_adamw_gets_a_decoupled_decay_range_of_its_own():
    adam, adamw = _range("adam", "weight_decay"), _range("adamw", "weight_decay")
    assert adamw != adam
    assert adamw[0] >= 1e-4 and adamw[1] >= 1e-2 > adam[1]   # decay scaled by lr needs larger values


def test_optimizer_study_states_momentum_where_the_optimizer_has_one():
    arms = {a.levels["optimizer"]: a for a in STUDIES["ablation_optimizer"].arms()}
    assert arms["sgd"].settings["momentum"] == 0.9
    assert arms["rmsprop"].settings["momentum"] == 0.0
    assert _range("sgd", "lr")[0] > _range("adam", "lr")[0]


def test_every_pretraining_budget_stops_early():
    for study in STUDIES.values():
        for p in study.upstreams():
            for budget in study.budgets.values():
                config = configs.upstream_config(p, study, budget, 0, None)
                assert config["patience"] >= 1 and config["epochs"] > config["patience"], (study.name, budget)


def test_pretraining_reuse_key_changes_with_what_shapes_the_weights(monkeypatch):
    study = STUDIES["ablation_pretraining"]
    budget = study.budget("smoke")
    key = configs.upstream_cache_key(Pretraining(), study, budget, SHA, 0)
    assert key == configs.upstream_cache_key(Pretraining(), study, budget, SHA, 0)
    wider = configs.upstream_cache_key(Pretraining(latent_dim=64), study, budget, SHA, 0)
    other_split = replace(study, fixed={**study.fixed, "val_fraction": 0.2})
    other_val = configs.upstream_cache_key(Pretraining(), other_split, budget, SHA, 0)
    other_data = configs.upstream_cache_key(Pretraining(), study, budget, "1" * 64, 0)
    other_seed = configs.upstream_cache_key(Pretraining(), study, budget, SHA, 1)
    longer = configs.upstream_cache_key(Pretraining(), study, replace(budget, upstream_epochs=9), SHA, 0)
    monkeypatch.setattr(versions, "autoencoder_code_version", lambda: "changed")
    other_code = configs.upstream_cache_key(Pretraining(), study, budget, SHA, 0)
    keys = [key, wider, other_val, other_data, other_seed, longer, other_code]
    assert len(set(keys)) == len(keys)


def test_autoencoder_holds_out_the_classifiers_validation_split():
    study = replace(STUDIES["ablation_pretraining"], fixed={**STUDIES["ablation_pretraining"].fixed,
                                                           "val_fraction": 0.2})
    config = configs.upstream_config(Pretraining(), study, study.budget("smoke"), 0, None)
    assert config["val_fraction"] == 0.2


def test_tune_seed_among_the_replicate_seeds_is_refused():
    with pytest.raises(ValueError, match="tune seed 1000"):
        Budget(dataset="mnist-5k", epochs=1, trials_per_tuning=1, seeds=(0, 1000))
    result = subprocess.run([sys.executable, "-m", "study.run", "ablation_dropout", "--seeds", "0,1000", "--dry-run"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "tune seed" in result.stderr


def test_every_study_has_smoke_laptop_and_full_and_laptop_answers():
    for study in STUDIES.values():
        assert {"smoke", "laptop", "full"} <= set(study.budgets)
        laptop = study.budget("laptop")
        assert laptop.dataset == "mnist-5k" and len(laptop.seeds) >= 5
        # each arm is tuned on each seed: the first guess and at least 3 random draws, every seed
        assert laptop.trials_per_tuning >= 4


def test_contrasts_resolve_to_named_cells_and_reject_unknown_ones():
    pretraining = STUDIES["ablation_pretraining"]
    frozen = next(c for c in pretraining.contrasts if c.name.startswith("frozen vs fine-tuned"))
    weights = pretraining.contrast_weights(frozen)
    assert len(weights) == 8 and abs(sum(weights.values())) < 1e-12      # 4 frozen vs 4 fine-tuned cells
    assert all(abs(abs(w) - 0.25) < 1e-12 for w in weights.values())
    noise = STUDIES["ablation_noise"]
    names = [c.name for c in noise.contrasts]
    assert any("denoiser vs training on noisy" in n and "gaussian" in n for n in names)
    with pytest.raises(ValueError, match="matches no valid arm"):
        replace(noise, contrasts=(difference("x", {"noise": "clean", "training": "noisy"}, {"noise": "clean"}),))
    with pytest.raises(ValueError, match="no level"):
        replace(noise, contrasts=(difference("x", {"noise": "loud"}, {"noise": "clean"}),))
    with pytest.raises(ValueError, match="sum to 0"):
        Contrast("x", (({"noise": "clean"}, 1.0),))


def test_degraded_cells_are_declared_with_a_reason():
    noise = STUDIES["ablation_noise"]
    degraded = [a for a in noise.arms() if noise.is_degraded(a.levels)]
    assert {a.levels["noise"] for a in degraded} == {"gaussian", "salt_pepper"}
    assert all(a.levels["training"] == "clean" for a in degraded)
