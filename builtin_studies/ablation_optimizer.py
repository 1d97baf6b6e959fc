"""Which optimizer, each with its own tuned learning-rate range? (seed 001)"""
from search_spaces.classifier import CLASSIFIER as CLASSIFIER_SPACE
from builtin_studies.mnist import BUDGETS, CLASSIFIER, MNIST
from study.api import Factor, Level, Study, difference

OPTIMIZER = Factor("optimizer", (
    Level("adam", {"optimizer": "adam"}),
    Level("adamw", {"optimizer": "adamw"}),
    # heavy-ball momentum 0.9: the setting of nearly every SGD baseline; tuning it too
    # would give SGD a knob the others lack (Adam's betas stay at their defaults)
    Level("sgd", {"optimizer": "sgd", "momentum": 0.9}),
    # plain RMSprop, as PyTorch's and Keras' defaults; its lr range is meant for that
    Level("rmsprop", {"optimizer": "rmsprop", "momentum": 0.0}),
    Level("adagrad", {"optimizer": "adagrad"}),
    Level("adadelta", {"optimizer": "adadelta"}),
), reason="the optimizer; learning rate and weight decay ranges are tuned per optimizer")

STUDY = Study(
    name="ablation_optimizer",
    description="Which optimizer? adam, adamw, sgd, rmsprop, adagrad, adadelta, each with its own tuned lr",
    question="Seed 001 compared Adam, Adadelta and Adagrad at one learning rate; each gets its own tuned range here.",
    factors=(OPTIMIZER,),
    baseline={"optimizer": "adam"},
    design="one_at_a_time",
    contrasts=tuple(difference(f"{o} vs adam", {"optimizer": o}, {"optimizer": "adam"})
                    for o in ("adamw", "sgd", "rmsprop", "adagrad", "adadelta")),
    search_space=CLASSIFIER_SPACE,
    trainable=CLASSIFIER,
    data=MNIST,
    fixed={"model": "cnn", "task": "digits", "dropout": 0.25},
    budgets=BUDGETS,
)
