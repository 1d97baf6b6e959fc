"""CPU fast paths (issue 21): channels_last and bf16 autocast, old path against new, per trainable.

Claim under test (issue 21): on a CPU with native bf16 (AVX512_BF16 or AMX), a trial's own
training rate, with the old path (fp32, NCHW: the trainables before issue 21) as the baseline
measured in the same process, rises >= 1.3x for seed 002's CNN, >= 1.2x for seed 003's encoder +
head classifier and >= 1.4x for the autoencoder.

Variants, as the trainables' config keys:

  old       precision "fp32", channels_last false   the path before issue 21 (the baseline)
  default   precision "fp32", channels_last true    the new default
  bf16+cl   precision "bf16", channels_last true    selectable; what "auto" picks on this CPU

Measured per trainable (classifier with SmallCNN, classifier with encoder + head, autoencoder)
and variant:

  step   the bare train step: the trainables' model, Adam and device-resident images gathered
         by index, forward under the variant's autocast (trainables.common.Backend), the loss
         in fp32, backward, update; images/s over --step-images images after 3 warm-up steps.
  trial  the trainable itself, standalone (no Ray), --epochs epochs on mnist-5k (3,600
         training images): its own `cost/images_per_second` (the training loop only) and its
         wall seconds (set-up, validation, checkpoints and the test evaluation included).

Plus the bare forward pass of a frozen autoencoder in front of a classifier ("denoiser", no
gradients; study/plan.py budgets it). Rounds are interleaved (every measure once per round,
the variants' order rotated each round) and each figure is the median of the rounds.

    python -m benchmarks.precision                  # all three trainables, 5 rounds
    python -m benchmarks.precision --busy           # the other core runs a CNN trial meanwhile
    python -m benchmarks.precision --compile --rounds 0   # torch.compile only (3 rounds)

`--busy` is what study/plan.py's CPU figures assume: one trial per core with the other core
busy too. `--compile` measures what torch.compile would cost and give a trial: the first step
(tracing and code generation, in a fresh Inductor cache), the recompilation for the epoch's
trailing smaller batch, and the steady compiled step against eager, then the images a trial
needs to train to earn its compile time back, against a `laptop` trial (the MNIST studies'
LAPTOP budget: 10 classifier epochs or 8 autoencoder epochs of 3,600 images). The last lines are the
in-trial ratios against the targets.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import load_average, machine_line, median, runs_text, verdict
from trainables.common import Backend, cpu_has_native_bf16, epoch_batches, make_optimizer, select_backend
from trainables.config import resolve_classifier_config
from trainables.models import Autoencoder, ConvEncoder, EncoderClassifier, MLPHead, SmallCNN
from trainables.seeds import stream

# ============================================================================== settings
BATCH = 64            # the issue's batch; the searches' first guess for the CNN and the AE is 32-64
LR = 3e-3             # the searches' first guess (the MNIST studies' SMOKE budget)
WARMUP_STEPS = 3      # untimed, per measure: oneDNN primitive creation, first allocations


@dataclass(frozen=True)
class Variant:
    precision: str
    channels_last: bool


VARIANTS = {
    "old": Variant("fp32", False),        # the trainables before issue 21: the baseline
    "default": Variant("fp32", True),     # the new default
    "bf16+cl": Variant("bf16", True),     # selectable: precision "bf16" (or "auto" on native-bf16 CPUs)
}
BASELINE = "old"


@dataclass(frozen=True)
class Trainable:
    label: str
    target: float          # in-trial training rate against the old path (issue 21)
    build: Callable[[], nn.Module]
    config: dict           # the trainable's config besides precision and channels_last


TRAINABLES = {
    "cnn": Trainable("classifier, SmallCNN (seed 002)", 1.3, lambda: SmallCNN(10),
                     {"model": "cnn"}),
    "encoder_head": Trainable("classifier, encoder + head (seed 003)", 1.2,
                              lambda: EncoderClassifier(ConvEncoder(32), MLPHead(32, 10)),
                              {"model": "encoder_head"}),
    "autoencoder": Trainable("autoencoder (seed 003)", 1.4, lambda: Autoencoder(32), {}),
}


def backend_of(variant: Variant) -> Backend:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")       # "bf16 is emulated" where the CPU has no bf16
        return select_backend({"device": "cpu", "precision": variant.precision,
                               "channels_last": variant.channels_last})


# ============================================================================== the bare step
def step_rate(kind: str, variant: Variant, images: torch.Tensor, labels: torch.Tensor, n_images: int,
              compiled: bool = False) -> float:
    """images/s of the bare train step (forward, fp32 loss, backward, Adam) over n_images."""
    backend = backend_of(variant)
    torch.manual_seed(0)
    model = backend.prepare_model(TRAINABLES[kind].build())
    model.train()
    optimizer = make_optimizer(resolve_classifier_config({"lr": LR}), model.parameters())
    forward = torch.compile(model) if compiled else model
    order = stream(0, "order")

    def step(index: torch.Tensor) -> None:
        x = images[index]
        with backend.autocast():
            out = forward(backend.prepare_input(x))
        loss = F.mse_loss(out.float(), x) if kind == "autoencoder" else F.cross_entropy(out.float(), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    batches = _full_batches(order, len(images), n_images + WARMUP_STEPS * BATCH)
    for index in batches[:WARMUP_STEPS]:
        step(index)
    started = time.perf_counter()
    for index in batches[WARMUP_STEPS:]:
        step(index)
    return (len(batches) - WARMUP_STEPS) * BATCH / (time.perf_counter() - started)


def denoiser_rate(variant: Variant, images: torch.Tensor, n_images: int) -> float:
    """images/s of a frozen autoencoder's forward pass, as DenoisedClassifier runs it in training."""
    backend = backend_of(variant)
    torch.manual_seed(0)
    model = backend.prepare_model(Autoencoder(32)).requires_grad_(False).eval()
    batches = _full_batches(stream(0, "order"), len(images), n_images + WARMUP_STEPS * BATCH)

    def forward(index: torch.Tensor) -> None:
        with torch.no_grad(), backend.autocast():
            model(backend.prepare_input(images[index]))

    for index in batches[:WARMUP_STEPS]:
        forward(index)
    started = time.perf_counter()
    for index in batches[WARMUP_STEPS:]:
        forward(index)
    return (len(batches) - WARMUP_STEPS) * BATCH / (time.perf_counter() - started)


def _full_batches(order: torch.Generator, n: int, examples: int) -> list[torch.Tensor]:
    return [b for b in epoch_batches(n, BATCH, order, torch.device("cpu"), examples) if b.numel() == BATCH]


# ============================================================================== the trial
def trial_rate(kind: str, variant: Variant, dataset, epochs: int) -> tuple[float, float]:
    """(the trainable's own cost/images_per_second, its wall seconds) for one standalone run."""
    from trainables.autoencoder import train_autoencoder
    from trainables.classifier import train_classifier

    train = train_autoencoder if kind == "autoencoder" else train_classifier
    config = {**TRAINABLES[kind].config, "dataset": dataset.name, "device": "cpu", "epochs": epochs,
              "batch_size": BATCH, "lr": LR, "seed": 0, "precision": variant.precision,
              "channels_last": variant.channels_last}
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = train(config, lambda metrics, checkpoint_dir: None, dataset=dataset)
    wall = time.perf_counter() - started
    assert result["precision"] == variant.precision, result["precision"]
    return result["cost/images_per_second"], wall


# ============================================================================== the other core
def _keep_busy() -> None:
    """The other core's load under --busy: CNN trials, one after the other, one thread."""
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    from trainables.classifier import train_classifier
    from trainables.data import load_dataset

    dataset = load_dataset("mnist-5k")
    while True:
        train_classifier({"model": "cnn", "epochs": 50, "batch_size": BATCH, "evaluate_test": False},
                         lambda metrics, checkpoint_dir: None, dataset=dataset)


# ============================================================================== torch.compile
def compile_costs(kind: str, variant: Variant, images: torch.Tensor, labels: torch.Tensor,
                  trailing: int) -> dict[str, float]:
    """Seconds of the first compiled step (batch BATCH) and of the first step of the epoch's
    trailing batch (`trailing` images: a new shape, so a recompilation), each less an eager step."""
    backend = backend_of(variant)
    torch.manual_seed(0)
    model = backend.prepare_model(TRAINABLES[kind].build())
    optimizer = make_optimizer(resolve_classifier_config({"lr": LR}), model.parameters())
    compiled = torch.compile(model)

    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        started = time.perf_counter()
        with backend.autocast():
            out = compiled(backend.prepare_input(x))
        loss = F.mse_loss(out.float(), x) if kind == "autoencoder" else F.cross_entropy(out.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return time.perf_counter() - started

    first = step(images[:BATCH], labels[:BATCH])
    again = step(images[BATCH:2 * BATCH], labels[BATCH:2 * BATCH])
    small = step(images[:trailing], labels[:trailing])
    return {"first": first - again, "trailing": small - again * trailing / BATCH}


# Epochs of one trial at the `laptop` budget of our MNIST studies (the LAPTOP Budget next to
# them: epochs=10 for the classifier, upstream_epochs=8 for the autoencoder)
LAPTOP_EPOCHS = {"cnn": 10, "encoder_head": 10, "autoencoder": 8}


def run_compile(kinds: list[str], images, labels, step_images: int, rounds: int, train_images: int) -> None:
    # a fresh Inductor cache (unless the caller set one): the compile a trial pays on a new node
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="inductor-"))
    trailing = train_images % BATCH or BATCH
    print(f"\ntorch.compile (default mode), Inductor cache {os.environ['TORCHINDUCTOR_CACHE_DIR']}; "
          f"eager and compiled steps interleaved, {rounds} round(s), median; {load_average()}")
    print(f"{'trainable':<13}{'variant':<9}{'compile s':>10}{'recompile s':>12}{'eager img/s':>13}"
          f"{'compiled img/s':>16}{'break-even images':>19}{'laptop trial':>14}  pays?")
    for kind in kinds:
        for name in ("default", "bf16+cl"):
            variant = VARIANTS[name]
            costs = compile_costs(kind, variant, images, labels, trailing)
            values = {"eager": [], "compiled": []}
            for _ in range(rounds):
                values["eager"].append(step_rate(kind, variant, images, labels, step_images))
                values["compiled"].append(step_rate(kind, variant, images, labels, step_images, compiled=True))
            eager, compiled = median(values["eager"]), median(values["compiled"])
            cost = costs["first"] + costs["trailing"]
            saved_per_image = 1 / eager - 1 / compiled
            breakeven = cost / saved_per_image if saved_per_image > 0 else float("inf")
            budget = LAPTOP_EPOCHS[kind] * train_images
            print(f"{kind:<13}{name:<9}{costs['first']:>10.1f}{costs['trailing']:>12.1f}{eager:>13,.0f}"
                  f"{compiled:>16,.0f}{breakeven:>19,.0f}{budget:>14,}  {'yes' if breakeven <= budget else 'no'}"
                  f"   (runs eager {runs_text(values['eager'], '{:,.0f}')}; compiled "
                  f"{runs_text(values['compiled'], '{:,.0f}')})", flush=True)
    print(f"(the steady compiled step was measured on a model compiled again in this process; its "
          f"compile was found in the process's caches, as a reused Ray actor's next trial would; {load_average()})")


# ============================================================================== main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(TRAINABLES),
                        help=f"comma-separated, from {', '.join(TRAINABLES)} (default: all)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="interleaved rounds (default 5; 0: no table, and 3 rounds for --compile)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of each trial (default 3)")
    parser.add_argument("--step-images", type=int, default=40 * BATCH,
                        help=f"timed images per bare-step measure (default {40 * BATCH})")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: a study trial with cpus_per_trial=1)")
    parser.add_argument("--busy", action="store_true",
                        help="keep the other core busy with a CNN trial (study/plan.py's CPU figures)")
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile (minutes)")
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.models.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(TRAINABLES))
    if unknown:
        raise SystemExit(f"--models: unknown {', '.join(unknown)}; choices: {', '.join(TRAINABLES)}")
    torch.set_num_threads(args.threads)

    from trainables.data import load_dataset

    dataset = load_dataset("mnist-5k")
    import sklearn.metrics  # noqa: F401  (the classifier's test evaluation: imported once, before any timing)
    train_images = int(round(len(dataset.train_labels) * 0.9))   # the trainables' val_fraction 0.1
    images = dataset.train_images[:train_images].unsqueeze(1).float().div_(255.0)
    labels = dataset.train_labels[:train_images]
    print(machine_line(torch.device("cpu")))
    print(f"torch threads {torch.get_num_threads()}; CPU capability {torch.backends.cpu.get_cpu_capability()}; "
          f"native bf16 (AVX512_BF16/AMX): {cpu_has_native_bf16()}; batch {BATCH}, Adam lr {LR}; "
          f"trials: {args.epochs} epoch(s) of {train_images:,} mnist-5k images")
    busy = None
    if args.busy:
        busy = multiprocessing.get_context("spawn").Process(target=_keep_busy, daemon=True)
        busy.start()
        time.sleep(5.0)   # its imports and data: the load should be on before the first measure
        print(f"--busy: process {busy.pid} runs CNN trials on the other core meanwhile")
    try:
        if args.rounds > 0:
            run_table(kinds, dataset, images, labels, args)
        if args.compile:
            run_compile(kinds, images, labels, args.step_images, args.rounds or 3, train_images)
    finally:
        if busy is not None:
            busy.terminate()
            busy.join()


def run_table(kinds: list[str], dataset, images, labels, args) -> None:
    names = list(VARIANTS)
    # (kind, variant) -> list of values per round
    steps: dict[tuple[str, str], list[float]] = {(k, v): [] for k in kinds for v in names}
    trials: dict[tuple[str, str], list[float]] = {(k, v): [] for k in kinds for v in names}
    walls: dict[tuple[str, str], list[float]] = {(k, v): [] for k in kinds for v in names}
    denoiser: dict[str, list[float]] = {v: [] for v in names}
    loads = []
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]    # rotated: no variant always first
        for kind in kinds:
            for name in order:
                steps[kind, name].append(step_rate(kind, VARIANTS[name], images, labels, args.step_images))
            for name in order:
                rate, wall = trial_rate(kind, VARIANTS[name], dataset, args.epochs)
                trials[kind, name].append(rate)
                walls[kind, name].append(wall)
        if "autoencoder" in kinds:
            for name in order:
                denoiser[name].append(denoiser_rate(VARIANTS[name], images, args.step_images))
        loads.append(load_average().removeprefix("load average "))
        print(f"round {r + 1}/{args.rounds} done; load average {loads[-1]}", flush=True)

    # "x old": the median over rounds of the ratio to the old path in the same round (the
    # variants of a round ran seconds apart, so drifting load cancels better than in a ratio
    # of medians)
    def ratio(values: dict, kind, name: str) -> float:
        return median([a / b for a, b in zip(values[kind, name], values[kind, BASELINE])])

    print(f"\n{'trainable':<13}{'variant':<9}{'step img/s':>11}{'x old':>7}{'trial img/s':>13}{'x old':>7}"
          f"{'trial wall s':>14}   runs: step | trial")
    for kind in kinds:
        for name in names:
            print(f"{kind:<13}{name:<9}{median(steps[kind, name]):>11,.0f}{ratio(steps, kind, name):>6.2f}x"
                  f"{median(trials[kind, name]):>13,.0f}{ratio(trials, kind, name):>6.2f}x"
                  f"{median(walls[kind, name]):>14.2f}   {runs_text(steps[kind, name], '{:,.0f}')} | "
                  f"{runs_text(trials[kind, name], '{:,.0f}')}")
    if "autoencoder" in kinds:
        by_round = {("denoiser", name): values for name, values in denoiser.items()}
        for name in names:
            print(f"{'denoiser':<13}{name:<9}{median(denoiser[name]):>11,.0f}{ratio(by_round, 'denoiser', name):>6.2f}x"
                  f"   (forward only, no gradients; runs {runs_text(denoiser[name], '{:,.0f}')})")
    print(f"load average after each round (1, 5, 15 min): {'; '.join(loads)}")
    print("\nin-trial training rate against the old path (fp32, NCHW), same process (median of per-round ratios):")
    for kind in kinds:
        spec = TRAINABLES[kind]
        ratios = {name: ratio(trials, kind, name) for name in names if name != BASELINE}
        parts = ", ".join(f"{name} {ratio:.2f}x ({verdict(ratio >= spec.target)})" for name, ratio in ratios.items())
        print(f"  {spec.label}: target >= {spec.target}x: {parts}")


if __name__ == "__main__":
    main()
