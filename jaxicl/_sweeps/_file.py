"""Sweep files (TOML) and the names of studies: the edge where names become Modules.

    study = "reduced-allocation"  # a built-in name, or an import path "package.module:Class"
    seeds = 1024
    root_seed = 0                 # every random stream derives from it
    members_per_call = "auto"     # "auto" sizes it from the device's memory
    chunk_records = "auto"        # records per step chunk (a checkpoint after each)
    matmul_precision = "highest"  # float32 products: "highest", "high" or "default" (fastest)

    [fixed]
    horizon = 20.0

    [grid]
    heads = [2, 3, 4]             # changes shapes: one compiled group per value
    init_scale = [3e-4, 1e-3]     # a member axis: members of the same calls, with the seeds

A setting whose values are Modules (a study's `variants`, e.g. `scheme`) is written by name.
Everything is checked before anything compiles; every error names the field, the bad value
and what is allowed.
"""

import contextlib
import dataclasses
import importlib
import pathlib
import sys
import tomllib

from .. import _validation as check
from ._plan import SweepPlan
from ._study import AbstractStudy


@contextlib.contextmanager
def _importable(directories):
    """`directories` searched first while a user's study is imported (the sweep file's own
    directory and the working directory: a study module beside its sweep file needs no
    PYTHONPATH)."""
    added = [str(d) for d in directories if str(d) not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for d in added:
            sys.path.remove(d)


def study_class(name, studies: dict, search=()) -> type[AbstractStudy]:
    """A built-in study by name (in `studies`), or a user's study by import path
    `package.module:Class`, looked for first in the directories `search`."""
    if not isinstance(name, str):
        raise ValueError(f"`study` must be a string, got {name!r}.")
    if name in studies:
        return studies[name]
    if ":" not in name:
        choices = ", ".join(repr(n) for n in studies)
        raise ValueError(
            f"`study` must be one of {choices} or an import path 'package.module:Class'; "
            f"got {name!r}."
        )
    module_name, _, qualname = name.partition(":")
    try:
        with _importable(search):
            target = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except ImportError as error:
        places = ", ".join(map(str, search))
        raise ValueError(
            f"`study` = {name!r}: cannot import {module_name!r} ({error}); looked in "
            f"{places + ', ' if places else ''}and the installed packages."
        ) from None
    except AttributeError:
        raise ValueError(f"`study` = {name!r}: {module_name} has no {qualname!r}.") from None
    if not (isinstance(target, type) and issubclass(target, AbstractStudy)):
        raise ValueError(f"`study` = {name!r} is not a subclass of jaxicl.AbstractStudy.")
    return target


def study_fields(cls: type[AbstractStudy]) -> dict:
    """Setting name → default (or `dataclasses.MISSING`) of a study class."""
    return {
        f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory
        for f in dataclasses.fields(cls)
    }


def from_name(cls: type[AbstractStudy], field: str, value, where: str):
    """A setting's value as written in a file or on the command line: variant names → Modules."""
    choices = cls.variants.get(field)
    if choices is None or not isinstance(value, str):
        return value
    return choices[check.one_of(where, value, choices)]


def _fixed_study(cls: type[AbstractStudy], fixed: dict) -> AbstractStudy:
    """The study of a sweep file's [fixed] settings (the others keep their defaults)."""
    for name in fixed:
        check.one_of("fixed", name, study_fields(cls))
    values = {name: from_name(cls, name, v, f"fixed.{name}") for name, v in fixed.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as error:
        raise ValueError(f"in [fixed]: {error}") from None


def load_sweep(path, studies: dict) -> SweepPlan:
    """Read and validate a sweep file; `studies`: the built-in studies by name."""
    if not pathlib.Path(path).is_file():
        raise ValueError(f"the sweep file {path} is not a file.")
    with open(path, "rb") as f:
        try:
            raw = tomllib.load(f)
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"{path} is not valid TOML: {error}") from None
    if "workload" in raw:
        raise ValueError(f"{path}: `workload` is now `study` (same names); rename the key.")
    allowed = ("study", "seeds", "root_seed", "members_per_call", "chunk_records", "fixed", "grid")
    allowed += ("matmul_precision",)
    for key in raw:
        check.one_of("top-level key", key, allowed)
    for key in ("study", "seeds"):
        if key not in raw:
            raise ValueError(f"{path} must set `{key}`.")
    for key in ("fixed", "grid"):
        if not isinstance(raw.get(key, {}), dict):
            raise ValueError(
                f"`{key}` in {path} must be a table ([{key}] with name = value lines), got "
                f"{raw[key]!r}."
            )
    search = (pathlib.Path(path).resolve().parent, pathlib.Path.cwd())
    cls = study_class(raw["study"], studies, search)
    fixed, grid = dict(raw.get("fixed", {})), dict(raw.get("grid", {}))
    for name, values in grid.items():
        if name in fixed:
            raise ValueError(f"`{name}` is both in [fixed] and in [grid]; keep one.")
        # variant names become Modules here; the plan checks names and lists
        if isinstance(values, list):
            grid[name] = [from_name(cls, name, v, f"grid.{name}") for v in values]
    return SweepPlan(
        study=_fixed_study(cls, fixed),
        grid=grid,
        seeds=raw["seeds"],
        root_seed=raw.get("root_seed", 0),
        members_per_call=raw.get("members_per_call", "auto"),
        chunk_records=raw.get("chunk_records", "auto"),
        study_name=raw["study"],
        matmul_precision=raw.get("matmul_precision", "highest"),
    )
