"""What every registered study costs at --budget full (real MNIST, 60,000 training images), from the
runner's own --dry-run, on one GPU and on this machine's CPU: writes docs/results/full_estimates.md.

    .venv/bin/python scripts/full_estimates.py                  # every registered study
    .venv/bin/python scripts/full_estimates.py --output -       # print the table instead

Each estimate is one `python -m study.run NAME --dry-run --budget full ...` command, run as a user
types it (nothing is trained): the runner's plan times the throughput each trainable declares
(trainables/cost.py). On a machine without GPUs, `--gpus-per-trial 0.25` is estimated for one GPU
(the dry run says so); RAY_ADDRESS is dropped, so every estimate is for this machine, not a cluster
it could join.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "results" / "full_estimates.md"

# (column, extra options): one GPU as this machine would run it (its 2 CPUs allow 2 trials at a
# time), one GPU with four trials sharing it (a GPU machine with 4 or more cores), this CPU
SETTINGS = (
    ("one GPU, this machine's CPUs", ("--gpus-per-trial", "0.25")),
    ("one GPU, 4 trials at a time", ("--gpus-per-trial", "0.25", "--max-concurrent", "4")),
    ("this CPU", ()),
)

TOTAL = re.compile(r"total: ([\d,]+) trials, about ([\d,]+) trial-seconds = ([\d,]+) (GPU|CPU)-seconds")
WALL = re.compile(r"on this machine \((\d+) trials at a time, [^)]*\): about ([\d,]+) minutes of wall time")
ARMS = re.compile(r"^  arms \((\d+)\):", re.M)


@dataclass(frozen=True)
class Estimate:
    command: str
    trials: int
    device_seconds: int          # GPU-seconds or CPU-seconds, as the runner counts them
    device: str                  # "GPU" or "CPU"
    concurrent: int
    wall_minutes: int
    arms: int
    note: str                    # the dry run's own remark, e.g. "(no GPU here: estimated for one GPU ...)"


def studies() -> list[str]:
    out = _run([sys.executable, "-m", "study.run", "--list"])
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def estimate(name: str, extra: tuple[str, ...]) -> Estimate:
    argv = ["python", "-m", "study.run", name, "--dry-run", "--budget", "full", *extra]
    out = _run([sys.executable, *argv[1:]])
    total, wall, arms = TOTAL.search(out), WALL.search(out), ARMS.search(out)
    if not (total and wall and arms):
        raise SystemExit(f"cannot read the estimate of `{shlex.join(argv)}`:\n{out[-2000:]}")
    note = next((line for line in out.splitlines() if line.startswith("(no GPU here")), "")
    return Estimate(shlex.join(argv), int(total[1].replace(",", "")), int(total[3].replace(",", "")), total[4],
                    int(wall[1]), int(wall[2].replace(",", "")), int(arms[1]), note)


def _run(argv: list[str]) -> str:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"`{shlex.join(argv)}` exited with {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done.stdout


def hours(minutes: int) -> str:
    return f"{minutes} min" if minutes < 90 else f"{minutes / 60:.1f} h"


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown CPU") \
        if Path("/proc/cpuinfo").exists() else platform.processor()
    return f"{os.cpu_count()} cores ({model}), {platform.machine()}, no GPU" if not _has_gpu() else \
        f"{os.cpu_count()} cores ({model}), {platform.machine()}, with a GPU"


def _has_gpu() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except ImportError:
        return False


def git_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return commit + (" (uncommitted changes in the tree)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def render(rows: dict[str, list[Estimate]], command: str) -> str:
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = ["study", "arms", "trials"]
    for column, _ in SETTINGS:
        head.append(f"{column}: wall")
    head += ["GPU-hours", "CPU-hours", "result at full"]
    lines = [
        "# `--budget full`: what each study would cost (estimates; nothing here was run)",
        "",
        "Generated by `scripts/full_estimates.py`: never edit by hand. Every study's published answer",
        "(docs/results/) is on `mnist-5k`, 3,600 training images; the write-ups trained on MNIST's",
        "60,000. `--budget full` is that scale: real MNIST (downloaded once, or `--data-dir`), 15",
        "classifier epochs, 8 Optuna trials per tuning (TPE after 5), 12 autoencoder trials of at most",
        "20 epochs, 5 paired seeds (`builtin_studies/mnist.py`, `FULL`).",
        "",
        f"* Generated: {today}, `{command}`, commit {git_commit()}, on {machine()}.",
        "* Each number is the runner's own `--dry-run` (study/plan.py): trials x epochs x the seconds per",
        "  epoch the trainables declare (`trainables/cost.py`: CPU figures measured on this project's 2-core",
        "  reference machine; GPU figures stated there for one trial alone on an H100, not measured here",
        "  (no GPU) nor with four trials sharing one: expect the GPU columns to be optimistic), plus the",
        "  runner's start and phases.",
        f"* **{SETTINGS[0][0]}**: `--gpus-per-trial 0.25` on this machine, which has no GPU: the dry run",
        "  estimates for one GPU (it says so); this machine's 2 CPUs allow 2 trials at a time.",
        f"* **{SETTINGS[1][0]}**: the same with `--max-concurrent 4`, as on a GPU machine with 4 or more",
        "  cores (the runner's default there: 4 trials share the GPU).",
        f"* **{SETTINGS[2][0]}**: no GPU, 2 trials at a time on this 2-core CPU.",
        "* **Result at full: not run.** No GPU was available to this project when this was generated; the",
        "  runs are `./scripts/reproduce_results.sh --budget full` on one GPU, or with `--address` on a",
        "  Ray cluster (its header says how).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    for name, estimates in rows.items():
        gpu, gpu4, cpu = estimates
        cells = [f"`{name}`", str(gpu.arms), f"{gpu.trials:,}"]
        cells += [f"{hours(e.wall_minutes)} ({e.concurrent} at a time)" for e in estimates]
        cells += [f"{gpu.device_seconds / 3600:.2f}", f"{cpu.device_seconds / 3600:.1f}", "not run"]
        lines.append("| " + " | ".join(cells) + " |")
    total = {i: sum(r[i].wall_minutes for r in rows.values()) for i in range(len(SETTINGS))}
    lines.append("| **all, one after another** | | "
                 f"{sum(r[0].trials for r in rows.values()):,} | "
                 + " | ".join(hours(total[i]) for i in range(len(SETTINGS)))
                 + f" | {sum(r[0].device_seconds for r in rows.values()) / 3600:.2f}"
                 + f" | {sum(r[2].device_seconds for r in rows.values()) / 3600:.1f} | |")
    lines += ["", "The commands, as run:", ""]
    for estimates in rows.values():
        lines += [f"    {e.command}" for e in estimates]
    notes = sorted({e.note for estimates in rows.values() for e in estimates if e.note})
    if notes:
        lines += ["", "What the dry runs said about the GPU: " + "; ".join(f"`{n}`" for n in notes)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("studies", nargs="*", help="registered studies (default: every one, as --list names them)")
    parser.add_argument("--output", default=str(OUTPUT), help="the Markdown file to write, or - for stdout")
    args = parser.parse_args(argv)
    names = args.studies or studies()
    rows = {}
    for name in names:
        rows[name] = [estimate(name, extra) for _, extra in SETTINGS]
        print(f"{name}: " + ", ".join(f"{hours(e.wall_minutes)}" for e in rows[name]), file=sys.stderr, flush=True)
    command = shlex.join(["python", "scripts/full_estimates.py", *(argv if argv is not None else sys.argv[1:])])
    text = render(rows, command)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
