"""Why every arm is tuned on every seed (docs/protocol.md, "Tuning inside the replication"):
the interval of a contrast covers the true effect only when each seed carries its own tuning.

Simulated studies (synthetic scores, seeded, seconds): two arms, 5 paired seeds. One tuning
draw moves an arm's accuracy by t ~ N(0, sd_tuning) (the chosen configuration is a little better
or worse than the arm's typical choice); each seed adds paired noise (split, initialisation,
order). The true effect is the difference of the arms' means over tuning draws and seeds.

* tuned once per arm (the protocol before): every seed of an arm shares one tuning draw, which
  the seed-level interval cannot see;
* tuned on every seed (now): each seed's contrast carries its own tuning draws, so the seeds
  are independent draws of the whole procedure, tuning included.

Both are analysed by the report's interval (``study.inference.hierarchical_estimate``).
"""
from __future__ import annotations

import numpy as np

from study.inference import hierarchical_estimate

STUDIES = 1000
SEEDS = 5
EFFECT = 0.004          # true difference of the arms, 0.4 pp
SD_TUNING = 0.004       # how far one tuning draw moves an arm (pp of accuracy / 100)
SD_SEED = 0.006         # an arm's seed-to-seed spread
RHO = 0.5               # arms of a seed share its split: their seed noise correlates


def _coverage(tuned_per_seed: bool, rng: np.random.Generator) -> float:
    covered = 0
    cov = SD_SEED ** 2 * np.array([[1, RHO], [RHO, 1]])
    for _ in range(STUDIES):
        shape = (SEEDS, 2) if tuned_per_seed else (1, 2)
        tuning = rng.normal(0.0, SD_TUNING, size=shape)             # (seeds or 1, arms)
        noise = rng.multivariate_normal([0.0, 0.0], cov, size=SEEDS)  # (seeds, arms)
        scores = np.array([EFFECT, 0.0]) + tuning + noise
        estimate = hierarchical_estimate(scores[:, 0] - scores[:, 1], n_boot=400)
        covered += estimate.low <= EFFECT <= estimate.high
    return covered / STUDIES


def test_the_interval_covers_the_truth_only_with_a_tuning_per_seed():
    rng = np.random.default_rng(20)
    per_seed = _coverage(True, rng)
    once = _coverage(False, rng)
    print(f"coverage of the 95% interval over {STUDIES} simulated studies: a tuning per seed {per_seed:.1%}, "
          f"one tuning per arm {once:.1%}")
    assert per_seed >= 0.93
    assert once < 0.80          # the tuning draw the old protocol left out of every interval
