"""Seed 004's CNN sweep: kernel size and stride as arms; dropout, lr and batch size tuned per arm."""
from search_spaces.classifier import CNN_SWEEP
from builtin_studies.mnist import BUDGETS, CLASSIFIER, MNIST
from study.api import Factor, Level, Study, difference

STUDY = Study(
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
    trainable=CLASSIFIER,
    data=MNIST,
    # bf16 autocast where the node has native bf16: equivalent to fp32 for seed 002's CNN within
    # ±0.5 pp (builtin_studies/precision.py; docs/results/precision)
    fixed={"model": "cnn", "task": "digits", "optimizer": "adam", "precision": "auto"},
    budgets=BUDGETS,
)
