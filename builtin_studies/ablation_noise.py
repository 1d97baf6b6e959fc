"""Noisy inputs: is it the denoiser, or just training on noisy data? (seeds 003/004)"""
from search_spaces.classifier import CLASSIFIER as CLASSIFIER_SPACE
from builtin_studies.mnist import (BUDGETS, CLASSIFIER, DENOISER_FOR_TEST_NOISE, GAUSSIAN_DAE, MNIST, SALT_PEPPER_DAE,
                           TRAIN_ON_TEST_NOISE)
from study.api import DegradedCell, Factor, InvalidCell, Level, Metric, Study, difference

NOISES = ("gaussian", "salt_pepper")
TIME_TO_99 = "time_to/epoch_99"

STUDY = Study(
    name="ablation_noise",
    description="Noisy inputs: clean vs gaussian vs salt-and-pepper test inputs x clean-, noisy- or denoiser-trained "
                "classifier, or a clean-trained one behind the denoiser at test time",
    question="Seeds 003/004: a denoising autoencoder in front of the CNN took noisy MNIST from 97.6% to 99%, "
             "from one run. Is it the denoiser, or just training on noisy data? And does the denoiser need the "
             "classifier trained behind it, or can a clean-trained classifier be put behind it at test time?",
    factors=(
        Factor("noise", (
            Level("clean", {"test_corruption": "none", "test_noise_level": 0.0}),
            Level("gaussian", {"test_corruption": "gaussian",
                               "test_noise_level": GAUSSIAN_DAE.settings["noise_level"]}),
            Level("salt_pepper", {"test_corruption": "salt_pepper",
                                  "test_noise_level": SALT_PEPPER_DAE.settings["noise_level"]}),
        ), reason="corruption of the test inputs (validation follows each arm's training inputs)"),
        Factor("training", (
            Level("clean", {"train_corruption": "none", "train_noise_level": 0.0}),
            Level("noisy", settings_from=TRAIN_ON_TEST_NOISE),
            Level("denoised", settings_from=TRAIN_ON_TEST_NOISE, uses=(DENOISER_FOR_TEST_NOISE,)),
            # the other pipeline: the classifier trained and validated on clean images (its own
            # training inputs, as every arm), the denoiser put in front of it only at test time
            Level("denoiser-at-test", {"train_corruption": "none", "train_noise_level": 0.0, "denoiser_at": "test"},
                  uses=(DENOISER_FOR_TEST_NOISE,)),
        ), reason="classifier trained on clean inputs, on noisy ones, on the denoiser's outputs, or on clean "
                  "inputs with the denoiser in front of it at test time only"),
    ),
    baseline={"noise": "clean", "training": "clean"},
    design="factorial",
    invalid=(InvalidCell({"noise": "clean", "training": "noisy"}, "no noise: identical to clean training"),
             InvalidCell({"noise": "clean", "training": "denoised"},
                         "no noise to remove: the study asks about noisy inputs"),
             InvalidCell({"noise": "clean", "training": "denoiser-at-test"},
                         "no noise to remove: the study asks about noisy inputs")),
    degraded=tuple(DegradedCell({"noise": n, "training": "clean"},
                                "trained on clean digits, scored on corrupted ones: the drop is the "
                                "distribution shift the study measures") for n in NOISES),
    metrics=(
        # validation runs once per epoch, so one epoch is the finest difference a run can show;
        # at the laptop budget it is a tenth of the training
        Metric(TIME_TO_99, margin=1.0, mode="min"),
    ),
    contrasts=(
        *(c for n in NOISES for c in (
            difference(f"denoiser vs training on noisy inputs, {n} noise",
                       {"noise": n, "training": "denoised"}, {"noise": n, "training": "noisy"}),
            difference(f"training on noisy inputs vs on clean ones, {n} noise",
                       {"noise": n, "training": "noisy"}, {"noise": n, "training": "clean"}),
            difference(f"clean-trained behind the denoiser at test time vs training on noisy inputs, {n} noise",
                       {"noise": n, "training": "denoiser-at-test"}, {"noise": n, "training": "noisy"}),
            difference(f"clean-trained behind the denoiser at test time vs trained on denoised inputs, {n} noise",
                       {"noise": n, "training": "denoiser-at-test"}, {"noise": n, "training": "denoised"}))),
        # seed 004: "CNNs on denoised samples take longer to train" (its Gaussian noise)
        difference("epochs to 99% of the final validation accuracy: trained on denoised vs on noisy inputs, "
                   "gaussian noise", {"noise": "gaussian", "training": "denoised"},
                   {"noise": "gaussian", "training": "noisy"}, metric=TIME_TO_99),
    ),
    search_space=CLASSIFIER_SPACE,
    trainable=CLASSIFIER,
    data=MNIST,
    # bf16 autocast where the node has native bf16: equivalent to fp32 for seed 002's CNN within
    # ±0.5 pp (builtin_studies/precision.py; docs/results/precision)
    fixed={"model": "cnn", "task": "digits", "optimizer": "adam", "dropout": 0.25, "precision": "auto"},
    budgets=BUDGETS,
)
