"""The Ray cluster a study runs on: joining it, and what each trial gets there.

``connect`` joins ``--address`` / ``RAY_ADDRESS``, else starts a private local Ray on loopback.
``plan_trials`` checks the request (``--gpus-per-trial``, ``--cpus-per-trial``,
``--max-concurrent``, ``--autoscaling``) against the cluster's resources and returns what it
decided (``TrialResources``); the options keep what the user asked for.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from study import terminal

# Trials per GPU when the cluster has GPUs and --gpus-per-trial is not given: MNIST-sized
# trials leave a GPU mostly idle, so several share one (benchmarks/packing.py measures it).
DEFAULT_GPUS_PER_TRIAL = 0.25
AUTOSCALING_CONCURRENCY = 16     # with --autoscaling and no --max-concurrent


class UsageError(ValueError):
    """Bad option value or cluster mismatch found before any trial starts (exit 2)."""


@dataclass(frozen=True)
class TrialResources:
    """Each trial's share of the cluster, and how many trials run at once."""
    cpus: float
    gpus: float
    max_concurrent: int

    @property
    def device(self) -> str:
        """Where a trial trains: "cuda" with a GPU share, else "cpu" (the one device decision)."""
        return "cuda" if self.gpus > 0 else "cpu"

    @property
    def tune(self) -> dict[str, float]:
        """As ``tune.with_resources`` takes them."""
        return {"cpu": self.cpus, "gpu": self.gpus}


def connect(address: str | None, verbose: int):
    """The ``ray`` module, initialised (once per process)."""
    import ray
    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, **terminal.ray_init_kwargs(verbose))
    else:
        # A private local cluster on loopback; "local" never joins a stale cluster file.
        ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1",
                 **terminal.ray_init_kwargs(verbose),
                 object_store_memory=min(2 * 1024 ** 3, _object_store_default()))
    return ray


def expected_resources(address: str | None) -> dict[str, float]:
    """What the cluster a run would use has, without starting one (``--dry-run``, ``--check``):
    the cluster at ``address`` / ``RAY_ADDRESS`` (joined: it is running), else this machine, as a
    private local Ray would see it."""
    if address or os.environ.get("RAY_ADDRESS"):
        import ray
        return dict(connect(address, terminal.QUIET).cluster_resources())
    import torch
    return {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}


def _object_store_default() -> int:
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        return int(pages * size * 0.1)
    except (ValueError, OSError):
        return 512 * 1024 ** 2


def plan_trials(cluster: Mapping[str, float], opts) -> TrialResources:
    """What each trial gets on a cluster with ``cluster`` resources (``ray.cluster_resources()``)
    for the request in ``opts`` (``protocol.RunOptions``). Raises UsageError for a request the
    cluster cannot meet, unless it grows on demand (``opts.autoscaling``)."""
    cpus, gpus = cluster.get("CPU", 0.0), cluster.get("GPU", 0.0)
    gpus_per_trial = opts.gpus_per_trial
    if gpus_per_trial is None:
        gpus_per_trial = DEFAULT_GPUS_PER_TRIAL if gpus > 0 else 0.0
        if gpus > 0:
            terminal.log(f"the cluster has {gpus:g} GPUs: {DEFAULT_GPUS_PER_TRIAL:g} GPU per trial "
                         "(--gpus-per-trial to change)")
    if gpus_per_trial > 0 and gpus == 0 and not opts.autoscaling:
        raise UsageError(
            f"--gpus-per-trial {gpus_per_trial:g} asks for GPUs but the Ray cluster has none "
            f"(resources: {int(cpus)} CPUs). Drop --gpus-per-trial to run on CPUs, connect to a GPU "
            f"cluster with --address, or pass --autoscaling if the cluster adds GPU nodes on demand.")
    if opts.cpus_per_trial > cpus and not opts.autoscaling:
        raise UsageError(f"--cpus-per-trial {opts.cpus_per_trial:g} exceeds the cluster's {cpus:g} CPUs")
    if opts.max_concurrent:
        concurrent = opts.max_concurrent
    elif opts.autoscaling:
        # The cluster's size now says nothing about its size under load.
        terminal.log(f"autoscaling cluster: up to {AUTOSCALING_CONCURRENCY} trials at a time "
                     "(--max-concurrent to change)")
        concurrent = AUTOSCALING_CONCURRENCY
    else:
        limits = [int(cpus // opts.cpus_per_trial) if opts.cpus_per_trial else 1]
        if gpus_per_trial > 0 and gpus > 0:
            limits.append(int(round(gpus / gpus_per_trial, 4)))
        concurrent = max(1, min(limits))
    return TrialResources(opts.cpus_per_trial, gpus_per_trial, concurrent)
