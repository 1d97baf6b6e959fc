"""Does dropout help seed 002's 3-conv CNN? (seeds 002/004)"""
from search_spaces.classifier import CLASSIFIER as CLASSIFIER_SPACE
from builtin_studies.mnist import BUDGETS, CLASSIFIER, MNIST
from study.api import Factor, Level, Study, difference

STUDY = Study(
    name="ablation_dropout",
    description="Does dropout help seed 002's 3-conv CNN? dropout 0 vs 0.25 vs 0.5, with augmentation",
    question="Seed 002 used dropout 0.5 untested; seed 004 saw 'an effect, but not significant' from one run each.",
    factors=(
        Factor("dropout", (Level("0", {"dropout": 0.0}), Level("0.25", {"dropout": 0.25}),
                           Level("0.5", {"dropout": 0.5})), reason="dropout before the dense layers"),
    ),
    baseline={"dropout": "0"},
    design="one_at_a_time",
    contrasts=tuple(difference(f"dropout {p} vs none", {"dropout": p}, {"dropout": "0"}) for p in ("0.25", "0.5")),
    search_space=CLASSIFIER_SPACE,
    trainable=CLASSIFIER,
    data=MNIST,
    # bf16 autocast where the node has native bf16: equivalent to fp32 for this CNN within ±0.5 pp
    # (builtin_studies/precision.py; docs/results/precision)
    fixed={"model": "cnn", "task": "digits", "optimizer": "adam", "augment": True, "precision": "auto"},
    budgets=BUDGETS,
)
