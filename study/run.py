"""Run a whole ablation study: ``python -m study.run STUDY``.

STUDY is one of ours (``--list``), a study file (``my_studies/width.py``, or
``my_studies/width.py:NAME`` when it defines several) or a module (``my_pkg.studies:NAME``);
docs/writing-a-study.md shows how to write one.

Examples:
    python -m study.run --list
    python -m study.run ablation_pretraining --budget smoke          # ~2 min on a 2-core CPU
    python -m study.run ablation_pretraining --dry-run --budget full
    python -m study.run examples/digits_width.py --check             # seconds: can it run?
    python -m study.run ablation_pretraining --budget full --gpus-per-trial 0.25
    ray job submit --working-dir . -- python -m study.run ablation_pretraining --budget full

Every trial is an MLflow child run of the study's parent run; tables come from
``python -m analysis.compare NAME``.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from dataclasses import replace
from pathlib import Path

from study import records, terminal, tracking
from study.loader import Found, StudyError
from study.registry import find

EXIT_USAGE = 2


def _positive(name: str, cast=float, whole_above_one: bool = False):
    """argparse type: a number > 0 (``cast=int``: a whole number >= 1), named in its error."""
    kind = "a whole number" if cast is int else "a number"

    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be {kind}, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{name} must be > 0, got {text}")
        if whole_above_one and value > 1 and value != int(value):
            raise argparse.ArgumentTypeError(f"{name} above 1 must be a whole number of GPUs, got {text}")
        return value
    return parse


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes comma-separated whole numbers, got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds):
        raise argparse.ArgumentTypeError(f"--seeds must be non-negative whole numbers, got {text!r}")
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"--seeds repeats a seed: {text!r}")
    return seeds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m study.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", nargs="?", metavar="STUDY",
                        help="a built-in study (see --list), a study file (path/to/file.py[:NAME]) or a module "
                             "(package.module:NAME)")
    parser.add_argument("--list", action="store_true",
                        help="list the built-in studies, or those of the STUDY file or module, and exit")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the plan (stages, arms, phases, trials, epochs, estimated cost); train nothing")
    parser.add_argument("--check", action="store_true",
                        help="check the study and exit, in seconds: its trainables import and accept its keys, "
                             "its data loads, one epoch of the baseline arm reports its metric (no MLflow, no Ray)")
    parser.add_argument("--budget", default="smoke",
                        help="a budget of the study (default: smoke). Ours: smoke: mnist-5k, minutes on a laptop "
                             "CPU, checks the machinery; laptop: mnist-5k, 5 seeds, answers the question in <= 20 "
                             "min on 2 cores; full: real MNIST on a GPU cluster (see --dry-run)")
    parser.add_argument("--dataset", help="override the budget's dataset (ours: mnist-5k, mnist, fashion-mnist)")
    parser.add_argument("--data-dir", help="folder holding the standard IDX files (offline clusters); "
                                           "default: STUDY_DATA_DIR or the download cache")
    parser.add_argument("--seeds", type=_seeds, help="replicate seeds, e.g. 0,1,2,3,4 (same for every arm)")
    parser.add_argument("--epochs", type=_positive("--epochs", int), help="override the classifier epochs")
    parser.add_argument("--trials-per-tuning", type=_positive("--trials-per-tuning", int),
                        help="override the Optuna trials of each tuning (each arm is tuned on each seed)")
    parser.add_argument("--gpus-per-trial", type=_positive("--gpus-per-trial", whole_above_one=True), default=None,
                        help="GPU share per trial; 0.25 packs four trials on a GPU (default: 0.25 when the "
                             "cluster has GPUs, else none)")
    parser.add_argument("--cpus-per-trial", type=_positive("--cpus-per-trial"), default=1.0,
                        help="CPUs per trial (default: 1)")
    parser.add_argument("--max-concurrent", type=_positive("--max-concurrent", int),
                        help="max trials at once (default: what the cluster's CPUs/GPUs fit now; 16 with --autoscaling)")
    parser.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a private local Ray)")
    parser.add_argument("--autoscaling", action="store_true",
                        help="the cluster adds nodes on demand: skip the check that GPUs exist now and size "
                             "concurrency for the grown cluster")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else "
                                               "sqlite:///<results-dir>/mlflow.db)")
    parser.add_argument("--results-dir", type=Path, help="where the SQLite store, artifacts and Tune state live "
                                                          "(default: STUDY_RESULTS_DIR or ./results)")
    parser.add_argument("--storage", help="Tune storage: a local folder or s3://bucket/prefix, gs://... "
                                          "(default: STUDY_STORAGE, else <results-dir>/tune; multi-node clusters need shared storage)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run of this study")
    parser.add_argument("--fresh", action="store_true", help="start over even if a run exists (old runs are kept)")
    parser.add_argument("--until-decided", action="store_true",
                        help="after the budget's seeds, add --seed-batch new paired seeds to every arm (each tuned "
                             "on its own) and look again, until every planned contrast is decided or --max-seeds "
                             "is reached; the error rates hold across the looks (docs/protocol.md)")
    parser.add_argument("--max-seeds", type=_positive("--max-seeds", int),
                        help="with --until-decided: the most seeds per arm (default: the budget's max_seeds, else 20)")
    parser.add_argument("--seed-batch", type=_positive("--seed-batch", int),
                        help="with --until-decided: seeds added at each look (default: the budget's, 3)")
    parser.add_argument("--max-failures", type=_positive("--max-failures", int), default=2,
                        help="stop a phase once one error raised by the trainable's own code (same type, file and "
                             "line) has failed this many trials (default: 2); such trials are never retried. Lost "
                             "workers and killed processes are retried by Ray, as always")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--verbose", action="store_true",
                        help="Tune's status tables and every trial's output on this terminal instead of one "
                             "progress line per phase (trial logs are also on disk at every level)")
    output.add_argument("--quiet", action="store_true", help="no progress display: phase summaries, warnings, "
                                                              "errors and where the results are")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.list:
            return _list(args.study)
        if not args.study:
            parser.error("name a study (see --list)")
        if args.resume and args.fresh:
            parser.error("--resume and --fresh contradict each other: pick one")
        return _run(parser, args, argv)
    except StudyError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE


def _list(target: str | None) -> int:
    from study.registry import ORIGINS, STUDIES
    found = find(target) if target else [Found(s, ORIGINS[n]) for n, s in sorted(STUDIES.items())]
    width = max(len(f.study.name) for f in found)
    for f in found:
        print(f"{f.study.name:<{width}}  {f.study.description}")
    return 0


def _one(target: str) -> Found:
    found = find(target)
    if len(found) > 1:
        names = [f.study.name for f in found]
        raise StudyError(found[0].origin, f"defines {len(found)} studies ({', '.join(names)}): name one, "
                                          f"e.g. {target}:{names[0]}")
    return found[0]


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str] | None) -> int:
    found = _one(args.study)
    study = found.study
    from study.cluster import UsageError
    from study.protocol import RunOptions, run_study
    if args.budget not in study.budgets:
        parser.error(f"--budget {args.budget!r}: study {study.name} has no such budget; budgets: {', '.join(study.budgets)}")
    budget = study.budget(args.budget)
    overrides = {k: v for k, v in {"dataset": args.dataset, "seeds": args.seeds, "epochs": args.epochs,
                                   "trials_per_tuning": args.trials_per_tuning}.items() if v is not None}
    names = study.data.names if study.data else ()
    if args.dataset and names and args.dataset not in names:
        parser.error(f"--dataset {args.dataset!r} is unknown; datasets: {', '.join(names)}")
    if args.until_decided:
        overrides["max_seeds"] = args.max_seeds or budget.max_seeds or 20
        overrides["seed_batch"] = args.seed_batch or budget.seed_batch
    elif args.max_seeds or args.seed_batch:
        parser.error("--max-seeds and --seed-batch go with --until-decided")
    try:
        budget = replace(budget, **overrides)
    except ValueError as e:
        parser.error(str(e))
    results_dir = (args.results_dir or records.default_results_dir()).resolve()
    opts = RunOptions(
        study=study, budget_name=args.budget, budget=budget, gpus_per_trial=args.gpus_per_trial,
        cpus_per_trial=args.cpus_per_trial, max_concurrent=args.max_concurrent, address=args.address,
        tracking_uri=args.tracking_uri or records.default_tracking_uri(results_dir), results_dir=results_dir,
        storage=args.storage or os.environ.get("STUDY_STORAGE"), data_dir=args.data_dir, resume=args.resume, fresh=args.fresh,
        autoscaling=args.autoscaling, command=tracking.redact(shlex.join(["python", "-m", "study.run", *(argv or sys.argv[1:])])),
        verbose=0 if args.quiet else 2 if args.verbose else 1, origin=found.origin, target=args.study,
        max_failures=args.max_failures, resume_command=resume_command(argv))
    terminal.quiet_libraries(opts.verbose)
    if args.dry_run:
        return _dry_run(opts)
    if args.check:
        return _check(opts)
    try:
        return run_study(opts)
    except (UsageError, tracking.TrackingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE


def resume_command(argv: list[str] | None) -> str:
    """The command as given, with ``--resume`` instead of ``--fresh``: every option that says where
    things go (--results-dir, --tracking-uri, --storage, --address, ...) is repeated."""
    args = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--fresh"]
    return tracking.redact(shlex.join(["python", "-m", "study.run", *args, *(["--resume"] if "--resume" not in args
                                                                             else [])]))


def _dry_run(opts) -> int:
    """``--dry-run``: the plan and its cost. A trainable that declares no ``epoch_seconds``
    (study/declared.py) has two epochs of the baseline arm timed for the estimate."""
    from study.check import check, check_code
    from study.plan import CostModel, print_plan

    resources = _resources(opts)
    cost = CostModel(resources.device, check_code(opts.study, opts.origin))
    if cost.needs_timing():
        print("(timing two epochs of the baseline arm: its trainable declares no epoch_seconds)", flush=True)
        cost = CostModel(cost.device, cost.trainables, check(opts.study, opts.budget, opts.origin, opts.data_dir,
                                                             epochs=2)[1])
    print_plan(opts, cost, resources)
    return 0


def _check(opts) -> int:
    """``--check``: study.check's checks and a dry trial of two epochs, what they found, and the cost
    estimate for the budget asked (--budget; default smoke)."""
    from study.check import check, describe
    from study.plan import CostModel, estimate_phases, print_cost

    study = opts.study
    loaded, dry = check(study, opts.budget, opts.origin, opts.data_dir, epochs=2)
    print(f"check {opts.origin}: study {study.name!r}, budget {opts.budget_name} ({opts.budget.dataset})")
    for line in describe(study, loaded, dry):
        print(line)
    resources = _resources(opts)
    cost = CostModel(resources.device, loaded.trainables, dry)
    print_cost(opts, estimate_phases(study, opts.budget, cost), cost, resources)
    print(f"ok: python -m study.run {opts.target} --budget {opts.budget_name} runs it")
    return 0


def _resources(opts):
    """What a run would give each trial (study.cluster.plan_trials, the one device decision), on
    the cluster it would use: the estimates are for that device and share. A GPU share asked for
    on a machine without GPUs (planning a GPU run from a laptop) is estimated for one GPU."""
    from study.cluster import expected_resources, plan_trials
    cluster = expected_resources(opts.address)
    if opts.gpus_per_trial and not cluster.get("GPU") and not (opts.address or os.environ.get("RAY_ADDRESS")):
        print(f"(no GPU here: estimated for one GPU, {opts.gpus_per_trial:g} GPU per trial)")
        cluster = {**cluster, "GPU": 1.0}
    return plan_trials(cluster, opts)


if __name__ == "__main__":
    sys.exit(main())
