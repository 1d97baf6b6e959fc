"""The learning-rate schedule probe, on validation data and seeds that are no study's replicate
seeds (issue 20: no design choice on test data; docs/protocol.md, "Training length").

Seed 002's CNN with augmentation, dropout 0 / 0.25 / 0.5, lr 3e-3, batch 64, 10 epochs on
mnist-5k, constant vs cosine schedule, standalone trainables (no Ray). Each run's score is its
best validation accuracy (the epoch a replicate would keep); the test set is never evaluated.

    python -m benchmarks.schedule_probe                 # seeds 2000-2003, ~5 min on 2 cores
"""
from __future__ import annotations

import argparse
import statistics
import sys

SEEDS = (2000, 2001, 2002, 2003)     # not replicate seeds (0-4 and the sequential extension) nor the tune seed 1000


def best_val_acc(schedule: str, dropout: float, seed: int, epochs: int) -> float:
    from trainables.classifier import train_classifier
    seen: list[float] = []
    train_classifier({"model": "cnn", "augment": True, "dropout": dropout, "lr": 3e-3, "batch_size": 64,
                      "epochs": epochs, "seed": seed, "lr_schedule": schedule, "evaluate_test": False},
                     lambda metrics, checkpoint_dir: seen.append(float(metrics["val/acc"])))
    return max(seen)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    args = parser.parse_args(argv)
    scores: dict[str, list[float]] = {"constant": [], "cosine": []}
    diffs = []
    for seed in args.seeds:
        for dropout in (0.0, 0.25, 0.5):
            pair = {s: best_val_acc(s, dropout, seed, args.epochs) for s in scores}
            for s, v in pair.items():
                scores[s].append(v)
            diffs.append(pair["cosine"] - pair["constant"])
            print(f"seed {seed} dropout {dropout:g}: constant {pair['constant']:.4f}  cosine {pair['cosine']:.4f}",
                  flush=True)
    for s, v in scores.items():
        print(f"{s}: mean best validation accuracy {statistics.mean(v):.4f} over {len(v)} runs")
    print(f"cosine - constant: mean {statistics.mean(diffs) * 100:+.2f} pp, {sum(d > 0 for d in diffs)} of "
          f"{len(diffs)} paired runs higher with the cosine (validation images only)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
