"""Training throughput: seed 002's DataLoader + PIL pipeline vs. our device-resident path.

Both paths train the same freshly initialised model (same seed) with Adam, batch 96 and seed
002's augmentations on the same number of images, in one process, one after the other:

  baseline  a torchvision Dataset over the same uint8 images that hands out PIL images (as
            torchvision's MNIST does), transforms RandomAffine(10, (0.1, 0.1), (0.9, 1.1)),
            ColorJitter(0.2, 0.2), ToTensor, Normalize(0.5, 0.5), a shuffling DataLoader with
            num_workers=0 (PyTorch's default: seed 002's notebook sets none), and the usual
            loop with `loss.item()` per step.
  ours      the trainables' path: images on the device as float once, batches by index,
            augmentation for the whole batch in one grid_sample call, no per-step sync.

    python -m benchmarks.throughput                       # CNN of seed 002, 3,840 images
    python -m benchmarks.throughput --model encoder_head  # seed 003's encoder + head
    python -m benchmarks.throughput --device cuda --images 19200

The last line printed is the speed-up (ours / baseline).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from trainables.common import LossMeter, epoch_batches, make_optimizer
from trainables.config import resolve_classifier_config
from trainables.data import augment_batch, load_dataset
from trainables.models import ConvEncoder, EncoderClassifier, MLPHead, SmallCNN
from trainables.seeds import stream

BATCH = 96  # seed 002
WARMUP_BATCHES = 3  # untimed, per path: first-call allocations and thread-pool start-up
OPTIMIZER = resolve_classifier_config({"optimizer": "adam", "lr": 1e-3})  # both paths: the trainables' Adam


def build_model(kind: str, normalize_inside: bool) -> nn.Module:
    torch.manual_seed(0)
    if kind == "cnn":
        # seed 002's dropout 0.5; the baseline normalises in its transforms instead
        return SmallCNN(10, dropout=0.5, normalize=(0.5, 0.5) if normalize_inside else None)
    return EncoderClassifier(ConvEncoder(32), MLPHead(32, 10))


class PILDigits(torch.utils.data.Dataset):
    """uint8 images handed out as PIL images, as torchvision.datasets.MNIST.__getitem__ does."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        from PIL import Image

        image = Image.fromarray(self.images[index].numpy(), mode="L")
        return self.transform(image), int(self.labels[index])


def run_baseline(images, labels, model_kind, device, num_workers, n_images) -> float:
    from torchvision import transforms

    transform = transforms.Compose([
        transforms.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1)),
        transforms.ColorJitter(brightness=0.2, contrast=0.2),
        transforms.ToTensor(),
        transforms.Normalize((0.5,), (0.5,)),
    ])
    dataset = PILDigits(images[:n_images], labels[:n_images], transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=num_workers,
                                         generator=torch.Generator().manual_seed(0))
    model = build_model(model_kind, normalize_inside=False).to(device)
    optimizer = make_optimizer(OPTIMIZER, model.parameters())
    model.train()

    def step(x, y) -> float:
        x, y = x.to(device), y.to(device)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    warm = iter(loader)
    for _ in range(WARMUP_BATCHES):
        step(*next(warm))
    del warm
    _sync(device)
    started = time.perf_counter()
    seen, running = 0, 0.0
    for x, y in loader:
        running += step(x, y)
        seen += len(y)
    _sync(device)
    return seen / (time.perf_counter() - started)


def run_ours(images, labels, model_kind, device, n_images, augmented: bool = True) -> float:
    x_all = images[:n_images].to(device).unsqueeze(1).float().div_(255.0)  # once, on the device
    y_all = labels[:n_images].to(device)
    model = build_model(model_kind, normalize_inside=True).to(device)
    optimizer = make_optimizer(OPTIMIZER, model.parameters())
    order, augment = stream(0, "order"), stream(0, "augment", device)
    model.train()

    def epoch(batches) -> int:
        meter = LossMeter(device)
        for index in batches:
            x = augment_batch(x_all[index], augment) if augmented else x_all[index]
            loss = F.cross_entropy(model(x), y_all[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            meter.add(loss, index.numel())
        meter.mean()  # the one sync per epoch
        return meter.count

    epoch(epoch_batches(n_images, BATCH, order, device)[:WARMUP_BATCHES])
    _sync(device)
    started = time.perf_counter()
    seen = epoch(epoch_batches(n_images, BATCH, order, device))
    _sync(device)
    return seen / (time.perf_counter() - started)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("cnn", "encoder_head"), default="cnn",
                        help="cnn = seed 002's CNN (default); encoder_head = seed 003's encoder + head")
    parser.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda, cuda:N")
    parser.add_argument("--images", type=int, default=40 * BATCH, help="images per path (default 3840)")
    parser.add_argument("--num-workers", type=int, default=0,
                        help="baseline DataLoader workers (default 0, as seed 002 used)")
    parser.add_argument("--dataset", default="mnist-5k", help="dataset to take the images from")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads for both paths (default 1: what a study trial with "
                             "cpus_per_trial=1 gets; more threads than free cores slows both down)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed runs per path, interleaved; the median is reported (default 3)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)

    dataset = load_dataset(args.dataset)
    n = min(args.images, len(dataset.train_labels))
    images, labels = dataset.train_images, dataset.train_labels
    name = {"cnn": "seed 002's CNN", "encoder_head": "seed 003's encoder + head"}[args.model]
    print(f"{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch thread(s), "
          f"device {device}, torch {torch.__version__}")
    print(f"model {args.model} ({name}), batch {BATCH}, {n} images per path, Adam, "
          f"seed 002's augmentations; baseline DataLoader num_workers={args.num_workers}")
    # interleaved (baseline, ours, baseline, ours, ...) so drifting load on a shared machine
    # hits both paths alike; each figure is the median of its runs
    baselines, ours = [], []
    for _ in range(args.repeats):
        baselines.append(run_baseline(images, labels, args.model, device, args.num_workers, n))
        ours.append(run_ours(images, labels, args.model, device, n))
    # The model's own forward/backward/update, with no augmentation at all: no data path can
    # beat it, so it bounds the speed-up at (baseline's per-image cost) / (this per-image cost).
    ceiling = statistics.median(run_ours(images, labels, args.model, device, n, augmented=False)
                                for _ in range(args.repeats))
    baseline, fast = statistics.median(baselines), statistics.median(ours)
    print(f"baseline  DataLoader + PIL transforms : {baseline:9,.0f} images/s  "
          f"(runs: {', '.join(f'{v:,.0f}' for v in baselines)})")
    print(f"ours      device-resident, batched aug: {fast:9,.0f} images/s  "
          f"(runs: {', '.join(f'{v:,.0f}' for v in ours)})")
    print(f"model step alone, no augmentation     : {ceiling:9,.0f} images/s  "
          f"(the ceiling: at most {ceiling / baseline:.1f}x over the baseline here)")
    print(f"speed-up: {fast / baseline:.1f}x")


if __name__ == "__main__":
    main()
