"""Does bf16 on a CPU change the answers? fp32 vs bf16 autocast (channels_last on in both) for
seed 002's CNN and seed 003's encoder classifier (issue 21: bf16 becomes the CPU default only
where it is shown equivalent)."""
from search_spaces.classifier import CLASSIFIER as CLASSIFIER_SPACE
from builtin_studies.mnist import BUDGETS, CLASSIFIER, MNIST
from study.api import Factor, Level, Study, difference

# seed 002's CNN as ablation_dropout runs it (augmented, dropout 0.5 as seed 002 had it);
# seed 003's encoder + head from scratch, fine-tuned, as ablation_pretraining's baseline
CNN = {"model": "cnn", "augment": True, "dropout": 0.5}
ENCODER = {"model": "encoder_head", "latent_dim": 32, "head_hidden": 16, "head_layers": 2}

STUDY = Study(
    name="precision",
    description="Does bf16 autocast on a CPU change the answers? fp32 vs bf16 for seed 002's CNN and seed 003's "
                "encoder classifier",
    question="Our CPU fast path (bf16 autocast, channels_last) trains 1.3-1.4x faster: is what it trains "
             "equivalent to fp32 within the 0.5 pp we care about, for both of our classifiers?",
    factors=(
        Factor("precision", (Level("fp32", {"precision": "fp32"}), Level("bf16", {"precision": "bf16"})),
               reason="bf16 autocast rounds every convolution and matmul input to 8 mantissa bits"),
        Factor("model", (Level("cnn", CNN), Level("encoder", ENCODER)),
               reason="seed 002's CNN and seed 003's encoder + head: the two classifiers of our studies"),
    ),
    baseline={"precision": "fp32", "model": "cnn"},
    design="factorial",
    contrasts=tuple(difference(f"bf16 vs fp32, {model}", {"precision": "bf16", "model": model},
                               {"precision": "fp32", "model": model}) for model in ("cnn", "encoder")),
    search_space=CLASSIFIER_SPACE,
    trainable=CLASSIFIER,
    data=MNIST,
    fixed={"task": "digits", "optimizer": "adam", "channels_last": True},
    budgets=BUDGETS,
)
