"""The built-in studies and experiments by the names sweep files and the command line use:
the one place names meet Modules and records (the library below takes them as arguments).

Both are found, not listed: every module of `_experiments/` that exports an `EXPERIMENT`
record, and every study class in `_studies/` that declares its own `registry_name`. Adding an
experiment is its module and its figure; adding a built-in study is its module.
"""

import importlib
import pkgutil
from types import ModuleType

from . import _experiments, _studies
from ._sweeps import _file
from ._sweeps._plan import SweepPlan
from ._sweeps._study import AbstractStudy


def _modules(package: ModuleType):
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        yield importlib.import_module(f"{package.__name__}.{info.name}")


def studies_in(package: ModuleType) -> dict:
    """The study classes defined in the package's modules that declare a `registry_name`."""
    found = {}
    for module in _modules(package):
        for value in vars(module).values():
            own = isinstance(value, type) and value.__module__ == module.__name__
            if own and issubclass(value, AbstractStudy) and "registry_name" in vars(value):
                found[value.registry_name] = value
    return found


def experiments_in(package: ModuleType) -> dict:
    """The `EXPERIMENT` records the package's modules export, by name."""
    records = (m.EXPERIMENT for m in _modules(package) if hasattr(m, "EXPERIMENT"))
    return {record.name: record for record in records}


STUDIES = studies_in(_studies)
EXPERIMENTS = experiments_in(_experiments)


def load_sweep(path) -> SweepPlan:
    """Read and validate a sweep file (its `study` a built-in name or `package.module:Class`)."""
    return _file.load_sweep(path, STUDIES)
