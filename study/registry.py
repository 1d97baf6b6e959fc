"""The registered studies, keyed by name. Each answers questions from the write-ups in
``shared/seeds`` (000-004), fairly: nuisance hyperparameters tuned per arm with the same budget,
then the best configuration replicated on the same seeds for every arm."""
from __future__ import annotations

from search_spaces.autoencoder import AUTOENCODER
from search_spaces.classifier import CLASSIFIER, CNN_SWEEP
from study.spec import (Budget, Contrast, DegradedCell, Factor, InvalidCell, Level, Pretraining, Study,
                        difference, interaction)

# Seed 003's denoising autoencoder: salt-and-pepper noise on the inputs, clean targets.
SALT_PEPPER_DAE = Pretraining(corruption="salt_pepper", noise_level=0.2)
GAUSSIAN_DAE = Pretraining(corruption="gaussian", noise_level=0.3)
PLAIN_AE = Pretraining()

# smoke: every study end to end in the test suite on 2 CPU cores, in minutes, and every
# number it prints still means something: 4 classifier epochs at the searches' first guess
# (lr 3e-3, batch 64) take every arm of every study above 80% on mnist-5k (3 left a frozen
# encoder with 10% of the labels at 75% on one seed), 4 autoencoder epochs reach ~19-21 dB. 2 tune trials per arm (ASHA gets to compare), 1 pretraining trial
# (the first guess), 2 paired seeds: n=2 gives estimates, never verdicts.
SMOKE = Budget(dataset="mnist-5k", epochs=4, trials_per_arm=2, seeds=(0, 1),
               pretrain_epochs=4, pretrain_trials=1, pretrain_patience=2, grace_period=1)
# laptop: the budget that answers a study's question on one CPU machine (<= 20 min per study
# on 2 cores, see --dry-run): 5 paired seeds, 8 trials per arm of which TPE models the last 3
# (random start of 5, the first being the hand-picked guess), 10 epochs to convergence.
LAPTOP = Budget(dataset="mnist-5k", epochs=10, trials_per_arm=8, seeds=(0, 1, 2, 3, 4),
                pretrain_epochs=8, pretrain_trials=4, pretrain_patience=2, grace_period=2,
                startup_trials=5)
# full: real MNIST on a GPU cluster, enough Optuna trials per arm for TPE to leave its
# default random start of 10, 5 paired seeds.
FULL = Budget(dataset="mnist", epochs=15, trials_per_arm=16, seeds=(0, 1, 2, 3, 4),
              pretrain_epochs=20, pretrain_trials=12, pretrain_patience=3, grace_period=2)
BUDGETS = {"smoke": SMOKE, "laptop": LAPTOP, "full": FULL}

STUDIES: dict[str, Study] = {}


def register(study: Study) -> Study:
    if study.name in STUDIES:
        raise ValueError(f"study {study.name!r} registered twice")
    STUDIES[study.name] = study
    return study


def get_study(name: str) -> Study:
    if name not in STUDIES:
        raise KeyError(f"unknown study {name!r}; registered studies: {', '.join(sorted(STUDIES))}")
    return STUDIES[name]


register(Study(
    name="ablation_pretraining",
    description="Does autoencoder pretraining help? plain vs denoising AE x frozen vs fine-tuned x 10% vs 100% labels",
    question="Seeds 000/001/003: pretraining helped by hand (96.2% vs 94.5%; 91% with 10% of the labels) "
             "but with one lr, one run and no error bars. Which part helps, and when?",
    factors=(
        Factor("pretraining", (
            Level("none", {}),
            Level("ae", {"pretraining": PLAIN_AE}),
            Level("dae", {"pretraining": SALT_PEPPER_DAE}),
        ), reason="initialise the encoder from a (denoising) autoencoder or at random"),
        Factor("encoder", (
            Level("finetuned", {"encoder_mode": "finetuned"}),
            Level("frozen", {"encoder_mode": "frozen"}),
        ), reason="train only the head on top of the pretrained features, or everything"),
        Factor("labels", (
            Level("100%", {"label_fraction": 1.0}),
            Level("10%", {"label_fraction": 0.1}),
        ), reason="pretraining should matter most when labels are scarce (seed 003)"),
    ),
    baseline={"pretraining": "none", "encoder": "finetuned", "labels": "100%"},
    design="factorial",
    invalid=(InvalidCell({"pretraining": "none", "encoder": "frozen"},
                         "nothing pretrained to freeze: a frozen random encoder measures random features"),),
    contrasts=(
        *(difference(f"{p.upper()} pretraining vs none, fine-tuned, {labels} labels",
                     {"pretraining": p, "encoder": "finetuned", "labels": labels},
                     {"pretraining": "none", "encoder": "finetuned", "labels": labels})
          for labels in ("10%", "100%") for p in ("ae", "dae")),
        Contrast("frozen vs fine-tuned encoder, given pretraining (AE and DAE, 10% and 100% labels averaged)",
                 (({"pretraining": "ae", "encoder": "frozen"}, 0.5), ({"pretraining": "dae", "encoder": "frozen"}, 0.5),
                  ({"pretraining": "ae", "encoder": "finetuned"}, -0.5),
                  ({"pretraining": "dae", "encoder": "finetuned"}, -0.5))),
        Contrast("pretraining x labels: gain of pretraining (AE and DAE averaged, fine-tuned) at 10% "
                 "minus its gain at 100% labels",
                 (({"pretraining": "ae", "encoder": "finetuned", "labels": "10%"}, 0.5),
                  ({"pretraining": "dae", "encoder": "finetuned", "labels": "10%"}, 0.5),
                  ({"pretraining": "none", "encoder": "finetuned", "labels": "10%"}, -1.0),
                  ({"pretraining": "ae", "encoder": "finetuned", "labels": "100%"}, -0.5),
                  ({"pretraining": "dae", "encoder": "finetuned", "labels": "100%"}, -0.5),
                  ({"pretraining": "none", "encoder": "finetuned", "labels": "100%"}, 1.0))),
    ),
    search_space=CLASSIFIER,
    fixed={"model": "encoder_head", "task": "digits", "optimizer": "adam", "latent_dim": 32,
           "head_hidden": 16, "head_layers": 2},
    budgets=BUDGETS,
))

register(Study(
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
    search_space=CLASSIFIER,
    fixed={"model": "cnn", "task": "digits", "optimizer": "adam", "augment": True},
    budgets=BUDGETS,
))

register(Study(
    name="ablation_optimizer",
    description="Which optimizer? adam, adamw, sgd, rmsprop, adagrad, adadelta, each with its own tuned lr",
    question="Seed 001 compared Adam, Adadelta and Adagrad at one learning rate; each gets its own tuned range here.",
    factors=(
        Factor("optimizer", (
            Level("adam", {"optimizer": "adam"}),
            Level("adamw", {"optimizer": "adamw"}),
            # heavy-ball momentum 0.9: the setting of nearly every SGD baseline; tuning it too
            # would give SGD a knob the others lack (Adam's betas stay at their defaults)
            Level("sgd", {"optimizer": "sgd", "momentum": 0.9}),
            # plain RMSprop, as PyTorch's and Keras' defaults; its lr range is meant for that
            Level("rmsprop", {"optimizer": "rmsprop", "momentum": 0.0}),
            Level("adagrad", {"optimizer": "adagrad"}),
            Level("adadelta", {"optimizer": "adadelta"}),
        ), reason="the optimizer; learning rate and weight decay ranges are tuned per optimizer"),
    ),
    baseline={"optimizer": "adam"},
    design="one_at_a_time",
    contrasts=tuple(difference(f"{o} vs adam", {"optimizer": o}, {"optimizer": "adam"})
                    for o in ("adamw", "sgd", "rmsprop", "adagrad", "adadelta")),
    search_space=CLASSIFIER,
    fixed={"model": "cnn", "task": "digits", "dropout": 0.25},
    budgets=BUDGETS,
))

_CLEAN = {"train_corruption": "none", "train_noise_level": 0.0}
register(Study(
    name="ablation_noise",
    description="Noisy inputs: clean vs gaussian vs salt-and-pepper test inputs x clean-, noisy- or denoiser-trained classifier",
    question="Seeds 003/004: a denoising autoencoder in front of the CNN took noisy MNIST from 97.6% to 99%, "
             "from one run. Is it the denoiser, or just training on noisy data?",
    factors=(
        Factor("noise", (
            Level("clean", {"test_corruption": "none", "test_noise_level": 0.0}),
            Level("gaussian", {"test_corruption": "gaussian", "test_noise_level": GAUSSIAN_DAE.noise_level}),
            Level("salt_pepper", {"test_corruption": "salt_pepper",
                                  "test_noise_level": SALT_PEPPER_DAE.noise_level}),
        ), reason="corruption of the validation and test inputs"),
        Factor("training", (
            Level("clean", _CLEAN),
            Level("noisy", {"train_on_test_noise": True}),
            Level("denoised", {"train_on_test_noise": True, "denoise": True}),
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
    search_space=CLASSIFIER,
    fixed={"model": "cnn", "task": "digits", "optimizer": "adam", "dropout": 0.25},
    budgets=BUDGETS,
))

register(Study(
    name="even_odd",
    description="Even vs odd digits (binary): scratch vs pretrained-frozen vs pretrained-fine-tuned encoder",
    question="Seed 000 reached ~98% on even/odd with a frozen pretrained encoder; was the pretraining needed?",
    factors=(
        Factor("encoder", (
            Level("scratch", {"encoder_mode": "finetuned"}),
            Level("pretrained-frozen", {"pretraining": PLAIN_AE, "encoder_mode": "frozen"}),
            Level("pretrained-finetuned", {"pretraining": PLAIN_AE, "encoder_mode": "finetuned"}),
        ), reason="how the encoder is initialised and whether it trains"),
    ),
    baseline={"encoder": "scratch"},
    design="one_at_a_time",
    contrasts=tuple(difference(f"{e} encoder vs scratch", {"encoder": e}, {"encoder": "scratch"})
                    for e in ("pretrained-frozen", "pretrained-finetuned")),
    search_space=CLASSIFIER,
    fixed={"model": "encoder_head", "task": "even_odd", "optimizer": "adam"},
    budgets=BUDGETS,
))

register(Study(
    name="cnn_sweep",
    description="Seed 004's CNN sweep: kernel size and stride as arms; dropout, lr and batch size tuned per arm",
    question="Seed 004 swept kernel, stride, dropout, lr and batch by hand and picked kernel 3, stride 1.",
    factors=(
        Factor("kernel", tuple(Level(str(k), {"cnn_kernel_size": k}) for k in (3, 5, 7)),
               reason="convolution kernel size"),
        Factor("stride", tuple(Level(str(s), {"cnn_stride": s}) for s in (1, 2)),
               reason="convolution stride (2 shrinks feature maps 4x per layer)"),
    ),
    baseline={"kernel": "3", "stride": "1"},
    design="one_at_a_time",
    contrasts=(*(difference(f"kernel {k} vs seed 004's kernel 3 (stride 1)", {"kernel": k, "stride": "1"},
                            {"kernel": "3", "stride": "1"}) for k in ("5", "7")),
               difference("stride 2 vs seed 004's stride 1 (kernel 3)", {"kernel": "3", "stride": "2"},
                          {"kernel": "3", "stride": "1"})),
    search_space=CNN_SWEEP,
    fixed={"model": "cnn", "task": "digits", "optimizer": "adam"},
    budgets=BUDGETS,
))

# The autoencoder pretraining stage's nuisance space (shared by every study).
PRETRAIN_SPACE = AUTOENCODER
