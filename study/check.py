"""Before any trial, what would otherwise fail deep inside one (``python -m study.run STUDY
--check`` runs exactly this, in seconds; every study run starts with it):

1. every trainable of the study (its own and its stages') imports and takes the protocol's
   arguments ``(config, report, *, dataset=None, resume_from=None)``;
2. a trainable that declares a schema (a ``schema`` attribute: a mapping of its config keys,
   or their names) accepts every key the study sets: fixed, level and search-space keys;
3. the data loads;
4. a dry trial: one epoch of the baseline arm at the budget's data, from the first point of its
   search space (after one epoch of each upstream it builds on), reports the study's metric,
   and, asked to evaluate the test set, a ``test/`` metric.

Every failure is a ``StudyError`` naming the file, the study, the field and the fix.
"""
from __future__ import annotations

import hashlib
import inspect
import os
import pickle
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from search_spaces import default_point
from study.declared import claims, schema_defaults, schema_keys
from study.configs import classify_config, upstream_config, resolve_ref
from study.trial import META_KEYS, non_finite
from study.loader import StudyError, where_raised
from study.records import PHASE_REPLICATE
from study.spec import Budget, Study
from study.upstream import Upstream, Use, ref_label


@dataclass(frozen=True)
class Loaded:
    """A study's code and data, ready for trials."""
    trainables: Mapping[str, Callable]     # label (``meta.trainable``) -> function
    data: Any                              # what ``Study.data`` loaded (None: the trainable loads it)
    data_sha256: str


@dataclass(frozen=True)
class Timing:
    """What a dry trial's reports took: the first one (the trial's set-up and its first epoch)
    and, with two epochs or more, each later one (an epoch alone)."""
    first_s: float
    epoch_s: float | None = None

    @property
    def setup_s(self) -> float:
        return max(0.0, self.first_s - self.epoch_s) if self.epoch_s is not None else 0.0

    @property
    def per_epoch_s(self) -> float:
        """One epoch; with a single epoch timed, its set-up counts in (an upper bound)."""
        return self.epoch_s if self.epoch_s is not None else self.first_s


@dataclass(frozen=True)
class DryTrial:
    arm: str
    seconds: float                         # the whole dry trial, data and model set-up included
    report: Mapping[str, Any]              # its last (final) report
    timing: Timing                         # the baseline arm's trainable
    upstream_timing: Mapping[str, Timing]  # stage trainable label -> the upstream epochs it ran


def check(study: Study, budget: Budget, origin: str, data_dir: str | None, epochs: int = 1) -> tuple[Loaded, DryTrial]:
    """Steps 1-4; ``epochs`` = 2 times an epoch apart from the trial's set-up (cost estimates)."""
    return check_data(study, budget, origin, data_dir, check_code(study, origin), epochs)


def check_data(study: Study, budget: Budget, origin: str, data_dir: str | None, trainables: Mapping[str, Callable],
               epochs: int = 1) -> tuple[Loaded, DryTrial]:
    """Steps 3-4, for trainables that passed steps 1-2 (``check_code``): the data, the dry trial.
    The seconds-long part: a study runs it while Ray starts."""
    data, sha = load_data(study, budget, origin, data_dir)
    loaded = Loaded(dict(trainables), data, sha)
    return loaded, dry_trial(study, budget, loaded, origin, data_dir, epochs)


def check_code(study: Study, origin: str) -> dict[str, Callable]:
    """Steps 1-2 (what ``--dry-run`` checks too): label -> each trainable of the study."""
    trainables = {}
    for label, (field, ref) in _refs(study).items():
        trainables[label] = _resolve(ref, field, study, origin)
        _check_signature(trainables[label], field, study, origin)
        try:
            claims(trainables[label])
        except ValueError as error:
            raise StudyError(origin, f"{field} {label}: {error}", study.name) from None
    check_keys(study, trainables, origin)
    return trainables


def _refs(study: Study) -> dict[str, tuple[str, Any]]:
    refs = {ref_label(study.trainable): ("trainable", study.trainable)}
    for p in study.upstreams():
        refs.setdefault(ref_label(p.stage.trainable), (f"stage {p.stage.name!r} trainable", p.stage.trainable))
    return refs


def _resolve(ref, field: str, study: Study, origin: str) -> Callable:
    label = ref_label(ref)
    try:
        fn = resolve_ref(ref)
    except (ImportError, AttributeError) as error:
        raise StudyError(origin, f"{field} {label!r} cannot be imported ({type(error).__name__}: {error}); name an "
                                 "importable function as 'package.module:function', or pass the function", study.name)
    except Exception as error:  # noqa: BLE001 - the module raised while being imported
        raise StudyError(origin, f"{field} {label!r}: importing it raised {type(error).__name__}: {error}\n"
                                 f"{where_raised(error, None)}", study.name) from None
    if not callable(fn):
        raise StudyError(origin, f"{field} {label!r} is not a function", study.name)
    return fn


def _check_signature(fn: Callable, field: str, study: Study, origin: str) -> None:
    try:
        inspect.signature(fn).bind({}, print, dataset=None, resume_from=None)
    except TypeError as error:
        raise StudyError(origin, f"{field} {ref_label(fn)} must take (config, report, *, dataset=None, "
                                 f"resume_from=None): {error}", study.name) from None
    except ValueError:          # no signature to read (a builtin): the dry trial will tell
        pass


# -- keys ------------------------------------------------------------------------------------
def check_keys(study: Study, trainables: Mapping[str, Callable], origin: str) -> None:
    checks = [(ref_label(study.trainable), _study_keys(study))]
    checks += [(ref_label(p.stage.trainable), _upstream_keys(p)) for p in study.upstreams()]
    for label, keys in checks:
        accepted = schema_keys(trainables[label])
        if accepted is None:
            continue
        for key, where in keys:
            if key not in accepted:
                raise StudyError(origin, f"{where} sets {key!r}, which trainable {label} does not accept "
                                         f"(its schema: {', '.join(sorted(accepted))}); remove the key, or add it "
                                         "to the trainable", study.name)


def _study_keys(study: Study) -> Iterator[tuple[str, str]]:
    yield from ((k, "fixed") for k in study.fixed)
    for f in study.factors:
        for level in f.levels:
            where = f"factor {f.name!r} level {level.name!r}"
            yield from ((k, where) for k in (*level.settings, *level.settings_from))
            yield from ((k, f"{where} (uses)") for use in level.uses for k in (use.into, *use.shared))
    yield from ((p.name, f"search_space {study.search_space.name!r}") for p in study.search_space.params)


def _upstream_keys(upstream: Upstream) -> Iterator[tuple[str, str]]:
    stage = upstream.stage
    yield from ((k, f"stage {stage.name!r} fixed") for k in (*stage.fixed, *stage.inherit))
    yield from ((k, f"upstream {upstream.key!r}") for k in upstream.settings)
    yield from ((p.name, f"stage {stage.name!r} search_space") for p in stage.search_space.params)


# -- data ------------------------------------------------------------------------------------
def load_data(study: Study, budget: Budget, origin: str, data_dir: str | None) -> tuple[Any, str]:
    """The study's data handle and its checksum; without a loader, the dataset name stands in."""
    if study.data is None:
        return None, f"unchecked:{budget.dataset}"
    if study.data.names and budget.dataset not in study.data.names:
        raise StudyError(origin, f"--dataset / budget dataset {budget.dataset!r} is unknown to "
                                 f"{ref_label(study.data.load)}; datasets: {', '.join(study.data.names)}", study.name)
    load = _resolve(study.data.load, "data.load", study, origin)
    try:
        data = load(budget.dataset, data_dir)
    except Exception as error:  # noqa: BLE001 - a loader's failure is the user's to fix
        raise StudyError(origin, f"data: {ref_label(study.data.load)}({budget.dataset!r}, {data_dir!r}) raised "
                                 f"{type(error).__name__}: {error}\n{where_raised(error, None)}", study.name) from None
    sha = getattr(data, "sha256", None) or hashlib.sha256(pickle.dumps(data, protocol=4)).hexdigest()
    return data, str(sha)


# -- the dry trial ---------------------------------------------------------------------------
def dry_trial(study: Study, budget: Budget, loaded: Loaded, origin: str, data_dir: str | None,
              epochs: int = 1) -> DryTrial:
    arm = next(a for a in study.arms() if a.is_baseline)
    fn = loaded.trainables[ref_label(study.trainable)]
    config = {**classify_config(arm, study, budget, budget.tune_seed, PHASE_REPLICATE, data_dir), "epochs": epochs}
    config.update(default_point(study.search_space.resolve(arm.settings), {**schema_defaults(fn), **arm.settings}))
    started = time.perf_counter()
    upstream_timing: dict[str, Timing] = {}
    with tempfile.TemporaryDirectory(prefix="study-check-") as scratch:
        for use in arm.uses:
            config[use.into], timing = _dry_upstream(use, study, budget, loaded, origin, data_dir, scratch, epochs)
            upstream_timing[ref_label(use.upstream.stage.trainable)] = timing
        own = {k: v for k, v in config.items() if k not in META_KEYS + tuple(u.slot for u in arm.uses)}
        reports, _, timing = _dry_epochs(fn, own, loaded.data, f"trainable {ref_label(fn)} (arm {arm.name})", study,
                                         origin)
    report = reports[-1]
    _expect(report, study.metric, f"trainable {ref_label(fn)}", "metric", study, origin)
    if not any(k.startswith("test/") for k in report):
        raise StudyError(origin, f"trainable {ref_label(fn)}: asked for evaluate_test=True, its last report has no "
                                 f"test/ metric ({', '.join(sorted(report))}); the replicates are compared on test "
                                 "metrics: report them (test/acc, ...) in the last epoch's report", study.name)
    return DryTrial(arm.name, time.perf_counter() - started, report, timing, upstream_timing)


def _dry_upstream(use: Use, study: Study, budget: Budget, loaded: Loaded, origin: str, data_dir: str | None,
                  scratch: str, epochs: int) -> tuple[str, Timing]:
    """``epochs`` of the upstream an arm uses: the path of the file it delivers, and their timing."""
    upstream = use.upstream
    fn = loaded.trainables[ref_label(upstream.stage.trainable)]
    config = {**upstream_config(upstream, study, budget, budget.tune_seed, data_dir), "epochs": epochs}
    config.update(default_point(upstream.stage.search_space.resolve(config), schema_defaults(fn)))
    own = {k: v for k, v in config.items() if k not in META_KEYS}
    field = f"stage {upstream.stage.name!r} trainable {ref_label(fn)} (upstream {upstream.key})"
    reports, files, timing = _dry_epochs(fn, own, loaded.data, field, study, origin, keep=use.file, scratch=scratch)
    _expect(reports[-1], upstream.stage.metric, field, f"stage {upstream.stage.name!r} metric", study, origin)
    if use.file not in files:
        raise StudyError(origin, f"{field}: its final checkpoint has no {use.file!r}, which arm levels use "
                                 f"(into {use.into!r}); write it into the last checkpoint directory", study.name)
    return files[use.file], timing


def _dry_epochs(fn: Callable, config: dict, data: Any, field: str, study: Study, origin: str,
                keep: str | None = None, scratch: str | None = None) -> tuple[list[dict], dict[str, str], Timing]:
    from study.trial import normalize

    reports: list[dict] = []
    files: dict[str, str] = {}
    times: list[float] = []
    started = time.perf_counter()

    def report(metrics: Mapping[str, Any], checkpoint_dir: str) -> None:
        times.append(time.perf_counter() - started)
        if not os.path.isdir(str(checkpoint_dir)):
            raise StudyError(origin, f"{field} reported without a checkpoint directory ({checkpoint_dir!r}): "
                                     "write the checkpoint into a directory, then report(metrics, that directory)",
                             study.name)
        reports.append(normalize(metrics, config.get("epochs"), len(reports) + 1))
        if keep and os.path.isfile(os.path.join(checkpoint_dir, keep)):
            files[keep] = shutil.copy(os.path.join(checkpoint_dir, keep), os.path.join(scratch, keep))

    try:
        fn(config, report, dataset=data, resume_from=None)
    except StudyError:
        raise
    except Exception as error:  # noqa: BLE001 - the user's code failed: say where
        source = inspect.getsourcefile(fn) if inspect.isfunction(fn) else None
        raise StudyError(origin, f"the dry trial of {field}, {config.get('epochs')} epoch(s), raised "
                                 f"{type(error).__name__}: {error}\n{where_raised(error, _path(source))}",
                         study.name) from None
    if not reports:
        raise StudyError(origin, f"{field} returned without a report: call report(metrics, checkpoint_dir) "
                                 "once per epoch", study.name)
    epoch_s = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else None
    return reports, files, Timing(times[0], epoch_s)


def _expect(report: Mapping[str, Any], metric: str, field: str, name: str, study: Study, origin: str) -> None:
    if metric not in report:
        raise StudyError(origin, f"{name}: {field} reported {', '.join(sorted(report))} after one epoch, not "
                                 f"{metric!r}; report it every epoch, or select on a metric it reports", study.name)


def _path(source: str | None) -> Path | None:
    return Path(source).resolve() if source else None


def describe(study: Study, loaded: Loaded, dry: DryTrial) -> list[str]:
    """What ``--check`` prints."""
    lines = []
    for label, fn in loaded.trainables.items():
        keys = schema_keys(fn)
        lines.append(f"  trainable {label}: imports, takes (config, report, *, dataset, resume_from)"
                     + (f", its schema accepts the study's keys ({len(keys)} keys)" if keys else ", no schema"))
    lines.append(f"  data: {ref_label(study.data.load) if study.data else 'loaded by the trainable'}, "
                 f"sha256 {loaded.data_sha256[:16]}")
    tests = sorted(k for k in dry.report if k.startswith("test/") and "_class_" not in k)
    shown = ", ".join(f"{k} {dry.report[k]:.4g}" for k in [study.metric, *tests[:3]])
    t = dry.timing
    timed = f"{t.setup_s:.1f} s set-up and {t.per_epoch_s:.2f} s per epoch" if t.epoch_s is not None else \
        f"one epoch in {t.first_s:.1f} s, set-up included"
    lines.append(f"  dry trial: arm {dry.arm}, {timed}; last report: {shown}")
    bad = non_finite(dry.report)
    if bad:
        lines.append(f"  warning: it reported {', '.join(f'{k} = {v}' for k, v in bad.items())}: in a study, such "
                     "a trial counts as diverged (failed)")
    return lines

