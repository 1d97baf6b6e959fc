"""Does autoencoder pretraining help? Plain vs denoising AE x frozen vs fine-tuned x 10% vs 100%
labels (seeds 000/001/003)."""
from search_spaces.classifier import CLASSIFIER as CLASSIFIER_SPACE
from builtin_studies.mnist import BUDGETS, CLASSIFIER, MNIST, PLAIN_AE, SALT_PEPPER_DAE, encoder_of
from study.api import Contrast, Factor, InvalidCell, Level, Metric, Study, difference

STUDY = Study(
    name="ablation_pretraining",
    description="Does autoencoder pretraining help? plain vs denoising AE x frozen vs fine-tuned x 10% vs 100% labels",
    question="Seeds 000/001/003: pretraining helped by hand (96.2% vs 94.5%; 91% with 10% of the labels) "
             "but with one lr, one run and no error bars. Which part helps, and when? Does a frozen "
             "pretrained encoder with 10% of the labels do as well as with all of them (seed 003)?",
    factors=(
        Factor("pretraining", (
            Level("none"),
            Level("ae", uses=(encoder_of(PLAIN_AE),)),
            Level("dae", uses=(encoder_of(SALT_PEPPER_DAE),)),
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
        # the average above hides the label fraction (frozen is far worse with all labels, about even with
        # 10%): each label fraction on its own
        *(Contrast(f"frozen vs fine-tuned encoder at {labels} labels, given pretraining (AE and DAE averaged)",
                   tuple(({"pretraining": p, "encoder": mode, "labels": labels}, w)
                         for p in ("ae", "dae") for mode, w in (("frozen", 0.5), ("finetuned", -0.5))))
          for labels in ("10%", "100%")),
        # seed 003: the denoising autoencoder's frozen encoder (970 trainable parameters of 120,170) trained
        # on 10% of the labels against the full training set, "without losing accuracy"
        difference("seed 003: frozen DAE encoder, 10% vs 100% labels",
                   {"pretraining": "dae", "encoder": "frozen", "labels": "10%"},
                   {"pretraining": "dae", "encoder": "frozen", "labels": "100%"}),
        Contrast("pretraining x labels: gain of pretraining (AE and DAE averaged, fine-tuned) at 10% "
                 "minus its gain at 100% labels",
                 (({"pretraining": "ae", "encoder": "finetuned", "labels": "10%"}, 0.5),
                  ({"pretraining": "dae", "encoder": "finetuned", "labels": "10%"}, 0.5),
                  ({"pretraining": "none", "encoder": "finetuned", "labels": "10%"}, -1.0),
                  ({"pretraining": "ae", "encoder": "finetuned", "labels": "100%"}, -0.5),
                  ({"pretraining": "dae", "encoder": "finetuned", "labels": "100%"}, -0.5),
                  ({"pretraining": "none", "encoder": "finetuned", "labels": "100%"}, 1.0))),
        # seed 001, Q2: the pretrained network trained "early", 128 s against 222 s
        difference("epochs to 99% of the final validation accuracy: AE pretraining vs none, fine-tuned, 100% labels",
                   {"pretraining": "ae", "encoder": "finetuned", "labels": "100%"},
                   {"pretraining": "none", "encoder": "finetuned", "labels": "100%"}, metric="time_to/epoch_99"),
    ),
    # an epoch is the resolution of time_to (validation runs once per epoch): a tenth of laptop's 10
    metrics=(Metric("time_to/epoch_99", margin=1.0, mode="min"),),
    search_space=CLASSIFIER_SPACE,
    trainable=CLASSIFIER,
    data=MNIST,
    fixed={"model": "encoder_head", "task": "digits", "optimizer": "adam", "latent_dim": 32,
           "head_hidden": 16, "head_layers": 2},
    budgets=BUDGETS,
)
