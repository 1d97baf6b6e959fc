"""The built-in studies, keyed by name, and finding any study: one of ours by name, a study file
or a module (``find``).

Our studies are the study files of ``builtin_studies/`` (one per study), loaded as any user's
study file is (``study.loader``): by path, from the folder, so the runner names no study of
ours in its code. Each answers questions from the write-ups in ``shared/seeds`` (000-004),
fairly: nuisance hyperparameters tuned per arm and seed with the same budget, then each
choice replicated on its seed.
"""
from __future__ import annotations

from pathlib import Path

from study.loader import BUILTIN_DIR, Found, StudyError, import_module, load_file, pick, studies_in
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


def find(target: str) -> list[Found]:
    """The studies ``target`` names: one, or every study of a file or module named without
    ``:NAME``. Raises ``StudyError``."""
    if target in STUDIES:
        return [Found(STUDIES[target], ORIGINS[target])]
    spec, sep, name = target.rpartition(":")
    if not sep or "/" in name:
        spec, name = target, ""
    if spec.endswith(".py") or "/" in spec or Path(spec).is_file():
        module, origin = load_file(spec)
    elif sep:
        module, origin = import_module(spec)
    else:
        raise StudyError(target, f"no such study. Built-in studies: {', '.join(sorted(STUDIES))}; or give a study "
                                 "file (path/to/file.py[:NAME]) or a module (package.module:NAME)")
    found = pick(studies_in(module, origin), name, origin)
    for f in found:
        if f.study.name in STUDIES and STUDIES[f.study.name] is not f.study:
            raise StudyError(origin, f"two studies are named {f.study.name!r}: this one and the built-in "
                                     f"{ORIGINS[f.study.name]}; the name is the MLflow experiment, so rename yours",
                             f.study.name)
    return found


def _register_builtin() -> None:
    """Every study file of ``builtin_studies/`` (files that define no study, like the shared
    ``mnist.py``, are not study files)."""
    for path in sorted(BUILTIN_DIR.glob("*.py")):
        if path.name.startswith("_"):
            continue
        origin = f"{BUILTIN_DIR.name}/{path.name}"
        module, _ = load_file(str(path))
        try:
            found = studies_in(module, origin)
        except StudyError:
            continue
        for f in found:
            register(f.study, origin)


_register_builtin()
