"""GPU epoch time: seconds per 60,000-image training epoch, per model, with each speed lever.

Claim under test: seed 003's encoder + head trains one 60,000-image MNIST epoch in <= 0.3 s on
one H100 (docs: shared/notes/speed.md counts it launch-bound at 0.2-0.7 s in eager PyTorch at
batch 128). Levers, each optional and each measured against the trainables' default (eager,
fp32, batch 128) in the same process:

  batch size     128 (the trainables' default), 512, 2048
  bf16           autocast to bf16 (losses in fp32), as the trainables' `precision` = "bf16" does
  channels_last  model and inputs in channels_last, as the trainables' `channels_last` key does
  graph          the whole step (gather by index, forward, backward, Adam, loss sum) captured
                 once in a CUDA graph and replayed: one launch per step instead of ~60-90
  compile        torch.compile(model, dynamic=False) (default mode); the optimizer stays eager
  fused          Adam(fused=True) instead of the trainables' foreach Adam: a candidate change
                 to trainables.common.make_optimizer, measured here first

The training step is the trainables' own: device-resident float images gathered by a random
index per batch (trainables.common.epoch_batches), the trainables' Adam (foreach; capturable
for the graph), cross-entropy (classifier) or MSE against the input (autoencoder), the loss
summed on the device with one sync per epoch. No augmentation, no corruption (the defaults).
A "trainable" row then runs the real train_classifier / train_autoencoder for two epochs and
times the second one from report to report: training on 54,000 images plus validation on
6,000 plus the checkpoint, i.e. what a study trial pays per epoch.

    python -m benchmarks.gpu_epoch --device cuda             # every default lever, all models
    python -m benchmarks.gpu_epoch --device cuda --levers eager,bf16,bf16+cl,bf16+cl+fused,bf16+cl+graph
    python -m benchmarks.gpu_epoch --device cuda --levers bf16+cl+compile --trainable off
    python -m benchmarks.gpu_epoch --device cpu --quick      # CPU: shows the script works

(torch.compile costs tens of seconds per model and batch size: on a machine with a time limit
per command, run the compile lever on its own, as the last two commands split it.)

Times are medians of --repeats timed epochs per configuration, interleaved across all
configurations (round after round), each after one untimed warm-up epoch (cudnn autotuning,
graph capture, compilation). An epoch's time is scaled to 60,000 images; the graph variant
drops the trailing partial batch (a graph has one shape), and its images are counted as run.
The last line is the best encoder_head time against the target and the trainables' default.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import (
    DATA_CHOICES, DATA_HELP, MNIST_TRAIN, benchmark_dataset, interleaved, machine_line, median,
    resolve_device, runs_text, sync, verdict,
)
from trainables.common import Backend, LossMeter, epoch_batches, make_optimizer
from trainables.config import resolve_classifier_config
from trainables.models import Autoencoder, ConvEncoder, EncoderClassifier, MLPHead, SmallCNN
from trainables.seeds import stream

# ============================================================================== settings
MODELS = ("encoder_head", "cnn", "autoencoder")
BATCHES = (128, 512, 2048)
BASELINE_BATCH = 128          # the trainables' default batch_size
TARGET_S = 0.3                # s per 60,000-image epoch, encoder_head, one H100
OPTIMIZER = resolve_classifier_config({"optimizer": "adam", "lr": 1e-3})  # the trainables' Adam


@dataclass(frozen=True)
class Lever:
    bf16: bool
    channels_last: bool
    mode: str                 # eager | graph | compile
    fused: bool = False       # Adam(fused=True): one kernel for the whole update (CUDA)


LEVERS = {
    "eager": Lever(False, False, "eager"),              # the trainables' default
    "bf16": Lever(True, False, "eager"),
    "bf16+cl": Lever(True, True, "eager"),
    "bf16+cl+graph": Lever(True, True, "graph"),
    "bf16+cl+compile": Lever(True, True, "compile"),
    "bf16+cl+fused": Lever(True, True, "eager", fused=True),  # the trainables use foreach, not fused
    "graph": Lever(False, False, "graph"),              # not in the default set: fp32 graph
    "compile": Lever(False, False, "compile"),          # not in the default set: fp32 compile
}
DEFAULT_LEVERS = ("eager", "bf16", "bf16+cl", "bf16+cl+fused", "bf16+cl+graph", "bf16+cl+compile")


def build_model(kind: str) -> nn.Module:
    torch.manual_seed(0)
    if kind == "encoder_head":
        return EncoderClassifier(ConvEncoder(32), MLPHead(32, 10))   # seed 003, the trainables' defaults
    if kind == "cnn":
        return SmallCNN(10)                                           # seed 002, kernel 3, stride 1
    return Autoencoder(32)


# ============================================================================== one configuration
class EpochRunner:
    """One (model, batch, lever): a model, its optimizer and a timed `epoch()`."""

    def __init__(self, kind: str, batch: int, lever: Lever, x_all: torch.Tensor, y_all: torch.Tensor,
                 device: torch.device) -> None:
        self.kind, self.batch, self.lever, self.device = kind, batch, lever, device
        self.x_all, self.y_all = x_all, y_all
        cuda = device.type == "cuda"
        self.backend = Backend(device, "bf16" if lever.bf16 and cuda else "fp32", lever.channels_last and cuda)
        self.model = self.backend.prepare_model(build_model(kind))
        self.model.train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        if lever.mode == "graph":
            # same Adam, with its step counters on the device so the update can be captured
            self.optimizer = torch.optim.Adam(params, lr=OPTIMIZER["lr"], weight_decay=OPTIMIZER["weight_decay"],
                                              foreach=True, capturable=True)
        elif lever.fused and cuda:
            self.optimizer = torch.optim.Adam(params, lr=OPTIMIZER["lr"], weight_decay=OPTIMIZER["weight_decay"],
                                              fused=True)
        else:
            self.optimizer = make_optimizer(OPTIMIZER, params)
        self.forward: Callable = self.model
        if lever.mode == "compile":
            self.forward = torch.compile(self.model, dynamic=False)
        self.order = stream(0, "order")
        self.graph: torch.cuda.CUDAGraph | None = None

    def _autocast(self):
        if not self.backend.bf16:
            return contextlib.nullcontext()
        # cache off: a graph must not capture autocast's cast cache (PyTorch's CUDA graph docs)
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=self.lever.mode != "graph")

    def _loss(self, index: torch.Tensor) -> torch.Tensor:
        x = self.x_all[index]
        with self._autocast():
            out = self.forward(self.backend.prepare_input(x))
        if self.kind == "autoencoder":
            return F.mse_loss(out.float(), x)
        return F.cross_entropy(out.float(), self.y_all[index])

    def _batches(self) -> list[torch.Tensor]:
        batches = epoch_batches(self.x_all.shape[0], self.batch, self.order, self.device)
        if self.lever.mode == "graph" and batches[-1].numel() != self.batch:
            batches.pop()     # a captured graph has one shape
        return batches

    def _capture(self) -> None:
        self.static_index = torch.zeros(self.batch, dtype=torch.long, device=self.device)
        self.static_total = torch.zeros((), dtype=torch.float64, device=self.device)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):   # warm-up steps off the capture stream, as the docs ask
            for index in self._batches()[:3]:
                self.static_index.copy_(index)
                self.optimizer.zero_grad(set_to_none=True)
                self._loss(self.static_index).backward()
                self.optimizer.step()
        torch.cuda.current_stream().wait_stream(side)
        self.optimizer.zero_grad(set_to_none=True)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            loss = self._loss(self.static_index)
            loss.backward()               # grads were None: the graph writes, never accumulates
            self.optimizer.step()
            self.static_total.add_(loss.detach().double() * self.batch)

    def epoch(self) -> tuple[float, int]:
        """(seconds, images) of one training epoch, synchronised at both ends."""
        if self.lever.mode == "graph" and self.graph is None:
            self._capture()
        batches = self._batches()
        sync(self.device)
        started = time.perf_counter()
        if self.graph is not None:
            self.static_total.zero_()
            for index in batches:
                self.static_index.copy_(index)
                self.graph.replay()
            float(self.static_total.item())                        # the epoch's one sync
        else:
            meter = LossMeter(self.device)
            for index in batches:
                loss = self._loss(index)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                meter.add(loss, index.numel())
            meter.mean()                                           # the epoch's one sync
        sync(self.device)
        return time.perf_counter() - started, sum(int(b.numel()) for b in batches)

    def seconds_per_60k(self) -> float:
        seconds, images = self.epoch()
        return seconds * MNIST_TRAIN / images


# ============================================================================== the real trainable
def trainable_epoch_seconds(kind: str, dataset, device: torch.device, batch: int, bf16: bool,
                            channels_last: bool) -> float:
    """Wall seconds of the second epoch of the real trainable, report to report."""
    import warnings

    from trainables.autoencoder import train_autoencoder
    from trainables.classifier import train_classifier

    stamps: list[float] = []

    def reporter(metrics, checkpoint_dir) -> None:
        stamps.append(time.perf_counter())

    config = {"dataset": dataset.name, "device": str(device), "epochs": 2, "batch_size": batch,
              "precision": "bf16" if bf16 else "fp32", "channels_last": channels_last, "seed": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # bf16 emulated on a CPU without native bf16
        if kind == "autoencoder":
            train_autoencoder(config, reporter, dataset=dataset)
        else:
            train_classifier({**config, "model": kind, "evaluate_test": False}, reporter, dataset=dataset)
    return stamps[1] - stamps[0]


# ============================================================================== main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda, cuda:N")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    parser.add_argument("--batches", default=None, help="comma-separated batch sizes (default 128,512,2048; "
                                                          "--quick: 128)")
    parser.add_argument("--levers", default=None,
                        help=f"comma-separated, from {', '.join(LEVERS)} (default on CUDA: "
                             f"{','.join(DEFAULT_LEVERS)}; on CPU: eager; bf16/channels_last/graph need CUDA)")
    parser.add_argument("--data", default=None, choices=DATA_CHOICES,
                        help=f"default auto (--quick: mnist-5k). {DATA_HELP}")
    parser.add_argument("--data-dir", default=None, help="IDX folder for --data mnist / fashion-mnist")
    parser.add_argument("--images", type=int, default=None,
                        help="images per timed epoch (default: the whole set; --quick: 1024); times are "
                             "scaled to 60,000 images")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per configuration (median)")
    parser.add_argument("--trainable", default="auto", choices=("auto", "on", "off"),
                        help="also time the real trainables' epoch (auto: on)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (a trial's share on CPU)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny run (CPU check that the script works): mnist-5k, 1,024 images, batch 128")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True    # as trainables.common.select_backend does
    models = [m for m in args.models.split(",") if m]
    for m in models:
        if m not in MODELS:
            raise SystemExit(f"--models: unknown model {m!r}; choices: {', '.join(MODELS)}")
    batches = [int(b) for b in (args.batches or ("128" if args.quick else "128,512,2048")).split(",")]
    levers = (args.levers.split(",") if args.levers else list(DEFAULT_LEVERS if cuda else ("eager",)))
    for name in levers:
        if name not in LEVERS:
            raise SystemExit(f"--levers: unknown lever {name!r}; choices: {', '.join(LEVERS)}")
    skipped = [n for n in levers if not cuda and (LEVERS[n].bf16 or LEVERS[n].channels_last or LEVERS[n].fused
                                                   or LEVERS[n].mode == "graph")]
    levers = [n for n in levers if n not in skipped]
    data_kind = args.data or ("mnist-5k" if args.quick else "auto")
    n_images = args.images or (1024 if args.quick else None)

    dataset, data_line = benchmark_dataset(data_kind, args.data_dir)
    n = min(n_images or len(dataset.train_labels), len(dataset.train_labels))
    x_all = dataset.train_images[:n].to(device).unsqueeze(1).float().div_(255.0)   # as make_splits does
    y_all = dataset.train_labels[:n].to(device)

    print(machine_line(device))
    print(f"data: {data_line}; {n:,} images per timed epoch, times scaled to {MNIST_TRAIN:,}")
    print(f"levers: {', '.join(levers)}" + (f"  (skipped, need CUDA: {', '.join(skipped)})" if skipped else ""))
    print(f"batches: {', '.join(map(str, batches))}; {args.repeats} timed epochs each, interleaved, median; "
          f"baseline = eager fp32 batch {BASELINE_BATCH} (the trainables' defaults)")

    runners: dict[tuple[str, int, str], EpochRunner] = {}
    baseline_keys = {(m, BASELINE_BATCH, "eager") for m in models}
    keys = sorted({(m, b, lv) for m in models for b in batches for lv in levers} | baseline_keys,
                  key=lambda k: (models.index(k[0]), k[1], list(LEVERS).index(k[2])))
    for key in keys:
        started = time.perf_counter()
        runner = EpochRunner(key[0], key[1], LEVERS[key[2]], x_all, y_all, device)
        runner.epoch()                                  # warm-up: autotuning, capture, compile
        runners[key] = runner
        print(f"  warmed up {key[0]:<12} batch {key[1]:>5} {key[2]:<16} in {time.perf_counter() - started:6.1f} s",
              flush=True)
    values = interleaved({key: runner.seconds_per_60k for key, runner in runners.items()}, args.repeats)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None

    print()
    print(f"{'model':<13}{'batch':>6}  {'lever':<16}{'s/epoch':>9}{'images/s':>12}{'vs default':>11}  runs (s)")
    best: dict[str, tuple[float, tuple]] = {}
    for key in keys:
        seconds = median(values[key])
        base = median(values[(key[0], BASELINE_BATCH, "eager")])
        print(f"{key[0]:<13}{key[1]:>6}  {key[2]:<16}{seconds:>9.3f}{MNIST_TRAIN / seconds:>12,.0f}"
              f"{base / seconds:>10.1f}x  {runs_text(values[key], '{:.3f}')}")
        if key[0] not in best or seconds < best[key[0]][0]:
            best[key[0]] = (seconds, key)
    if peak is not None:
        print(f"peak GPU memory allocated (all configurations at once): {peak:,.0f} MiB")

    if args.trainable != "off":
        print()
        print("the real trainables (train_classifier / train_autoencoder), second epoch report to report: "
              f"{int(len(dataset.train_labels) * 0.9):,} training + {len(dataset.train_labels) - int(len(dataset.train_labels) * 0.9):,} "
              "validation images + checkpoint")
        settings = [(BASELINE_BATCH, False, False)] + ([(512, True, True), (2048, True, True)] if cuda else [])
        trainable_times = {(m, s): [] for m in models for s in settings}
        for _ in range(args.repeats if cuda else 1):
            for m, s in trainable_times:
                trainable_times[(m, s)].append(trainable_epoch_seconds(m, dataset, device, *s))
        for (m, (b, bf16, cl)), times in trainable_times.items():
            print(f"{m:<13}{b:>6}  {'trainable ' + ('bf16+cl' if bf16 else 'fp32'):<16}{median(times):>9.3f} s/epoch "
                  f"({len(dataset.train_labels):,}-image set)  runs: {runs_text(times, '{:.3f}')}")

    print()
    for m in models:
        seconds, key = best[m]
        base = median(values[(m, BASELINE_BATCH, "eager")])
        print(f"{m}: best {seconds:.3f} s/epoch ({key[2]}, batch {key[1]}) vs {base:.3f} s eager fp32 batch "
              f"{BASELINE_BATCH}: {base / seconds:.1f}x")
    if "encoder_head" in best:
        seconds, key = best["encoder_head"]
        base = median(values[("encoder_head", BASELINE_BATCH, "eager")])
        on_h100 = cuda and "H100" in torch.cuda.get_device_name(device)
        target = (f"target <= {TARGET_S} s on an H100: {verdict(seconds <= TARGET_S)}" if on_h100 else
                  f"target <= {TARGET_S} s applies to an H100; this is {device} ({'not an H100' if cuda else 'CPU'})")
        print(f"summary: encoder_head {seconds:.3f} s per 60,000-image epoch ({key[2]}, batch {key[1]}), "
              f"{base / seconds:.1f}x the trainables' default ({base:.3f} s); {target}")


if __name__ == "__main__":
    main()
