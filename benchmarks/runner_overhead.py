"""Runner overhead: Tune + our searcher + our MLflow callback, per trial and per result.

Claims under test, on a 2-core CPU machine: the runner adds <= 0.5 s per trial, and sustains
>= 200 results/s with MLflow logging on. The trials do no work, so everything measured is
runner: Ray actors, Tune's controller and checkpoints, `study.searchers.ListSearcher`, and
`study.tracking.MlflowTrialLogger` writing to a fresh SQLite store, set up as
`study.protocol.run_phase` sets them up (with_parameters carrying the dataset, with_resources
1 CPU, trial directories named by id, FailureConfig(max_failures=2), CheckpointConfig
(num_to_keep=2), the environment run_study sets). The trivial trainable imports torch and
Ray Tune as study.trial.run_trial does, and reports like a trainable: epoch, train/loss,
val/loss, val/acc, final, node_id, with a checkpoint directory per report (state.pt +
meta.json; model.pt + history.csv at the end) that the callback logs as artifacts.

  per trial   --trials trials of --reports reports each, 2 at a time, with actor reuse
              (what run_phase uses) and without (Tune's default), MLflow callback on; plus
              reuse with the callback off, to separate the callback's share.
              overhead per trial = wall / trials (the trials do nothing else).
  per result  --throughput-trials trials x --throughput-reports reports, no checkpoints,
              MLflow on vs off; results/s from the first result to the last one.
  callback    the callback alone, called directly on fake trials (no Ray): ms per result
              and per trial, its cProfile, and a candidate fix measured the same way.

    python -m benchmarks.runner_overhead                  # the whole thing (~20 min here)
    python -m benchmarks.runner_overhead --trials 10 --repeats 1 --throughput-reports 100

Ray is started as ray.init(address="local", num_cpus=2, include_dashboard=False,
_node_ip_address="127.0.0.1") in this process and shut down at the end. The last line is
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


def run_experiment(root: Path, dataset, *, trials: int, reports: int, reuse: bool, mlflow: str,
                   checkpoints: bool, label: str) -> dict:
    """One Tune experiment; mlflow is 'off', 'on' (study.tracking.MlflowTrialLogger) or
    'buffered' (the candidate fix below)."""
    from ray import tune

    from study.searchers import ListSearcher
    from study.tracking import MlflowTrialLogger
    from study.trial import META_KEYS

    ResultClock, TimedLogger = _callback_classes(buffered_logger_class() if mlflow == "buffered"
                                                 else MlflowTrialLogger)
    name = f"{label}-{time.monotonic_ns()}"
    store = Store(root, name)
    clock = ResultClock()
    callbacks = [clock]
    TimedLogger.seconds = 0.0
    if mlflow != "off":
        callbacks.append(TimedLogger(
            store.uri, store.experiment_id, store.parent.run_id, experiment_key=name,
            base_tags={"study": "runner_overhead", "stage": "classify", "phase": "replicate"},
            tags_for_config=lambda c: {"arm": str(c.get("arm")), "seed": str(c.get("seed"))},
            meta_keys=META_KEYS, resources={"cpu": 1.0, "gpu": 0.0}, log_weights=True))
    configs = [{"arm": f"arm{i % 3}", "seed": i, "trainable": "classifier", "stage": "classify",
                "phase": "replicate", "lr": 1e-3, "batch_size": 128, "reports": reports,
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
    if mlflow != "off":   # the record is complete: a finished run per trial with every report
        from study import tracking
        c = tracking.client(store.uri)
        runs = c.search_runs([store.experiment_id], "tags.run_kind = 'trial'", max_results=10000)
        assert len(runs) == trials, f"{label}: {len(runs)} MLflow runs for {trials} trials"
        assert all(r.info.status == "FINISHED" and r.data.tags.get("outcome") == "completed" for r in runs)
        assert len(c.get_metric_history(runs[0].info.run_id, "val/acc")) == reports, f"{label}: epochs missing"
    shutil.rmtree(store.root, ignore_errors=True)
    return out


# ============================================================================== the callback alone
def callback_alone(root: Path, *, trials: int, reports: int, fix: bool, profile: bool) -> dict:
    """The MLflow callback called directly (no Ray) on fake trials: seconds per call."""
    from study.tracking import MlflowTrialLogger
    from study.trial import META_KEYS

    cls = buffered_logger_class() if fix else MlflowTrialLogger
    store = Store(root, f"callback-{'fix' if fix else 'now'}-{time.monotonic_ns()}")
    logger = cls(store.uri, store.experiment_id, store.parent.run_id, experiment_key="callback",
                 base_tags={"study": "runner_overhead"}, tags_for_config=lambda c: {"arm": str(c.get("arm"))},
                 meta_keys=META_KEYS, resources={"cpu": 1.0, "gpu": 0.0})
    logger.setup()
    profiler = cProfile.Profile() if profile else None
    per_result, per_trial_fixed = 0.0, 0.0
    for t in range(trials):
        config = {"arm": f"arm{t % 3}", "seed": t, "lr": 1e-3, "batch_size": 128, "phase": "tune"}
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
    if fix:   # the fix must still record every value
        from study import tracking
        c = tracking.client(store.uri)
        run = c.search_runs([store.experiment_id], "tags.trial_id = 't00000'")[0]
        assert len(c.get_metric_history(run.info.run_id, "val/acc")) == reports
    shutil.rmtree(store.root, ignore_errors=True)
    return out


def buffered_logger_class():
    """Candidate fix (not in study/): the same records with far fewer SQLite transactions.

    study.tracking.MlflowTrialLogger writes every result as its own log_batch (plus two
    set_tag calls on a trial's first result) on Tune's controller thread; each is at least one
    SQLite commit (an fsync). This subclass keeps a trial's metrics (and placement tags) in
    memory and writes them as one log_batch per run at most every `flush_interval_s`, always
    before a trial's run is closed (complete / error), at the end of the experiment, and in
    `get_state`, which Tune calls when it snapshots the experiment: whatever a resumed study
    will not re-run is in MLflow first, so --resume still leaves one value per epoch, no gaps.
    """
    from mlflow.entities import Metric, RunTag

    from study.tracking import MlflowTrialLogger

    class Buffered(MlflowTrialLogger):
        flush_interval_s = 1.0

        def _reset(self):
            super()._reset()
            self._buffer: dict[str, tuple[list, list]] = {}
            self._flushed_at = time.monotonic()

        def __getstate__(self):
            self.flush()
            return {**super().__getstate__(), "_buffer": {}}

        def flush(self) -> None:
            buffer, self._buffer = getattr(self, "_buffer", {}), {}
            for run_id, (metrics, tags) in buffer.items():
                for i in range(0, max(len(metrics), 1), 1000):
                    self.mlflow.log_batch(run_id, metrics=metrics[i:i + 1000], tags=tags if i == 0 else [])
            self._flushed_at = time.monotonic()

        def on_trial_result(self, iteration, trials, trial, result, **info):
            run_id = self.run_id(trial)
            metrics, tags = self._buffer.setdefault(run_id, ([], []))
            if result.get("node_id") and self._placement.get(run_id) != (result["node_id"], result.get("pid")):
                self._placement[run_id] = (result["node_id"], result.get("pid"))
                tags += [RunTag("node_id", str(result["node_id"])), RunTag("worker_pid", str(result.get("pid", "")))]
            step = int(result.get("epoch", result.get("training_iteration", 0)))
            if not result.get("diverged") and step > self._last_step.get(run_id, 0):
                now = int(time.time() * 1000)
                metrics += [Metric(k, float(v), now, step) for k, v in result.items()
                            if ("/" in k or k == "epoch") and isinstance(v, (int, float)) and not isinstance(v, bool)]
                self._last_step[run_id] = step
            if time.monotonic() - self._flushed_at >= self.flush_interval_s:
                self.flush()

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.flush()
            super().on_trial_complete(iteration, trials, trial, **info)

        def on_trial_error(self, iteration, trials, trial, **info):
            self.flush()
            super().on_trial_error(iteration, trials, trial, **info)

        def on_experiment_end(self, trials, **info):
            self.flush()

        def get_state(self):
            self.flush()
            return None

    return Buffered


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
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile of the callback")
    args = parser.parse_args(argv)

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # what study.protocol.run_study sets before its Tuners run
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import ray

    from trainables.data import load_dataset

    dataset = load_dataset("mnist-5k")
    print(machine_line())
    print(f"Ray {ray.__version__}, num_cpus=2, {CONCURRENCY} trials at a time (1 CPU each); "
          f"{args.repeats} runs per measurement, interleaved, median")
    root = Path(tempfile.mkdtemp(prefix="runner-overhead-"))
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1")
    try:
        per_trial = {   # label -> (trials, run_experiment keywords)
            "reuse, ckpt, MLflow on (run_phase)": (args.trials, dict(reuse=True, mlflow="on", checkpoints=True)),
            "no reuse, ckpt, MLflow on": (args.trials_no_reuse, dict(reuse=False, mlflow="on", checkpoints=True)),
            "reuse, ckpt, MLflow off": (args.trials, dict(reuse=True, mlflow="off", checkpoints=True)),
            "reuse, no ckpt, MLflow off": (args.trials, dict(reuse=True, mlflow="off", checkpoints=False)),
            "reuse, ckpt, MLflow buffered (fix)": (args.trials, dict(reuse=True, mlflow="buffered", checkpoints=True)),
        }
        throughput = {
            "MLflow on": dict(reuse=True, mlflow="on"),
            "MLflow off": dict(reuse=True, mlflow="off"),
            "MLflow buffered (candidate fix)": dict(reuse=True, mlflow="buffered"),
        }
        measures = {("trial", k): (lambda n=n, kw=kw: run_experiment(
            root, dataset, trials=n, reports=args.reports, label="trial", **kw))
            for k, (n, kw) in per_trial.items()}
        measures.update({("result", k): (lambda kw=kw: run_experiment(
            root, dataset, trials=args.throughput_trials, reports=args.throughput_reports, checkpoints=False,
            label="result", **kw)) for k, kw in throughput.items()})
        values = interleaved(measures, args.repeats)
    finally:
        ray.shutdown()
    alone = {fix: [callback_alone(root, trials=20, reports=50, fix=fix, profile=False) for _ in range(args.repeats)]
             for fix in (False, True)}
    profile = None if args.no_profile else callback_alone(root, trials=20, reports=50, fix=False, profile=True)
    shutil.rmtree(root, ignore_errors=True)

    print()
    print(f"per trial: {args.trials} trials ({args.trials_no_reuse} without reuse) x {args.reports} reports; "
          "ckpt = a checkpoint directory per report, as the trainables write")
    print(f"  {'configuration':<36}{'wall s':>8}{'s/trial':>9}{'callback s':>12}  runs (s/trial)")
    med = {}
    for k in per_trial:
        runs = values[("trial", k)]
        med[k] = median([r["per_trial"] for r in runs])
        print(f"  {k:<36}{median([r['wall'] for r in runs]):>8.1f}{med[k]:>9.3f}"
              f"{median([r['callback_s'] for r in runs]):>12.2f}  {runs_text([r['per_trial'] for r in runs], '{:.3f}')}")
    print()
    print(f"per result: {args.throughput_trials} trials x {args.throughput_reports} reports, no checkpoints, "
          "actor reuse; results/s from the first result to the last")
    print(f"  {'configuration':<36}{'results/s':>10}{'wall s':>8}{'callback ms/result':>20}  runs (results/s)")
    rps = {}
    for k in throughput:
        runs = values[("result", k)]
        rps[k] = median([r["results_per_s"] for r in runs])
        cb = median([1000 * r["callback_s"] / max(r["results"], 1) for r in runs])
        print(f"  {k:<36}{rps[k]:>10.0f}{median([r['wall'] for r in runs]):>8.1f}{cb:>20.2f}"
              f"  {runs_text([r['results_per_s'] for r in runs], '{:.0f}')}")
    print()
    print("the MLflow callback alone (no Ray; 20 trials x 50 results each on a fresh SQLite store):")
    for fix, label in ((False, "study.tracking.MlflowTrialLogger"), (True, "candidate fix: buffered")):
        total = [r["ms_per_trial_fixed"] + 50 * r["ms_per_result"] for r in alone[fix]]
        print(f"  {label:<34}{median([r['ms_per_result'] for r in alone[fix]]):7.2f} ms/result  "
              f"{median([r['ms_per_trial_fixed'] for r in alone[fix]]):7.1f} ms/trial start+complete  "
              f"{median(total):7.0f} ms per 50-result trial  (runs: {runs_text(total, '{:.0f}')})")
    if profile:
        print("  cProfile of the callback as it is (top 12 by own time):")
        for line in profile["profile"].splitlines():
            if line.strip():
                print("    " + line)
    reuse = med["reuse, ckpt, MLflow on (run_phase)"]
    no_reuse = med["no reuse, ckpt, MLflow on"]
    on, off = rps["MLflow on"], rps["MLflow off"]
    print()
    print(f"summary: {reuse:.3f} s overhead per trial with actor reuse (target <= {TARGET_PER_TRIAL_S} s: "
          f"{verdict(reuse <= TARGET_PER_TRIAL_S)}; {no_reuse / reuse:.1f}x less than without reuse, {no_reuse:.2f} s); "
          f"{on:.0f} results/s with MLflow on (target >= {TARGET_RESULTS_PER_S:.0f}: "
          f"{verdict(on >= TARGET_RESULTS_PER_S)}; {off / on:.1f}x fewer than the {off:.0f}/s with MLflow off; "
          f"candidate fix {rps['MLflow buffered (candidate fix)']:.0f}/s)")


if __name__ == "__main__":
    main()
