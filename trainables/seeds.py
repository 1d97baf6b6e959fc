"""Named random streams derived from one trial seed.

Every source of randomness in a trial draws from its own stream, so that changing one factor
of a study (say, the corruption level) does not shift the random numbers another part sees
(say, the validation split or the label subset). Two arms run with the same seed therefore
see bit-identical splits, label subsets and noise: the comparison between them is paired.

    split       which training images are held out for validation
    labels      which training labels are kept under a label fraction < 1
    init        model initialisation (and, after it, the global RNG used by dropout)
    order       the order of training examples in each epoch
    noise       training-time input corruption (a fresh draw every batch)
    augment     training-time augmentation (a fresh draw every batch)
    val_noise   the fixed corruption of the validation inputs (each arm's training corruption)
    test_noise  the fixed corruption of the test inputs
    label_noise which training and validation labels are flipped, and to which wrong class
                (label_noise > 0); drawn per image of the dataset, so it does not depend on the
                arm, the split's order or the rate (the flips of 20% are part of those of 40%)
"""

from __future__ import annotations

import hashlib

import torch

STREAM_NAMES: tuple[str, ...] = (
    "split",
    "labels",
    "init",
    "order",
    "noise",
    "augment",
    "val_noise",
    "test_noise",
    "label_noise",
)


def sub_seed(seed: int, name: str) -> int:
    """A 63-bit seed for stream `name` of trial seed `seed`.

    A cryptographic hash (rather than `seed + k`) keeps streams of neighbouring seeds
    unrelated: seed 1's `noise` stream is not seed 0's `order` stream shifted by one.
    """
    if name not in STREAM_NAMES:
        raise ValueError(f"unknown seed stream {name!r}; valid names: {', '.join(STREAM_NAMES)}")
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    digest = hashlib.blake2b(f"{int(seed)}/{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def stream(seed: int, name: str, device: str | torch.device = "cpu") -> torch.Generator:
    """A fresh `torch.Generator` for stream `name` of trial seed `seed`.

    Generators on CPU give the same numbers on every machine; a CUDA generator (for noise drawn
    batch by batch on the GPU) is deterministic too, but its numbers differ from the CPU ones.
    """
    generator = torch.Generator(device=torch.device(device))
    generator.manual_seed(sub_seed(seed, name))
    return generator
