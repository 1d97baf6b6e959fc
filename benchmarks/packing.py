"""Packing trials on one GPU: aggregate images/s and memory per trial at 1, 2, 4, 8 processes.

Claim under test: four trials sharing one GPU (`--gpus-per-trial 0.25`) train at >= 3x the
aggregate images/s of one trial alone. Ray's fractional GPUs are admission control only: each
trial is its own process with its own CUDA context, and without CUDA MPS the processes take
turns on the GPU, so packing can only fill the gaps between one process's kernels
(shared/notes/speed.md). This measures it instead of promising it.

Each of k processes (multiprocessing, spawn) runs the standalone trainable
`trainables.classifier.train_classifier` as a study trial would, on its own copy of the data:
one untimed warm-up epoch (CUDA context, cudnn autotuning), then all k wait at a barrier and
train --epochs epochs. Aggregate images/s = all training images / (last end - first start);
per-trial memory = the process's peak on the GPU as nvidia-smi sees it (CUDA context included),
else the device's peak used memory over its idle level divided by k, plus the allocator's own
peak (what `torch.cuda.set_per_process_memory_fraction`, which study.trial sets to 0.9 x the
trial's share, caps).

    python -m benchmarks.packing --device cuda                    # k = 1, 2, 4, 8
    python -m benchmarks.packing --device cuda --model cnn --bf16 --channels-last
    python -m benchmarks.packing --device cpu                     # smoke check: k = 1, 2

Prints the recommended --gpus-per-trial: 1/k for the k with the best aggregate throughput
whose memory fits (k x per-trial memory <= 90% of the GPU, and the allocator peak under the
cap study.trial sets for a 1/k share). The last line is aggregate(4) / aggregate(1).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import subprocess
import threading
import time

from benchmarks.common import DATA_CHOICES, DATA_HELP, interleaved, machine_line, median, runs_text, verdict

TARGET_RATIO = 3.0            # aggregate images/s at 4 trials vs 1
FIT_SHARE = 0.9               # k trials' memory must fit in this share of the GPU
ALLOCATOR_CAP = 0.9           # study.trial caps the allocator at 0.9 x the trial's GPU share


# ============================================================================== one trial process
def _trial(rank: int, opts: dict, barrier, results) -> None:
    import resource
    import warnings

    import torch

    from benchmarks.common import benchmark_dataset
    from trainables.classifier import train_classifier
    from trainables.splits import make_splits

    torch.set_num_threads(opts["threads"])
    cuda = opts["device"].startswith("cuda")
    dataset, _ = benchmark_dataset(opts["data"], opts["data_dir"])
    config = {"dataset": dataset.name, "device": opts["device"], "model": opts["model"], "seed": rank,
              "batch_size": opts["batch"], "precision": "bf16" if opts["bf16"] else "fp32",
              "channels_last": opts["channels_last"],
              "evaluate_test": False}
    n_train = make_splits(dataset, seed=rank, val_fraction=0.1).train_y.numel()
    quiet = lambda metrics, checkpoint_dir: None  # noqa: E731
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            train_classifier({**config, "epochs": 1}, quiet, dataset=dataset)       # warm-up
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            barrier.wait(timeout=900)
            started = time.perf_counter()      # CLOCK_MONOTONIC: comparable across processes
            train_classifier({**config, "epochs": opts["epochs"]}, quiet, dataset=dataset)
            if cuda:
                torch.cuda.synchronize()
            ended = time.perf_counter()
    except Exception as err:   # noqa: BLE001 - reported by the parent
        barrier.abort()
        results.put({"rank": rank, "error": f"{type(err).__name__}: {err}"})
        return
    out = {"rank": rank, "pid": os.getpid(), "start": started, "end": ended, "images": opts["epochs"] * n_train,
           "host_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if cuda:
        out.update(reserved_mib=torch.cuda.max_memory_reserved() / 2**20,
                   allocated_mib=torch.cuda.max_memory_allocated() / 2**20,
                   total_mib=torch.cuda.get_device_properties(0).total_memory / 2**20)
    results.put(out)


# ============================================================================== GPU memory from outside
class NvidiaSmiSampler:
    """Peak used memory per process and for the whole device, sampled from nvidia-smi."""

    def __init__(self, period_s: float = 0.25) -> None:
        self.available = shutil.which("nvidia-smi") is not None
        self.period_s = period_s
        self.per_pid: dict[int, float] = {}
        self.device_peak = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def device_used(self) -> float:
        out = self._query(["--query-gpu=memory.used", "--format=csv,noheader,nounits", "--id=0"])
        return float(out.split()[0]) if out else 0.0

    def _query(self, args: list[str]) -> str:
        try:
            return subprocess.run(["nvidia-smi", *args], capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.device_peak = max(self.device_peak, self.device_used())
            for line in self._query(["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"]).splitlines():
                try:
                    pid, mib = (int(float(v)) for v in line.split(","))
                except ValueError:
                    continue
                self.per_pid[pid] = max(self.per_pid.get(pid, 0.0), float(mib))
            self._stop.wait(self.period_s)

    def __enter__(self) -> "NvidiaSmiSampler":
        if self.available:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def mps_status() -> str:
    control = shutil.which("nvidia-cuda-mps-control")
    pipe_dir = os.environ.get("CUDA_MPS_PIPE_DIRECTORY", "/tmp/nvidia-mps")
    daemon = os.path.exists(os.path.join(pipe_dir, "control"))
    return (f"CUDA MPS: control binary {'found' if control else 'absent'}; CUDA_MPS_PIPE_DIRECTORY="
            f"{os.environ.get('CUDA_MPS_PIPE_DIRECTORY', '(unset)')}; daemon pipe {pipe_dir}/control "
            f"{'present: MPS looks ON' if daemon else 'absent: MPS looks OFF (processes time-slice the GPU)'}")


# ============================================================================== k processes at once
def run_packed(k: int, opts: dict) -> dict:
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(k), ctx.Queue()
    cuda = opts["device"].startswith("cuda")
    sampler = NvidiaSmiSampler() if cuda else None
    idle = sampler.device_used() if sampler and sampler.available else 0.0
    procs = [ctx.Process(target=_trial, args=(rank, opts, barrier, results)) for rank in range(k)]
    with (sampler or _Null()):
        for p in procs:
            p.start()
        rows = [results.get(timeout=1800) for _ in procs]
        for p in procs:
            p.join()
    errors = [r["error"] for r in rows if "error" in r]
    if errors:
        raise SystemExit(f"{k} processes: a trial failed: {errors[0]}")
    span = max(r["end"] for r in rows) - min(r["start"] for r in rows)
    out = {"k": k, "aggregate": sum(r["images"] for r in rows) / span,
           "per_trial": median([r["images"] / (r["end"] - r["start"]) for r in rows]),
           "host_rss_mib": max(r["host_rss_mib"] for r in rows)}
    if cuda:
        out["reserved_mib"] = max(r["reserved_mib"] for r in rows)
        out["allocated_mib"] = max(r["allocated_mib"] for r in rows)
        out["total_mib"] = rows[0]["total_mib"]
        per_pid = [sampler.per_pid[r["pid"]] for r in rows if r["pid"] in sampler.per_pid] if sampler.available else []
        if per_pid:
            out["process_mib"], out["memory_source"] = max(per_pid), "nvidia-smi per process"
        elif sampler.available and sampler.device_peak > idle:
            out["process_mib"], out["memory_source"] = (sampler.device_peak - idle) / k, "nvidia-smi device delta / k"
        else:
            out["process_mib"], out["memory_source"] = out["reserved_mib"], "allocator only (no CUDA context)"
    return out


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


# ============================================================================== main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda")
    parser.add_argument("--processes", default=None, help="comma-separated k (default on CUDA 1,2,4,8; CPU 1,2)")
    parser.add_argument("--model", default="encoder_head", choices=("encoder_head", "cnn"))
    parser.add_argument("--batch", type=int, default=128, help="trial batch size (default 128, the trainables')")
    parser.add_argument("--bf16", action="store_true", help="trainable key precision='bf16' (default fp32)")
    parser.add_argument("--channels-last", action="store_true",
                        help="trainable key channels_last=true (default here: false, NCHW)")
    parser.add_argument("--epochs", type=int, default=None, help="timed epochs per trial (default CUDA 3, CPU 1)")
    parser.add_argument("--data", default=None, choices=DATA_CHOICES,
                        help=f"default CUDA auto, CPU mnist-5k. {DATA_HELP}")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per trial (cpus_per_trial)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per k, interleaved; median (default 3)")
    args = parser.parse_args(argv)

    import torch

    from benchmarks.common import resolve_device
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    ks = [int(k) for k in (args.processes or ("1,2,4,8" if cuda else "1,2")).split(",")]
    opts = {"device": str(device), "model": args.model, "batch": args.batch, "bf16": args.bf16,
            "channels_last": args.channels_last, "epochs": args.epochs or (3 if cuda else 1),
            "data": args.data or ("auto" if cuda else "mnist-5k"), "data_dir": args.data_dir,
            "threads": args.threads}
    from benchmarks.common import benchmark_dataset
    _, data_line = benchmark_dataset(opts["data"], opts["data_dir"])
    opts["data"] = data_line.split(":")[0]          # what "auto" resolved to, for every trial alike
    print(machine_line(device if cuda else None))
    print(f"data: {data_line}")
    if cuda:
        print(mps_status())
    print(f"trial: train_classifier model={args.model} batch={args.batch} bf16={args.bf16} "
          f"channels_last={args.channels_last}, {opts['epochs']} timed epoch(s) after 1 warm-up, data "
          f"{opts['data']} (90% trains), {args.threads} torch thread(s) each; k = {', '.join(map(str, ks))}; "
          f"{args.repeats} runs per k, interleaved, median")
    if cuda:
        torch.cuda.empty_cache()

    runs = interleaved({k: (lambda k=k: run_packed(k, opts)) for k in ks}, args.repeats)
    rows = {}
    for k, measured in runs.items():
        row = dict(min(measured, key=lambda r: abs(r["aggregate"] - median([m["aggregate"] for m in measured]))))
        row["aggregate"] = median([m["aggregate"] for m in measured])
        row["per_trial"] = median([m["per_trial"] for m in measured])
        row["runs"] = [m["aggregate"] for m in measured]
        rows[k] = row

    print()
    header = f"{'k':>3}{'aggregate img/s':>17}{'vs k=1':>8}{'per trial img/s':>17}"
    header += f"{'GPU MiB/trial':>15}{'allocator MiB':>15}  fits" if cuda else f"{'host RSS MiB':>14}"
    print(header + "  runs (aggregate)")
    best_k = None
    for k, row in rows.items():
        line = f"{k:>3}{row['aggregate']:>17,.0f}{row['aggregate'] / rows[ks[0]]['aggregate']:>7.2f}x{row['per_trial']:>17,.0f}"
        fits = True
        if cuda:
            share = row["total_mib"] / k
            fits = (row["process_mib"] * k <= FIT_SHARE * row["total_mib"]
                    and row["reserved_mib"] <= ALLOCATOR_CAP * share)
            line += f"{row['process_mib']:>15,.0f}{row['reserved_mib']:>15,.0f}  {'yes' if fits else 'NO'}"
        else:
            line += f"{row['host_rss_mib']:>14,.0f}"
        print(line + "  " + runs_text(row["runs"], "{:,.0f}"))
        if fits and (best_k is None or row["aggregate"] > rows[best_k]["aggregate"]):
            best_k = k
    if cuda:
        print(f"GPU memory source: {rows[ks[0]]['memory_source']}; GPU total {rows[ks[0]]['total_mib']:,.0f} MiB")
    if best_k is not None:
        print(f"recommended: --gpus-per-trial {1 / best_k:g}  (k={best_k}: best aggregate throughput whose memory fits)"
              + ("" if cuda else "  [CPU run: processes share cores, not a GPU; the GPU figure is owed]"))
    top = 4 if 4 in rows else max(rows)
    ratio = rows[top]["aggregate"] / rows[ks[0]]["aggregate"]
    target = (f"target >= {TARGET_RATIO:g}x at 4 trials on one GPU: {verdict(ratio >= TARGET_RATIO)}" if cuda and top == 4
              else f"target >= {TARGET_RATIO:g}x is for 4 trials on one GPU; not measured here")
    print(f"summary: aggregate at {top} trials / 1 trial = {ratio:.2f}x "
          f"({rows[top]['aggregate']:,.0f} vs {rows[ks[0]]['aggregate']:,.0f} images/s on {device}); {target}")


if __name__ == "__main__":
    main()
