"""Loading study files and modules (``study.registry.find`` names them):

    python -m study.run ablation_dropout                 # a built-in study (builtin_studies/)
    python -m study.run my_studies/width.py              # the study a file defines
    python -m study.run my_studies/width.py:wide         # one of several (attribute or study name)
    python -m study.run my_pkg.studies:width             # a module's study

A file is loaded as Python runs a script: its folder goes first on ``sys.path``, so it imports
its neighbours. The studies of a file or module are its public module-level ``Study`` objects.
What a study file and its neighbours define reaches Ray's workers inside the trials
(``ship_user_code`` pickles those modules by value), so no node needs a copy of them.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import traceback
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from study.spec import Study

ROOT = Path(__file__).resolve().parent.parent
BUILTIN_DIR = ROOT / "builtin_studies"
# our packages travel by reference (installed, or in the job's working_dir), never by value
PACKAGE_NAMES = ("study", "builtin_studies", "trainables", "search_spaces", "analysis", "benchmarks")
OUR_PACKAGES = tuple(ROOT / p for p in PACKAGE_NAMES)
_USER_FOLDERS: list[Path] = []          # folders of the study files and modules loaded here


class StudyError(ValueError):
    """A study that cannot run, found before anything ran (exit 2). The message names the file
    (or module) that defines it, the study, the field, and the fix."""

    def __init__(self, origin: str, message: str, study: str | None = None):
        self.origin, self.study = origin, study
        where = f"{origin}: study {study!r}" if study else origin
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class Found:
    study: Study
    origin: str          # the file (as given) or module that defines it
    attr: str = ""       # the module-level name it is bound to


def studies_in(module: ModuleType, origin: str) -> list[Found]:
    """The public module-level ``Study`` objects of ``module``, in definition order."""
    studies: dict[int, tuple[str, Study]] = {}
    for attr, value in vars(module).items():
        if not attr.startswith("_") and isinstance(value, Study):
            studies.setdefault(id(value), (attr, value))
    if not studies:
        raise StudyError(origin, "defines no study: assign a Study(...) to a module-level name "
                                 "(names starting with _ are private)")
    counts = Counter(s.name for _, s in studies.values())
    for name, n in counts.items():
        if n > 1:
            attrs = [a for a, s in studies.values() if s.name == name]
            raise StudyError(origin, f"two studies are named {name!r} ({', '.join(attrs)}): a study's name "
                                     "is its MLflow experiment, so each needs its own", name)
    return [Found(s, origin, a) for a, s in studies.values()]


def pick(found: list[Found], name: str, origin: str) -> list[Found]:
    if not name:
        return found
    chosen = [f for f in found if name in (f.study.name, f.attr)]
    if chosen:
        return chosen[:1]
    raise StudyError(origin, f"has no study {name!r}; its studies: {', '.join(sorted(f.study.name for f in found))}")


def load_file(spec: str) -> tuple[ModuleType, str]:
    path = Path(spec)
    if not path.is_file():
        raise StudyError(spec, f"no such study file (the working directory is {Path.cwd()})")
    resolved = path.resolve()
    if resolved.parent == BUILTIN_DIR:       # one of ours, given as a file: the registry's object
        return importlib.import_module(f"builtin_studies.{resolved.stem}"), spec
    _refuse_shadowing(resolved.parent, spec)
    folder = str(resolved.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)           # as for a script: it imports its neighbours
    name = resolved.stem
    loaded = sys.modules.get(name)
    if loaded is not None and getattr(loaded, "__file__", None) != str(resolved):
        name = f"{name}_{abs(hash(str(resolved))):x}"   # a module of that name is already loaded
    module_spec = importlib.util.spec_from_file_location(name, resolved)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as error:  # noqa: BLE001 - any error in the user's file is reported, not raised
        sys.modules.pop(name, None)
        raise StudyError(spec, f"raised {type(error).__name__} while loading: {error}\n"
                               f"{where_raised(error, resolved)}") from None
    _USER_FOLDERS.append(resolved.parent)
    return module, spec


def _refuse_shadowing(folder: Path, spec: str) -> None:
    """A study file's folder goes first on ``sys.path``: a module or package of its own that has
    the name of one of ours would be imported instead of ours, here or in a trial."""
    if folder == ROOT:
        return
    for name in PACKAGE_NAMES:
        for clash in (folder / f"{name}.py", folder / name / "__init__.py"):
            if clash.is_file():
                shown = clash if clash.suffix == ".py" and clash.name != "__init__.py" else clash.parent
                raise StudyError(spec, f"{shown} has the name of the runner's own package {name!r}, and the study "
                                       f"file's folder comes first on the import path, so it would be imported instead "
                                       f"of the runner's: rename it (e.g. my_{name})")


def import_module(name: str) -> tuple[ModuleType, str]:
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as error:
        raise StudyError(name, f"cannot be imported ({error}); give a module on sys.path "
                               "(package.module:NAME) or a file (path/to/file.py)") from None
    except Exception as error:  # noqa: BLE001
        raise StudyError(name, f"raised {type(error).__name__} while loading: {error}\n"
                               f"{where_raised(error, None)}") from None
    file = getattr(module, "__file__", None)
    if file and not Path(file).resolve().is_relative_to(BUILTIN_DIR):
        _USER_FOLDERS.append(Path(file).resolve().parent)
    return module, name


def where_raised(error: BaseException, own_file: Path | None) -> str:
    """The traceback's last frame, and the last frame in ``own_file`` when that is another."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return ""
    own = [f for f in frames if own_file is not None and Path(f.filename).resolve() == own_file]
    shown = ([own[-1]] if own else []) + ([frames[-1]] if not own or own[-1] is not frames[-1] else [])
    return "\n".join(f'  File "{_short(f.filename)}", line {f.lineno}, in {f.name}\n    {f.line or ""}'
                     for f in shown)


def _short(filename: str) -> str:
    path = Path(filename)
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return filename


def user_modules() -> list[ModuleType]:
    """Loaded modules from the folders of the study files (ours and installed ones excepted)."""
    out = []
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if not file:
            continue
        path = Path(file).resolve()
        if any(path.is_relative_to(f) for f in _USER_FOLDERS) and not any(
                path.is_relative_to(p) for p in OUR_PACKAGES) and "site-packages" not in path.parts:
            out.append(module)
    return out


def ship_user_code() -> None:
    """Pickle the user's modules by value: their functions and classes reach every Ray worker
    inside the trial's arguments, wherever the worker runs and whatever its ``sys.path``."""
    import ray.cloudpickle as cloudpickle

    for module in user_modules():
        cloudpickle.register_pickle_by_value(module)
