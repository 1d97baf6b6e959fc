"""The built-in studies, keyed by name: the study files of ``builtin_studies/`` (one per study), loaded
as any user's study file is (``study.loader``). Each answers questions from the write-ups in
``shared/seeds`` (000-004), fairly: nuisance hyperparameters tuned per arm with the same budget,
then the best configuration replicated on the same seeds for every arm."""
from __future__ import annotations

import importlib

import builtin_studies
from study.loader import studies_in
from study.spec import Study

STUDIES: dict[str, Study] = {}
ORIGINS: dict[str, str] = {}        # study name -> the file that defines it


def register(study: Study, origin: str) -> Study:
    if study.name in STUDIES:
        raise ValueError(f"study {study.name!r} is defined twice: {ORIGINS[study.name]} and {origin}")
    STUDIES[study.name] = study
    ORIGINS[study.name] = origin
    return study


def get_study(name: str) -> Study:
    if name not in STUDIES:
        raise KeyError(f"unknown study {name!r}; registered studies: {', '.join(sorted(STUDIES))}")
    return STUDIES[name]


for _name in builtin_studies.BUILTIN:
    _origin = f"builtin_studies/{_name}.py"
    for _found in studies_in(importlib.import_module(f"builtin_studies.{_name}"), _origin):
        register(_found.study, _origin)
