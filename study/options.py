"""What the command asked for (``python -m study.run``), as every part of the runner reads it."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from study import records
from study.spec import Budget, Study


@dataclass
class RunOptions:
    """What the command asked for (``python -m study.run``)."""
    study: Study
    budget_name: str
    budget: Budget
    gpus_per_trial: float | None = 0.0   # None: the cluster decides (study.cluster.plan_trials)
    cpus_per_trial: float = 1.0
    max_concurrent: int | None = None
    address: str | None = None
    tracking_uri: str = ""
    results_dir: Path = field(default_factory=records.default_results_dir)
    storage: str | None = None
    data_dir: str | None = None
    resume: bool = False
    fresh: bool = False
    autoscaling: bool = False
    command: str = ""
    verbose: int = 1                     # 0 --quiet, 1 progress per phase, 2 --verbose (study.terminal)
    max_failures: int = 2                # a phase stops once one error of the trainable's code failed this many trials
    resume_command: str = ""             # the command that continues this run (every option repeated)
    origin: str = ""                     # the file or module that defines the study (errors)
    target: str = ""                     # how the command named it (the --resume hint)

    @property
    def storage_path(self) -> str:
        return self.storage or str(self.results_dir / "tune")
