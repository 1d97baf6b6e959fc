"""Which of three changes matter for the digits MLP? A half-fraction screening design: 4 of the
8 cells of pretraining x dropout x width, each main effect estimated from all four arms (and
aliased with the interaction of the other two factors).

The pretrained arms build on an upstream stage: an autoencoder (examples/digits_mlp.py:
pretrain) of the arm's own width, trained once per seed and reused by every arm and rerun.

    python -m study.run examples/digits_screening.py --budget smoke
    python -m analysis.compare digits_screening
"""
from digits_mlp import fit, load, pretrain

from study.api import (Budget, Data, Factor, Level, Param, SearchSpace, Stage, Study, Upstream, Use,
                       difference)

AUTOENCODER = Stage(
    name="digits_ae", trainable=pretrain, metric="val/loss", mode="min",
    search_space=SearchSpace("digits_ae", (
        Param("lr", 1e-3, 1e-2, log=True, start=3e-3, reason="Adam on MSE of [0, 1] pixels; 3e-3 converges in ~10 epochs"),
    )))
# the autoencoder of the arm's own width: its encoder is the arm's first layer
ENCODER = Use(Upstream(AUTOENCODER, name="digits-ae-h{hidden}", settings_from={"hidden": "hidden"}),
              file="encoder.pt", into="encoder_checkpoint")

STUDY = Study(
    name="digits_screening",
    description="8x8 digits MLP: autoencoder pretraining x dropout x width, a half-fraction screen (4 arms)",
    question="Which of pretraining, dropout and width moves test accuracy, before spending a full factorial?",
    factors=(
        Factor("pretraining", (Level("none"), Level("autoencoder", uses=(ENCODER,))),
               reason="first layer from an autoencoder's encoder, or at random"),
        Factor("dropout", (Level("0", {"dropout": 0.0}), Level("0.3", {"dropout": 0.3})),
               reason="dropout after each hidden layer"),
        Factor("width", (Level("32", {"hidden": 32}), Level("128", {"hidden": 128})), reason="hidden units"),
    ),
    baseline={"pretraining": "none", "dropout": "0", "width": "32"},
    design="half_fraction",
    contrasts=(difference("autoencoder pretraining vs none", {"pretraining": "autoencoder"}, {"pretraining": "none"}),
               difference("dropout 0.3 vs none", {"dropout": "0.3"}, {"dropout": "0"}),
               difference("width 128 vs 32", {"width": "128"}, {"width": "32"})),
    search_space=SearchSpace("digits_mlp", (
        Param("lr", 3e-4, 3e-2, log=True, start=3e-3, reason="AdamW on 1,078 images, as in digits_width"),
        Param("weight_decay", 1e-6, 1e-2, log=True, start=1e-4, reason="from nothing in effect to strong"),
    )),
    trainable=fit,
    data=Data(load, names=("digits",)),
    fixed={"batch_size": 64},
    budgets={
        "smoke": Budget(dataset="digits", epochs=5, trials_per_tuning=2, seeds=(0, 1),
                        upstream_epochs=5, upstream_trials=1, upstream_patience=2),
        "laptop": Budget(dataset="digits", epochs=30, trials_per_tuning=4, seeds=(0, 1, 2, 3, 4), startup_trials=5,
                         upstream_epochs=30, upstream_trials=4, upstream_patience=3),
        "full": Budget(dataset="digits", epochs=60, trials_per_tuning=8, seeds=tuple(range(10)),
                       upstream_epochs=60, upstream_trials=8, upstream_patience=5),
    },
)
