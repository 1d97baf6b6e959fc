"""Runner overhead: Tune + our searcher + our MLflow callback, per trial and per result.

Claims under test, on a 2-core CPU machine: the runner adds <= 0.5 s per trial, and sustains
>= 200 results/s with MLflow logging on. The trials do no work, so everything measured is
runner: Ray actors, Tune's controller and checkpoints, `study.searchers.ListSearcher`,
`study.trial_logger.MlflowTrialLogger` writing to a fresh SQLite store (with dataset inputs) and
the progress display, set up as `study.phases.run_phase` sets them up (with_parameters
carrying the dataset, with_resources 1 CPU, trial directories named by id, FailureConfig
(max_failures=2), CheckpointConfig(num_to_keep=2), Tune's auto loggers off but result.json,
log_to_file, trial artifacts synced, the environment run_study sets). The trivial trainable
imports torch and Ray Tune as study.trial.run_trial does, and reports like a trainable: epoch,
train/loss, val/loss, val/acc, final, node_id, with a checkpoint directory per report
(state.pt + meta.json; model.pt + history.csv at the end) that the callback logs as artifacts.

  per trial   --trials trials of --reports reports each, 2 at a time, with actor reuse
              (what run_phase uses) and without (Tune's default), MLflow callback on; plus
              reuse with the callback off, to separate the callback's share.
              overhead per trial = wall / trials (the trials do nothing else).
  per result  --throughput-trials trials x --throughput-reports reports, no checkpoints:
              MLflow on (batched, what run_phase does), on with a write per result (the
              callback before batching: flush_interval_s=0), and off; results/s from the first
              result to the last one.
  callback    the callback alone, called directly on fake trials (no Ray): ms per result and
              per trial, batched and per result, and the batched one's cProfile.

    python -m benchmarks.runner_overhead                  # the whole thing (~20 min here)
    python -m benchmarks.runner_overhead --parts result,callback     # row 4b only (~6 min)
    python -m benchmarks.runner_overhead --trials 10 --repeats 1 --throughput-reports 100

Ray is started as ray.init(address="local", num_cpus=2, include_dashboard=False,
_node_ip_address="127.0.0.1", log_to_driver=False) in this process and shut down at the end. The last line is
the overhead per trial with reuse and the results/s with MLflow on, against the targets, and
the ratios against Tune's default (no reuse) and against logging off.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import logging
import os
import pstats
import shutil
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from benchmarks.common import interleaved, machine_line, median, runs_text, verdict

TARGET_PER_TRIAL_S = 0.5
TARGET_RESULTS_PER_S = 200.0
CONCURRENCY = 2               # 2 CPUs, 1 CPU per trial (the runner's default cpus_per_trial)
METRIC, MODE = "val/acc", "max"


# ============================================================================== the trivial trial
def trivial_trial(config: dict, *, datasets=None, artifacts=None, gpu_fraction: float = 0.0) -> None:
    """Reports like a trainable, trains nothing (same signature as study.trial.run_trial)."""
    import ray
    import torch  # noqa: F401 - study.trial.run_trial imports it: part of a fresh actor's cost
    from ray import tune

    # Ray Train logs a line per checkpoint at INFO; on the driver's console that is noise here
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    node_id = ray.get_runtime_context().get_node_id()
    reports, checkpoints = config["reports"], config["checkpoints"]
    history = []
    for epoch in range(1, reports + 1):
        final = epoch == reports
        metrics = {"epoch": float(epoch), "train/loss": 1.0 / epoch, "val/loss": 1.0 / epoch,
                   "val/acc": 1.0 - 0.5 / epoch, "final": float(final)}
        history.append(metrics)
        if not checkpoints:
            tune.report({**metrics, "node_id": node_id})
            continue
        directory = Path(tempfile.mkdtemp(prefix="checkpoint-"))
        try:
            torch.save({"epoch": epoch, "weights": torch.zeros(1000)}, directory / "state.pt")
            (directory / "meta.json").write_text(json.dumps({"trainable": "classifier", "epoch": epoch}))
            if final:
                torch.save({"weights": torch.zeros(1000)}, directory / "model.pt")
                (directory / "history.csv").write_text(
                    "epoch,val/acc\n" + "".join(f"{h['epoch']},{h['val/acc']}\n" for h in history))
            tune.report({**metrics, "node_id": node_id}, checkpoint=tune.Checkpoint.from_directory(str(directory)))
        finally:
            shutil.rmtree(directory, ignore_errors=True)


# ============================================================================== one Tune experiment
def _callback_classes(logger_class):
    from ray.tune import Callback

    class ResultClock(Callback):
        """Times of the first and last result the driver saw (results/s without start-up)."""

        def __init__(self) -> None:
            self.first = self.last = None
            self.count = 0

        def on_trial_result(self, iteration, trials, trial, result, **info):
            now = time.perf_counter()
            self.first = self.first or now
            self.last, self.count = now, self.count + 1

    class TimedLogger(logger_class):
        """The callback, unchanged, with the time spent in it summed."""

        seconds = 0.0

        def _timed(self, method, *args, **kwargs):
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                TimedLogger.seconds += time.perf_counter() - started

        def on_trial_start(self, *a, **k):
            return self._timed(super().on_trial_start, *a, **k)

        def on_trial_result(self, *a, **k):
            return self._timed(super().on_trial_result, *a, **k)

        def on_trial_complete(self, *a, **k):
            return self._timed(super().on_trial_complete, *a, **k)

        def on_experiment_end(self, *a, **k):
            return self._timed(super().on_experiment_end, *a, **k)

        def get_state(self):
            return self._timed(super().get_state)

    return ResultClock, TimedLogger


class Store:
    """A fresh SQLite MLflow store with one experiment and a parent run (created untimed)."""

    def __init__(self, root: Path, name: str) -> None:
        from study import tracking

        self.root = root / name
        self.root.mkdir(parents=True)
        self.uri = f"sqlite:///{self.root / 'mlflow.db'}"
        self.experiment_id = tracking.ensure_experiment(self.uri, "runner_overhead", self.root / "mlartifacts")
        self.parent = tracking.create_parent(self.uri, self.experiment_id, "bench", {"study": "runner_overhead",
                                                                                   "run_kind": "study"}, {})


def make_logger(cls, store: Store, key: str, dataset, mlflow: str):
    """The callback as run_phase builds it; 'per-result' writes each result at once (flush
    interval 0: the callback before batching)."""
    from study import run_contents
    from study.trial import META_KEYS

    return cls(store.uri, store.experiment_id, store.parent.run_id, experiment_key=key,
               base_tags={"study": "runner_overhead", "stage": "classify", "phase": "replicate"},
               tags_for_config=lambda c: {"arm": str(c.get("arm")), "seed": str(c.get("seed"))},
               meta_keys=META_KEYS, resources={"cpu": 1.0, "gpu": 0.0}, log_weights=True,
               datasets={dataset.name: run_contents.dataset_entities(dataset)},
               flush_interval_s=0.0 if mlflow == "per-result" else 2.0)


def run_experiment(root: Path, dataset, *, trials: int, reports: int, reuse: bool, mlflow: str,
                   checkpoints: bool, label: str) -> dict:
    """One Tune experiment; mlflow is 'on' (study.trial_logger.MlflowTrialLogger, batched as in
    run_phase), 'per-result' (the same, a write per result) or 'off'."""
    import io

    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    from study.searchers import ListSearcher
    from study.progress import PhaseProgress
    from study.trial_logger import MlflowTrialLogger

    ResultClock, TimedLogger = _callback_classes(MlflowTrialLogger)
    name = f"{label}-{time.monotonic_ns()}"
    store = Store(root, name)
    clock = ResultClock()
    callbacks = [clock, JsonLoggerCallback(), PhaseProgress(label, trials, CONCURRENCY, None, stream=io.StringIO())]
    TimedLogger.seconds = 0.0
    if mlflow != "off":
        callbacks.append(make_logger(TimedLogger, store, name, dataset, mlflow))
    configs = [{"arm": f"arm{i % 3}", "seed": i, "trainable": "classifier", "stage": "classify",
                "phase": "replicate", "lr": 1e-3, "batch_size": 128, "reports": reports, "dataset": dataset.name,
                "checkpoints": checkpoints} for i in range(trials)]
    trainable = tune.with_resources(
        tune.with_parameters(trivial_trial, datasets={dataset.name: dataset}, artifacts={}, gpu_fraction=0.0),
        {"cpu": 1, "gpu": 0})
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=ListSearcher(configs, METRIC, MODE), num_samples=trials,
                                    max_concurrent_trials=CONCURRENCY, reuse_actors=reuse,
                                    trial_dirname_creator=lambda t: f"{t.trial_id}"),
        run_config=tune.RunConfig(name=name, storage_path=str(store.root / "tune"),
                                  failure_config=tune.FailureConfig(max_failures=2),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                                  sync_config=tune.SyncConfig(sync_artifacts=True), log_to_file=True,
                                  callbacks=callbacks, verbose=0))
    started = time.perf_counter()
    grid = tuner.fit()
    wall = time.perf_counter() - started
    errors = [r.error for r in grid if r.error]
    if errors:
        raise SystemExit(f"{label}: {len(errors)} trials failed: {errors[0]}")
    span = (clock.last - clock.first) if clock.count > 1 else float("nan")
    out = {"wall": wall, "per_trial": wall / trials, "results": clock.count,
           "results_per_s": (clock.count - 1) / span if span == span and span > 0 else float("nan"),
           "callback_s": TimedLogger.seconds}
    if mlflow != "off":   # the record is complete: a finished run per trial with every report, once
        check_record(store, trials, reports, label)
    shutil.rmtree(store.root, ignore_errors=True)
    return out


def check_record(store: Store, trials: int, reports: int, label: str) -> None:
    from study import tracking
    c = tracking.client(store.uri)
    runs = c.search_runs([store.experiment_id], "tags.run_kind = 'trial'", max_results=10000)
    assert len(runs) == trials, f"{label}: {len(runs)} MLflow runs for {trials} trials"
    assert all(r.info.status == "FINISHED" and r.data.tags.get("outcome") == "completed" for r in runs)
    for run in runs[:3]:
        steps = [m.step for m in c.get_metric_history(run.info.run_id, "val/acc")]
        assert steps == list(range(1, reports + 1)), f"{label}: epochs lost or repeated: {steps[:10]}..."


# ============================================================================== the callback alone
def callback_alone(root: Path, dataset, *, trials: int, reports: int, mlflow: str, profile: bool) -> dict:
    """The MLflow callback called directly (no Ray) on fake trials: seconds per call."""
    from study.trial_logger import MlflowTrialLogger

    store = Store(root, f"callback-{mlflow}-{time.monotonic_ns()}")
    logger = make_logger(MlflowTrialLogger, store, "callback", dataset, mlflow)
    logger.setup()
    profiler = cProfile.Profile() if profile else None
    per_result, per_trial_fixed = 0.0, 0.0
    for t in range(trials):
        config = {"arm": f"arm{t % 3}", "seed": t, "lr": 1e-3, "batch_size": 128, "phase": "tune",
                  "dataset": dataset.name}
        trial = SimpleNamespace(trial_id=f"t{t:05d}", config=config, last_result={}, checkpoint=None,
                                error_file=None)
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        logger.on_trial_start(0, [], trial)
        per_trial_fixed += time.perf_counter() - started
        for epoch in range(1, reports + 1):
            result = {"epoch": float(epoch), "train/loss": 0.1, "val/loss": 0.1, "val/acc": 0.9,
                      "final": float(epoch == reports), "node_id": "n", "pid": 1, "training_iteration": epoch,
                      "time_total_s": 0.1 * epoch, "trial_id": trial.trial_id, "config/lr": 1e-3}
            started = time.perf_counter()
            logger.on_trial_result(0, [], trial, result)
            per_result += time.perf_counter() - started
            trial.last_result = result
        started = time.perf_counter()
        logger.on_trial_complete(0, [], trial)
        per_trial_fixed += time.perf_counter() - started
        if profiler:
            profiler.disable()
    out = {"ms_per_result": 1000 * per_result / (trials * reports),
           "ms_per_trial_fixed": 1000 * per_trial_fixed / trials}
    if profiler:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(12)
        out["profile"] = text.getvalue()
    check_record(store, trials, reports, f"callback {mlflow}")
    shutil.rmtree(store.root, ignore_errors=True)
    return out


# ============================================================================== main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=50, help="trials per per-trial measurement (default 50)")
    parser.add_argument("--trials-no-reuse", type=int, default=20,
                        help="trials without actor reuse (default 20: each costs seconds)")
    parser.add_argument("--reports", type=int, default=5, help="reports per trial there (default 5)")
    parser.add_argument("--throughput-trials", type=int, default=4)
    parser.add_argument("--throughput-reports", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement, interleaved; median")
    parser.add_argument("--parts", default="trial,result,callback",
                        help="comma list of trial (row 4a), result (row 4b), callback (default: all)")
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile of the callback")
    args = parser.parse_args(argv)
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if not parts or parts - {"trial", "result", "callback"}:
        parser.error(f"--parts takes trial, result, callback; got {args.parts!r}")

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # what study.protocol.run_study and run_phase set before their Tuners run
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    import ray

    from study.terminal import quiet_libraries
    from trainables.data import load_dataset

    quiet_libraries(1)

    dataset = load_dataset("mnist-5k")
    print(machine_line())
    print(f"Ray {ray.__version__}, num_cpus=2, {CONCURRENCY} trials at a time (1 CPU each); "
          f"{args.repeats} runs per measurement, interleaved, median")
    root = Path(tempfile.mkdtemp(prefix="runner-overhead-"))
    per_trial = {   # label -> (trials, run_experiment keywords)
        "reuse, ckpt, MLflow on (run_phase)": (args.trials, dict(reuse=True, mlflow="on", checkpoints=True)),
        "no reuse, ckpt, MLflow on": (args.trials_no_reuse, dict(reuse=False, mlflow="on", checkpoints=True)),
        "reuse, ckpt, MLflow off": (args.trials, dict(reuse=True, mlflow="off", checkpoints=True)),
        "reuse, no ckpt, MLflow off": (args.trials, dict(reuse=True, mlflow="off", checkpoints=False)),
    } if "trial" in parts else {}
    throughput = {
        "MLflow on (batched; run_phase)": dict(reuse=True, mlflow="on"),
        "MLflow on, a write per result": dict(reuse=True, mlflow="per-result"),
        "MLflow off": dict(reuse=True, mlflow="off"),
    } if "result" in parts else {}
    values = {}
    if per_trial or throughput:
        # (worker output stays in the trials' log files, as in the runner's default output)
        ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
                 log_to_driver=False)
        try:
            measures = {("trial", k): (lambda n=n, kw=kw: run_experiment(
                root, dataset, trials=n, reports=args.reports, label="trial", **kw))
                for k, (n, kw) in per_trial.items()}
            measures.update({("result", k): (lambda kw=kw: run_experiment(
                root, dataset, trials=args.throughput_trials, reports=args.throughput_reports, checkpoints=False,
                label="result", **kw)) for k, kw in throughput.items()})
            values = interleaved(measures, args.repeats)
        finally:
            ray.shutdown()
    alone, profile = {}, None
    if "callback" in parts:
        alone = {mode: [callback_alone(root, dataset, trials=20, reports=50, mlflow=mode, profile=False)
                        for _ in range(args.repeats)] for mode in ("on", "per-result")}
        profile = None if args.no_profile else callback_alone(root, dataset, trials=20, reports=50, mlflow="on",
                                                              profile=True)
    shutil.rmtree(root, ignore_errors=True)
    report(args, per_trial, throughput, values, alone, profile)


def report(args, per_trial, throughput, values, alone, profile) -> None:
    med, rps = {}, {}
    if per_trial:
        print()
        print(f"per trial: {args.trials} trials ({args.trials_no_reuse} without reuse) x {args.reports} reports; "
              "ckpt = a checkpoint directory per report, as the trainables write")
        print(f"  {'configuration':<36}{'wall s':>8}{'s/trial':>9}{'callback s':>12}  runs (s/trial)")
        for k in per_trial:
            runs = values[("trial", k)]
            med[k] = median([r["per_trial"] for r in runs])
            print(f"  {k:<36}{median([r['wall'] for r in runs]):>8.1f}{med[k]:>9.3f}"
                  f"{median([r['callback_s'] for r in runs]):>12.2f}  {runs_text([r['per_trial'] for r in runs], '{:.3f}')}")
    if throughput:
        print()
        print(f"per result: {args.throughput_trials} trials x {args.throughput_reports} reports, no checkpoints, "
              "actor reuse; results/s from the first result to the last")
        print(f"  {'configuration':<36}{'results/s':>10}{'wall s':>8}{'callback ms/result':>20}  runs (results/s)")
        for k in throughput:
            runs = values[("result", k)]
            rps[k] = median([r["results_per_s"] for r in runs])
            cb = median([1000 * r["callback_s"] / max(r["results"], 1) for r in runs])
            print(f"  {k:<36}{rps[k]:>10.0f}{median([r['wall'] for r in runs]):>8.1f}{cb:>20.2f}"
                  f"  {runs_text([r['results_per_s'] for r in runs], '{:.0f}')}")
    if alone:
        print()
        print("the MLflow callback alone (no Ray; 20 trials x 50 results each on a fresh SQLite store):")
        for mode, label in (("on", "batched (study.tracking)"), ("per-result", "a write per result")):
            total = [r["ms_per_trial_fixed"] + 50 * r["ms_per_result"] for r in alone[mode]]
            print(f"  {label:<34}{median([r['ms_per_result'] for r in alone[mode]]):7.2f} ms/result  "
                  f"{median([r['ms_per_trial_fixed'] for r in alone[mode]]):7.1f} ms/trial start+complete  "
                  f"{median(total):7.0f} ms per 50-result trial  (runs: {runs_text(total, '{:.0f}')})")
    if profile:
        print("  cProfile of the batched callback (top 12 by own time):")
        for line in profile["profile"].splitlines():
            if line.strip():
                print("    " + line)
    summary = []
    if per_trial:
        reuse, no_reuse = med["reuse, ckpt, MLflow on (run_phase)"], med["no reuse, ckpt, MLflow on"]
        summary.append(f"{reuse:.3f} s overhead per trial with actor reuse (target <= {TARGET_PER_TRIAL_S} s: "
                       f"{verdict(reuse <= TARGET_PER_TRIAL_S)}; {no_reuse / reuse:.1f}x less than without reuse, "
                       f"{no_reuse:.2f} s)")
    if throughput:
        on, off = rps["MLflow on (batched; run_phase)"], rps["MLflow off"]
        summary.append(f"{on:.0f} results/s with MLflow on (target >= {TARGET_RESULTS_PER_S:.0f}: "
                       f"{verdict(on >= TARGET_RESULTS_PER_S)}; {on / off:.2f}x the {off:.0f}/s with MLflow off "
                       f"in the same run; a write per result: {rps['MLflow on, a write per result']:.0f}/s)")
    print()
    print("summary: " + "; ".join(summary))


if __name__ == "__main__":
    main()
