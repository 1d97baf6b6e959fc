"""What the report's figures are drawn from: a study's runs, evaluations, trained models and
pretraining, each fetched once on first use (several figures share it).

A figure whose input is not in the store raises ``MissingInputs`` with the reason;
``analysis.figures`` lists that figure as skipped, never drops it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd
from torch import nn

from analysis import artifacts
from analysis.plotting import FigureOptions
from study import records
from study.records import Outcome, PHASE_REPLICATE, STAGE_UPSTREAM


class MissingInputs(Exception):
    """A figure's inputs are not in the store; the message says which."""


@dataclass(frozen=True)
class PretrainingRun:
    run_id: str
    key: str                         # the upstream stage's key (the ``arm`` tag of its runs)
    seed: int | None


@dataclass(frozen=True)
class Pretraining:
    """The pretrained network the encoder figures show, or why there is none (``run`` None)."""
    run: PretrainingRun | None
    net: nn.Module | None = None     # the Autoencoder, else the ConvEncoder
    dataset: str = ""
    why_missing: str = ""

    @property
    def seed(self) -> int:
        return self.run.seed if self.run.seed is not None else 0

    @property
    def description(self) -> str:
        return f"pretraining {self.run.key}, seed {self.seed} (run {self.run.run_id[:8]})"


@dataclass(frozen=True)
class LatentSource:
    """The network whose latent space the latent figures show (the pretraining, else the best
    arm's classifier), or why there is none (``net`` None)."""
    net: nn.Module | None
    dataset: str = ""
    description: str = ""
    why_missing: str = ""


class FigureInputs:
    """The inputs of the figures of one report; ``analysis`` is an ``analysis.report.Analysis``."""

    def __init__(self, analysis, options: FigureOptions = FigureOptions()):
        self.analysis = analysis
        self.study = analysis.study
        self.options = options

    # -- the best arm's replicate runs ---------------------------------------------------------
    @property
    def best_arm(self) -> str:
        if self.analysis.best_arm is None:
            raise MissingInputs("no completed replicate runs yet")
        return self.analysis.best_arm

    def best_arm_runs(self) -> pd.DataFrame:
        runs = self.study.comparison_runs()
        return runs[runs["arm"] == self.best_arm]

    @cached_property
    def representative(self) -> pd.Series | None:
        """The best arm's completed replicate run whose primary metric is closest to the arm's
        mean; None before there is a best arm."""
        if not self.analysis.best_arm:
            return None
        runs, column = self.best_arm_runs(), f"metrics.{self.analysis.metric}"
        if runs.empty:
            return None
        if column in runs and runs[column].notna().any():
            distance = (runs[column] - runs[column].mean()).abs()
            return runs.loc[distance.idxmin()]
        return runs.iloc[0]

    @cached_property
    def evaluations(self) -> dict[int, dict]:
        """seed -> ``evaluation.json`` of each replicate run of the best arm that logged one."""
        evaluations = {}
        for run in self.best_arm_runs().sort_values("seed").itertuples(index=False):
            path = self.study.artifact(run.run_id, "evaluation.json")
            if path is not None:
                evaluations[int(run.seed)] = artifacts.read_evaluation(path)
        return evaluations

    @cached_property
    def classifier(self) -> nn.Module:
        """The trained classifier of the representative run, rebuilt from its ``model.pt``."""
        run = self.representative
        model_pt = self.study.artifact(run["run_id"], "model.pt")
        if model_pt is None:
            raise MissingInputs(f"run {run['run_id']} ({run['arm']}, seed {run['seed']}) logged no model.pt")
        meta_path = self.study.artifact(run["run_id"], "meta.json")
        if meta_path is not None:
            meta = json.loads(meta_path.read_text())
            config, n_classes = meta["config"], len(meta.get("class_names") or [])
        else:
            params = {c.removeprefix("params."): v for c, v in run.items()
                      if str(c).startswith("params.") and isinstance(v, str)}
            config, n_classes = artifacts.config_from_params(params), 0
        if not n_classes:
            dataset = config.get("dataset", self.dataset_of(run))
            n_classes = len(artifacts.class_names_for(dataset, config.get("task", "digits")))
        return artifacts.load_classifier(model_pt, config, n_classes)

    def dataset_of(self, run: pd.Series) -> str:
        return str(run.get("params.dataset") or self.study.parent_tags.get("dataset") or "mnist-5k")

    # -- pretraining ---------------------------------------------------------------------------
    @cached_property
    def pretraining_runs(self) -> list[PretrainingRun]:
        """Pretraining runs, best first: the pretraining the best arm builds on (same seed as
        its representative run), then replicate before tune runs, then the autoencoders reused
        from earlier invocations."""
        wanted_key, seed = self._upstream_of_best_arm()
        candidates = self.study.select(stage=STAGE_UPSTREAM, outcome=Outcome.COMPLETED)
        # Autoencoders reused from earlier invocations are listed in the parent's pretrained_runs
        # tag ({"key/seed": run_id}); they are trial runs of another parent.
        reused = self._reused_pretraining()
        order = [reused[(wanted_key, seed)]] if (wanted_key, seed) in reused else []
        ranked = candidates.assign(
            _want=(candidates["arm"] != wanted_key), _rep=(candidates["phase"] != PHASE_REPLICATE),
            _seed=(candidates["seed"].fillna(-1) != (-1 if seed is None else seed)),
        ).sort_values(["_want", "_rep", "_seed", "seed"])
        order += [PretrainingRun(r.run_id, r.arm, None if pd.isna(r.seed) else int(r.seed))
                  for r in ranked.itertuples(index=False)]
        order += list(reused.values())
        unique: dict[str, PretrainingRun] = {}       # run id -> its first (best) place
        for run in order:
            unique.setdefault(run.run_id, run)
        return list(unique.values())

    def _upstream_of_best_arm(self) -> tuple[str | None, int | None]:
        """(upstream key, seed) of the pretraining the representative run of the best arm used."""
        run = self.representative
        if run is None:
            return None, None
        uses = records.artifact_refs(run)
        for slot in ("encoder_artifact", "denoiser_artifact"):
            if slot in uses:
                return uses[slot].upstream, int(run["seed"])
        return None, None

    def _reused_pretraining(self) -> dict[tuple[str, int], PretrainingRun]:
        """(key, seed) -> run of the parent's ``pretrained_runs``, in the order of its keys."""
        listed = records.upstream_runs(self.study.parent_tags)
        return {(key, seed): PretrainingRun(run_id, key, seed)
                for (key, seed), run_id in sorted(listed.items(), key=lambda item: f"{item[0][0]}/{item[0][1]}")}

    @cached_property
    def pretraining(self) -> Pretraining:
        """The pretraining the best arm builds on, else any completed pretraining run that
        logged encoder.pt/autoencoder.pt. (A user's upstream stage writes files of its own:
        not drawn.)"""
        try:
            for run in self.pretraining_runs:
                encoder = self.study.artifact(run.run_id, "encoder.pt")
                autoencoder = self.study.artifact(run.run_id, "autoencoder.pt")
                if autoencoder is not None:
                    net, payload = artifacts.load_autoencoder(autoencoder)
                elif encoder is not None:
                    net, payload = artifacts.load_encoder(encoder)
                else:
                    continue
                dataset = payload.get("dataset", self.study.parent_tags.get("dataset", "mnist-5k"))
                return Pretraining(run, net, dataset)
        except Exception as err:  # noqa: BLE001 - reported, not raised
            return Pretraining(None, why_missing="failed to find a pretraining run of "
                               f"trainables.autoencoder: {type(err).__name__}: {err}")
        return Pretraining(None, why_missing="the study has no completed pretraining run with "
                           "encoder.pt/autoencoder.pt")

    def autoencoders_by_key(self, seed: int | None) -> dict[str, tuple[PretrainingRun, Path]]:
        """One autoencoder.pt per pretraining key (the given seed where there is one)."""
        order = sorted(self.pretraining_runs, key=lambda run: run.seed != seed)  # stable: keeps the ranking
        found: dict[str, tuple[PretrainingRun, Path]] = {}
        for run in order:
            if run.key in found:
                continue
            path = self.study.artifact(run.run_id, "autoencoder.pt")
            if path is not None:
                found[run.key] = (run, path)
        return dict(sorted(found.items()))

    @cached_property
    def latent_source(self) -> LatentSource:
        """The pretrained network; without one, the best arm's classifier (its encoder's
        latent or its penultimate layer)."""
        pretraining = self.pretraining
        if pretraining.run is not None:
            return LatentSource(pretraining.net, pretraining.dataset, pretraining.description)
        why = pretraining.why_missing
        run = self.representative
        if run is None:
            return LatentSource(None, why_missing=why)
        try:
            return LatentSource(self.classifier, self.dataset_of(run),
                                f"best arm {self.best_arm}, seed {int(run['seed'])} "
                                "(classifier, no pretraining)")
        except Exception as err:  # noqa: BLE001
            return LatentSource(None, why_missing=f"{why}; the best arm's classifier could not "
                                f"be loaded either ({err})")
