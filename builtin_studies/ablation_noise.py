"""Noisy inputs: is it the denoiser, or just training on noisy data? (seeds 003/004)"""
from search_spaces.classifier import CLASSIFIER as CLASSIFIER_SPACE
from builtin_studies.mnist import (BUDGETS, CLASSIFIER, DENOISER_FOR_TEST_NOISE, GAUSSIAN_DAE, MNIST, SALT_PEPPER_DAE,
                           TRAIN_ON_TEST_NOISE)
from study.api import DegradedCell, Factor, InvalidCell, Level, Study, difference

STUDY = Study(
    name="ablation_noise",
    description="Noisy inputs: clean vs gaussian vs salt-and-pepper test inputs x clean-, noisy- or denoiser-trained classifier",
    question="Seeds 003/004: a denoising autoencoder in front of the CNN took noisy MNIST from 97.6% to 99%, "
             "from one run. Is it the denoiser, or just training on noisy data?",
    factors=(
        Factor("noise", (
            Level("clean", {"test_corruption": "none", "test_noise_level": 0.0}),
            Level("gaussian", {"test_corruption": "gaussian",
                               "test_noise_level": GAUSSIAN_DAE.settings["noise_level"]}),
            Level("salt_pepper", {"test_corruption": "salt_pepper",
                                  "test_noise_level": SALT_PEPPER_DAE.settings["noise_level"]}),
        ), reason="corruption of the validation and test inputs"),
        Factor("training", (
            Level("clean", {"train_corruption": "none", "train_noise_level": 0.0}),
            Level("noisy", settings_from=TRAIN_ON_TEST_NOISE),
            Level("denoised", settings_from=TRAIN_ON_TEST_NOISE, uses=(DENOISER_FOR_TEST_NOISE,)),
        ), reason="classifier trained on clean inputs, on noisy ones, or on the denoiser's outputs"),
    ),
    baseline={"noise": "clean", "training": "clean"},
    design="factorial",
    invalid=(InvalidCell({"noise": "clean", "training": "noisy"}, "no noise: identical to clean training"),
             InvalidCell({"noise": "clean", "training": "denoised"},
                         "no noise to remove: the study asks about noisy inputs")),
    degraded=tuple(DegradedCell({"noise": n, "training": "clean"},
                                "trained on clean digits, scored on corrupted ones: the drop is the "
                                "distribution shift the study measures") for n in ("gaussian", "salt_pepper")),
    contrasts=tuple(c for n in ("gaussian", "salt_pepper") for c in (
        difference(f"denoiser vs training on noisy inputs, {n} noise",
                   {"noise": n, "training": "denoised"}, {"noise": n, "training": "noisy"}),
        difference(f"training on noisy inputs vs on clean ones, {n} noise",
                   {"noise": n, "training": "noisy"}, {"noise": n, "training": "clean"}))),
    search_space=CLASSIFIER_SPACE,
    trainable=CLASSIFIER,
    data=MNIST,
    fixed={"model": "cnn", "task": "digits", "optimizer": "adam", "dropout": 0.25},
    budgets=BUDGETS,
)
