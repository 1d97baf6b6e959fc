"""Noisy labels: does autoencoder pretraining help or hurt when labels are wrong, and does it
still train faster? (seed 001, Q3)"""
from search_spaces.classifier import CLASSIFIER as CLASSIFIER_SPACE
from builtin_studies.mnist import BUDGETS, CLASSIFIER, MNIST, PLAIN_AE, encoder_of
from study.api import DegradedCell, Factor, Level, Metric, Study, difference, interaction

# Symmetric label noise on the training and validation labels, the test labels clean
# (trainables.splits.flip_labels): a flipped label is uniform over the 9 other digits, so the
# rate is the share of wrong labels. 0.9 would leave no signal (every digit equally likely);
# 60% still leaves the true digit 6x as frequent as any wrong one. Seed 001's own dataset had,
# by another applicant's account of the same task, every image in another digit's folder
# (rate 1 here): trained on it, our scratch encoder scores 12% on its own (wrong) validation
# labels, about 1/9 like the write-up's "11%", and 0.7% on the clean test labels (seed 0, 4
# epochs, first guess) -- no pretraining can change that, so the study asks below 0.9.
RATES = ("0%", "20%", "40%", "60%")
NOISE = Factor("label_noise", tuple(Level(r, {"label_noise": int(r[:-1]) / 100}) for r in RATES),
               reason="share of training and validation labels replaced by another digit (test labels clean)")
PRETRAINING = Factor("pretraining", (
    Level("none"),
    Level("ae", uses=(encoder_of(PLAIN_AE),)),     # the autoencoder of ablation_pretraining, fine-tuned
), reason="initialise the encoder from the plain autoencoder (trained on the images, no labels) or at random")

TIME_TO_99 = "time_to/epoch_99"

STUDY = Study(
    name="ablation_label_noise",
    description="Noisy labels: AE-pretrained (fine-tuned) vs scratch encoder at 0 / 20 / 40 / 60% symmetric label noise",
    question="Seed 001, Q3: on a MNIST with wrong labels ('accuracy of model trained on noisy data = 11%', chance "
             "for 10 digits) its pretrained network did worse than random initialisation (75% vs 92%) and trained "
             "longer (322 s vs 241 s), where on clean MNIST it had done better and faster (Q2). Does pretraining "
             "stop helping as the share of wrong labels grows, and does it still reach its accuracy sooner? Here the "
             "pretraining is seed 003's autoencoder on the same images (seed 001's was an ImageNet ResNet34, which "
             "cannot be had here), and the noise rate is controlled: 0 to 60% of the labels, validation labels as "
             "noisy, test labels clean.",
    factors=(NOISE, PRETRAINING),
    baseline={"label_noise": "0%", "pretraining": "none"},
    design="factorial",
    # measured at smoke (4 epochs, 2 seeds): 0% 90.6% scratch / 91.9% AE, 20% 88.8 / 91.7,
    # 40% 85.8 / 88.7, 60% 66.8 / 72.2 (tests/test_studies.py's floor is 80%); 60% after 10
    # epochs (seed 0, scratch, the first guess): 77.8%
    degraded=(DegradedCell({"label_noise": "60%"},
                           "60% of the labels wrong: the true digit is 40% of a class's labels, and 4 smoke epochs "
                           "on 3,600 images leave both arms near 70%; the drop is what the study measures"),),
    metrics=(
        # validation runs once per epoch, so one epoch is the finest difference a run can show;
        # at the laptop budget it is a tenth of the training
        Metric(TIME_TO_99, margin=1.0, mode="min"),
    ),
    contrasts=(
        *(difference(f"AE pretraining vs scratch, {r} label noise", {"label_noise": r, "pretraining": "ae"},
                     {"label_noise": r, "pretraining": "none"}) for r in RATES),
        interaction("pretraining x label noise: gain of AE pretraining at 60% minus its gain at 0%",
                    {"label_noise": "60%", "pretraining": "ae"}, {"label_noise": "60%", "pretraining": "none"},
                    {"label_noise": "0%", "pretraining": "ae"}, {"label_noise": "0%", "pretraining": "none"}),
        # seed 001: on noisy labels the pretrained network took longer (322 s vs 241 s)
        difference("epochs to 99% of the final validation accuracy: AE pretraining vs scratch, 60% label noise",
                   {"label_noise": "60%", "pretraining": "ae"}, {"label_noise": "60%", "pretraining": "none"},
                   metric=TIME_TO_99),
    ),
    search_space=CLASSIFIER_SPACE,
    trainable=CLASSIFIER,
    data=MNIST,
    # ablation_pretraining's classifier (seed 003's encoder + head), fine-tuned, all labels
    fixed={"model": "encoder_head", "task": "digits", "optimizer": "adam", "latent_dim": 32,
           "head_hidden": 16, "head_layers": 2, "encoder_mode": "finetuned"},
    budgets=BUDGETS,
)
