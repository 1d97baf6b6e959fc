"""Does a wider or deeper hidden layer help a small MLP on scikit-learn's 8x8 digits?

    python -m study.run examples/digits_width.py --check          # seconds: can it run?
    python -m study.run examples/digits_width.py --budget smoke   # a few minutes on 2 cores
    python -m analysis.compare digits_width                       # the report
"""
from digits_mlp import fit, load           # the trainable, next to this file

from study.api import Budget, Data, Factor, Level, Param, SearchSpace, Study, difference

SPACE = SearchSpace("digits_mlp", (
    Param("lr", 3e-4, 3e-2, log=True, start=3e-3,
          reason="AdamW on 1,078 images: below 3e-4 too slow for 30 epochs, above 3e-2 unstable"),
    Param("batch_size", choices=(32, 64, 128), start=64,
          reason="17 to 34 steps per epoch; 128 leaves too few steps per epoch for short budgets"),
    Param("weight_decay", 1e-6, 1e-2, log=True, start=1e-4,
          reason="decoupled decay: from nothing in effect (1e-6) to strong (1e-2)"),
))

STUDY = Study(
    name="digits_width",
    description="8x8 digits MLP: hidden width 16 / 64 / 256 and depth 1 / 2, one at a time",
    question="Is the 64-unit, one-layer MLP too narrow or too shallow for 8x8 digits?",
    factors=(
        Factor("width", (Level("16", {"hidden": 16}), Level("64", {"hidden": 64}), Level("256", {"hidden": 256})),
               reason="units in each hidden layer"),
        Factor("depth", (Level("1", {"depth": 1}), Level("2", {"depth": 2})), reason="hidden layers"),
    ),
    baseline={"width": "64", "depth": "1"},
    design="one_at_a_time",
    contrasts=(difference("width 16 vs 64", {"width": "16"}, {"width": "64", "depth": "1"}),
               difference("width 256 vs 64", {"width": "256"}, {"width": "64", "depth": "1"}),
               difference("two hidden layers vs one", {"depth": "2"}, {"width": "64", "depth": "1"})),
    search_space=SPACE,
    trainable=fit,
    data=Data(load, names=("digits",)),
    budgets={
        # smoke: the machinery end to end in minutes; the numbers are not results
        "smoke": Budget(dataset="digits", epochs=5, trials_per_tuning=2, seeds=(0, 1)),
        # laptop: the answer, in minutes on 2 cores: 8 trials per arm (TPE after 5), 5 paired seeds
        "laptop": Budget(dataset="digits", epochs=30, trials_per_tuning=4, seeds=(0, 1, 2, 3, 4), startup_trials=5),
        "full": Budget(dataset="digits", epochs=60, trials_per_tuning=8, seeds=tuple(range(10))),
    },
)
