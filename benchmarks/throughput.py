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
    python -m benchmarks.throughput --device cuda --images 19200 --dataset auto
    python -m benchmarks.throughput --device cuda --images 19200 --dataset auto --bf16 --channels-last

--bf16 (autocast) and --channels-last apply to both paths alike, exactly as the trainables
apply them (trainables.common.select_backend: also cudnn.benchmark on CUDA), so the comparison
stays fair: only the data path differs. Without them both paths run fp32 in NCHW, the
trainables' path before issue 21 (benchmarks/precision.py measures those levers themselves).
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

from benchmarks.common import DATA_CHOICES, DATA_HELP, benchmark_dataset, load_average
from trainables.common import Backend, LossMeter, epoch_batches, make_optimizer, select_backend
from trainables.config import resolve_classifier_config
from trainables.models import ConvEncoder, EncoderClassifier, MLPHead, SmallCNN
from trainables.seeds import stream
from trainables.transforms import augment_batch

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


def run_baseline(images, labels, model_kind, backend: Backend, num_workers, n_images) -> float:
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
    device = backend.device
    model = backend.prepare_model(build_model(model_kind, normalize_inside=False))
    optimizer = make_optimizer(OPTIMIZER, model.parameters())
    model.train()

    def step(x, y) -> float:
        x, y = backend.prepare_input(x.to(device)), y.to(device)
        with backend.autocast():
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
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


def run_ours(images, labels, model_kind, backend: Backend, n_images, augmented: bool = True) -> float:
    device = backend.device
    x_all = images[:n_images].to(device).unsqueeze(1).float().div_(255.0)  # once, on the device
    y_all = labels[:n_images].to(device)
    model = backend.prepare_model(build_model(model_kind, normalize_inside=True))
    optimizer = make_optimizer(OPTIMIZER, model.parameters())
    order, augment = stream(0, "order"), stream(0, "augment", device)
    model.train()

    def epoch(batches) -> int:
        meter = LossMeter(device)
        for index in batches:
            x = augment_batch(x_all[index], augment) if augmented else x_all[index]
            with backend.autocast():
                logits = model(backend.prepare_input(x))
            loss = F.cross_entropy(logits.float(), y_all[index])
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
    parser.add_argument("--dataset", default="mnist-5k", choices=DATA_CHOICES,
                        help=f"where the images come from (default mnist-5k). {DATA_HELP}")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads for both paths (default 1: what a study trial with "
                             "cpus_per_trial=1 gets; more threads than free cores slows both down)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed runs per path, interleaved; the median is reported (default 3)")
    parser.add_argument("--bf16", action="store_true",
                        help="bf16 autocast in both paths (the trainables' precision='bf16')")
    parser.add_argument("--channels-last", action="store_true",
                        help="channels_last model and inputs in both paths")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: CUDA is not available on this machine")
    # the trainables' own device logic (precision resolved on this node, cudnn.benchmark)
    backend = select_backend({"device": args.device, "precision": "bf16" if args.bf16 else "fp32",
                              "channels_last": args.channels_last})
    device = backend.device

    dataset, data_line = benchmark_dataset(args.dataset)
    n = min(args.images, len(dataset.train_labels))
    if n < (WARMUP_BATCHES + 1) * BATCH:
        raise SystemExit(f"--images {args.images}: need at least {(WARMUP_BATCHES + 1) * BATCH} "
                         f"({WARMUP_BATCHES} untimed warm-up batches of {BATCH}, then timed ones)")
    images, labels = dataset.train_images, dataset.train_labels
    name = {"cnn": "seed 002's CNN", "encoder_head": "seed 003's encoder + head"}[args.model]
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    print(f"{platform.machine()}, {os.cpu_count()} cores, {load_average()}, {torch.get_num_threads()} torch "
          f"thread(s), device {device}{gpu}, torch {torch.__version__}, bf16={backend.bf16}, "
          f"channels_last={backend.channels_last}")
    print(f"data: {data_line}")
    print(f"model {args.model} ({name}), batch {BATCH}, {n} images per path, Adam, "
          f"seed 002's augmentations; baseline DataLoader num_workers={args.num_workers}")
    # interleaved (baseline, ours, baseline, ours, ...) so drifting load on a shared machine
    # hits both paths alike; each figure is the median of its runs
    baselines, ours = [], []
    for _ in range(args.repeats):
        baselines.append(run_baseline(images, labels, args.model, backend, args.num_workers, n))
        ours.append(run_ours(images, labels, args.model, backend, n))
    # The model's own forward/backward/update, with no augmentation at all: no data path can
    # beat it, so it bounds the speed-up at (baseline's per-image cost) / (this per-image cost).
    ceiling = statistics.median(run_ours(images, labels, args.model, backend, n, augmented=False)
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
