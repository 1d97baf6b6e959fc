"""What our six MNIST studies share: the classifier trainable, the data, the budgets and the
autoencoder stage (seed 003's pretraining, also the denoisers of the noise study)."""
from __future__ import annotations

from search_spaces.autoencoder import AUTOENCODER as AUTOENCODER_SPACE
from study.api import Budget, Data, Stage, Upstream, Use

CLASSIFIER = "trainables.classifier:train_classifier"      # docs/architecture.md §1
# trainables.data.DATASET_NAMES (a test keeps the two equal; importing it here would import torch)
MNIST = Data(load="trainables.data:load_dataset", names=("mnist-5k", "mnist", "fashion-mnist"))

AUTOENCODER = Stage(
    name="autoencoder", trainable="trainables.autoencoder:train_autoencoder",
    search_space=AUTOENCODER_SPACE, metric="val/loss", mode="min",
    # the arms' val_fraction (0.1: the classifier's default): with the same seed the autoencoder
    # holds out exactly the images the classifier validates on, so none has seen a validation image
    inherit={"val_fraction": 0.1},
    code_version="trainables.versions:autoencoder_code_version")


def autoencoder(corruption: str = "none", noise_level: float = 0.0, latent_dim: int = 32) -> Upstream:
    """A plain ("ae") or denoising ("dae-<corruption>-<level>") autoencoder; "-z<dim>" when its
    bottleneck is not seed 003's 32."""
    name = "ae" if corruption == "none" else f"dae-{corruption}-{noise_level:g}"
    return Upstream(AUTOENCODER, {"corruption": corruption, "noise_level": noise_level, "latent_dim": latent_dim},
                    name=name if latent_dim == 32 else f"{name}-z{latent_dim}")


def encoder_of(upstream: Upstream) -> Use:
    """The classifier's encoder starts from the autoencoder's, of the same width."""
    return Use(upstream, file="encoder.pt", into="encoder_checkpoint", shared=("latent_dim",))


# Seed 003's denoising autoencoder: salt-and-pepper noise on the inputs, clean targets.
SALT_PEPPER_DAE = autoencoder("salt_pepper", 0.2)
GAUSSIAN_DAE = autoencoder("gaussian", 0.3)
PLAIN_AE = autoencoder()

# Noise studies: train on the corruption the cell tests on, and put a denoiser trained on that
# corruption in front of the classifier.
TRAIN_ON_TEST_NOISE = {"train_corruption": "test_corruption", "train_noise_level": "test_noise_level"}
DENOISER_FOR_TEST_NOISE = Use(
    Upstream(AUTOENCODER, {"latent_dim": 32}, name="dae-{corruption}-{noise_level:g}",
             settings_from={"corruption": "test_corruption", "noise_level": "test_noise_level"}),
    file="autoencoder.pt", into="denoiser_checkpoint")

# Each arm is tuned on each seed (its own search on that seed's split), then its choice is
# trained on that seed: the spread over seeds includes the tuning's (docs/protocol.md).
# smoke: every study end to end in the test suite on 2 CPU cores, in minutes, and every
# number it prints still means something: 4 classifier epochs at the searches' first guess
# (lr 3e-3, batch 64) take every arm of every study above 80% on mnist-5k (3 left a frozen
# encoder with 10% of the labels at 75% on one seed), 4 autoencoder epochs reach ~19-21 dB;
# 1 trial per tuning: nothing to compare, so there is no search and no tune phase (study.tuning),
# and each seed trains its arm once at its first guess, given in full (the tuning machinery is
# tested on the user studies of the test suite and runs at laptop); 1 pretraining trial per
# tuning likewise (its first guess, weight decay drawn by the seeded sampler), 2 paired seeds:
# n=2 gives estimates, never verdicts.
SMOKE = Budget(dataset="mnist-5k", epochs=4, trials_per_tuning=1, seeds=(0, 1),
               upstream_epochs=4, upstream_trials=1, upstream_patience=2, grace_period=1)
# laptop: the budget that answers a study's question on one CPU machine (<= 20 min per study
# on 2 cores, 30 for the two with autoencoders; see --dry-run): 5 paired seeds, each arm tuned
# on each of them with 4 trials (the hand-picked guess and 3 random: TPE's random start is 5),
# 10 epochs to convergence. Autoencoders: at most 20 epochs, stopped after 2 without a better
# val/loss (seed 003's autoencoder, lr 3e-3, batch 32: val PSNR 21.6 dB at epoch 5, 22.6 at 10,
# 23.0 at 15, then within +-0.2 dB up to 30: `python -m trainables.autoencoder --epochs 30
# --patience 100 --lr 3e-3 --batch-size 32 --channels-last`); their tuning gives every trial 10
# epochs, so that two of four run to their end and compare.
LAPTOP = Budget(dataset="mnist-5k", epochs=10, trials_per_tuning=4, seeds=(0, 1, 2, 3, 4),
                upstream_epochs=20, upstream_trials=4, upstream_patience=2, upstream_grace_period=10,
                grace_period=2, startup_trials=5)
# full: real MNIST on a GPU cluster, 8 trials per tuning (TPE models the last 3), 5 paired seeds.
FULL = Budget(dataset="mnist", epochs=15, trials_per_tuning=8, seeds=(0, 1, 2, 3, 4),
              upstream_epochs=20, upstream_trials=12, upstream_patience=3, grace_period=2, startup_trials=5)
BUDGETS = {"smoke": SMOKE, "laptop": LAPTOP, "full": FULL}
