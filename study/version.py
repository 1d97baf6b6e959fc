"""Which version of a study a run is: its definition and its code, each as a digest.

A study run is the same study as an earlier one only when both are the same: the definition
(``study.json``: factors, arms, settings, search spaces, contrasts, metrics, what its trainables
declare, and the budget as run) and the code (the study file and the modules of its trainables,
loader and stages). An edited study is a new version: ``study.protocol`` runs it instead of
calling the earlier run finished, says what changed, and the analysis reads only the version it
reports (the latest parent run).
"""
from __future__ import annotations

import hashlib
import inspect
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from study import declared
from study.configs import code_version
from study.loader import ROOT, user_modules
from study.spec import Budget, Study
from study.upstream import ref_label


@dataclass(frozen=True)
class Version:
    definition: dict[str, Any]          # what the parent's study.json holds
    definition_sha256: str
    code: dict[str, str]                # source file -> sha256 (16 hex digits)
    code_sha256: str
    user_git: dict[str, Any] | None     # {"commit", "dirty"} of the study file's own repository

    def record(self) -> dict[str, Any]:
        """The ``version`` entry of study.json."""
        return {"definition_sha256": self.definition_sha256, "code_sha256": self.code_sha256,
                "code": self.code, "user_git": self.user_git}


def study_version(study: Study, budget: Budget, trainables: Mapping[str, Callable], origin: str) -> Version:
    """The version of ``study`` run at ``budget`` with its loaded ``trainables``."""
    definition = {**study.definition(), "trainables": declared.record(trainables),
                  "budget": _json_ready(budget.__dict__)}
    code = {_shown(path): _file_digest(path) for path in sorted(_code_files(study, trainables, origin))}
    code.update({f"{u.key} (stage code_version)": code_version(u) for u in study.upstreams()
                 if u.stage.code_version})
    return Version(definition, _digest(definition), code, _digest(code), _user_git(origin))


def changes(old: Mapping[str, Any], new: Version) -> list[str]:
    """What differs between an earlier run's study.json and this version, in a few words each."""
    old_definition = _json_ready({k: v for k, v in old.items() if k != "version"})
    new_definition = _json_ready(new.definition)
    out = []
    for key in sorted(set(old_definition) | set(new_definition)):
        before, after = old_definition.get(key), new_definition.get(key)
        if key == "arms":          # an arm's tuned ranges follow from the search space
            before, after = ([{k: v for k, v in a.items() if k != "tuned"} for a in x or []] for x in (before, after))
        if before == after:
            continue
        if key == "search_space" and before and after:
            ranges = [{p["name"]: p["range"] for p in x["params"]} for x in (before, after)]
            out += [f"search space: {ranges[0].get(n, '(none)')} -> {ranges[1].get(n, '(none)')}"
                    for n in sorted(set(ranges[0]) | set(ranges[1])) if ranges[0].get(n) != ranges[1].get(n)]
            out += ["search space: first guesses or reasons"] if before["params"] != after["params"] and \
                ranges[0] == ranges[1] else []
        else:
            out.append(key)
    old_code = (old.get("version") or {}).get("code") or {}
    if old_code:
        out += [f"code: {name}" for name in sorted(set(old_code) | set(new.code)) if old_code.get(name) != new.code.get(name)]
    elif not old.get("version"):
        out.append("the earlier run recorded no code version")
    return out


def _code_files(study: Study, trainables: Mapping[str, Callable], origin: str) -> set[Path]:
    """The study file, the user's modules it loaded, and the modules of its trainables and loader
    (with their package's other modules, which they may import)."""
    files: set[Path] = set()
    origin_path = _origin_file(origin)
    if origin_path:
        files |= _with_package(origin_path)
    # the user's modules beside the study file: not those of other study files this process
    # loaded (the API or a notebook runs several studies; each keeps its own version)
    folder = _origin_folder(origin)
    files |= {path for path in (Path(m.__file__).resolve() for m in user_modules())
              if folder is not None and path.is_relative_to(folder)}
    refs: list[Any] = list(trainables.values()) + ([study.data.load] if study.data else [])
    for ref in refs:
        module = sys.modules.get(getattr(ref, "__module__", "") or "") if callable(ref) else \
            sys.modules.get(str(ref).partition(":")[0])
        source = getattr(module, "__file__", None)
        if source:
            files |= _with_package(Path(source).resolve())
    return {f for f in files if f.suffix == ".py" and f.is_file()}


def _with_package(path: Path) -> set[Path]:
    """``path``, and the other modules of its package when it is in one."""
    if (path.parent / "__init__.py").is_file():
        return set(path.parent.glob("*.py"))
    return {path}


def _origin_file(origin: str) -> Path | None:
    path = Path(origin.rpartition(":")[0] if origin.count(":") == 1 and not origin.endswith(".py") else origin)
    for candidate in (path, ROOT / path):
        if candidate.suffix == ".py" and candidate.is_file():
            return candidate.resolve()
    return None


def _origin_folder(origin: str) -> Path | None:
    """The folder of the study file, or of the module ``origin`` names (``pkg.studies:STUDY``)."""
    path = _origin_file(origin)
    if path is not None:
        return path.parent
    file = getattr(sys.modules.get(origin.partition(":")[0]), "__file__", None)
    return Path(file).resolve().parent if file else None


def _user_git(origin: str) -> dict[str, Any] | None:
    """The commit of the repository holding the study file, when that is not this project's."""
    path = _origin_file(origin)
    if path is None or path.is_relative_to(ROOT):
        return None
    try:
        run = lambda *args: subprocess.run(["git", *args], cwd=path.parent, capture_output=True, text=True,  # noqa: E731
                                           timeout=10, check=True).stdout.strip()
        return {"commit": run("rev-parse", "HEAD"), "dirty": bool(run("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return None


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(_json_ready(value), sort_keys=True).encode()).hexdigest()[:16]


def _json_ready(value: Any) -> Any:
    """``value`` as JSON would give it back (tuples as lists, other objects by repr)."""
    return json.loads(json.dumps(value, sort_keys=True, default=lambda v: ref_label(v) if callable(v) else repr(v)))

