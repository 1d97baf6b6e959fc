"""Even vs odd digits: was seed 000's pretrained encoder needed?"""
from search_spaces.classifier import CLASSIFIER as CLASSIFIER_SPACE
from builtin_studies.mnist import BUDGETS, CLASSIFIER, MNIST, PLAIN_AE, encoder_of
from study.api import Factor, Level, Study, difference

STUDY = Study(
    name="even_odd",
    description="Even vs odd digits (binary): scratch vs pretrained-frozen vs pretrained-fine-tuned encoder",
    question="Seed 000 reached ~98% on even/odd with a frozen pretrained encoder; was the pretraining needed?",
    factors=(
        Factor("encoder", (
            Level("scratch", {"encoder_mode": "finetuned"}),
            Level("pretrained-frozen", {"encoder_mode": "frozen"}, uses=(encoder_of(PLAIN_AE),)),
            Level("pretrained-finetuned", {"encoder_mode": "finetuned"}, uses=(encoder_of(PLAIN_AE),)),
        ), reason="how the encoder is initialised and whether it trains"),
    ),
    baseline={"encoder": "scratch"},
    design="one_at_a_time",
    contrasts=tuple(difference(f"{e} encoder vs scratch", {"encoder": e}, {"encoder": "scratch"})
                    for e in ("pretrained-frozen", "pretrained-finetuned")),
    search_space=CLASSIFIER_SPACE,
    trainable=CLASSIFIER,
    data=MNIST,
    fixed={"model": "encoder_head", "task": "even_odd", "optimizer": "adam"},
    budgets=BUDGETS,
)
