"""A sweep's plan: one study's settings, a grid of values × a number of seeds, checked whole.

Every grid name is a setting (a field) of the study. Member axes (the study's `member_axes`)
become members of one compiled call; every other swept setting makes one compiled group per
combination of values. Everything is checked here, before anything compiles: each grid value
and each group goes through the study's own `__check_init__`, and the error says where in the
grid the value came from.
"""

import dataclasses
import itertools
import json
import math
import numbers

import equinox as eqx

from .. import _validation as check
from .._train._options import check_matmul_precision
from ._study import AbstractStudy


def label(value):
    """How a setting's value is named in the store and on figures: a variant Module by its
    `name`, anything else as itself."""
    if isinstance(value, eqx.Module):
        return getattr(value, "name", type(value).__name__)
    return value


def describe_value(value):
    """A JSON-able description that tells two values apart (a variant Module with its fields)."""
    if isinstance(value, bool | numbers.Number | str) or value is None:
        return value.item() if hasattr(value, "item") else value
    if isinstance(value, tuple | list):
        return [describe_value(v) for v in value]
    return repr(value)


def _fields(study: AbstractStudy) -> list[str]:
    return [f.name for f in dataclasses.fields(study)]


def _replace(study: AbstractStudy, where: str, **changes) -> AbstractStudy:
    try:
        return dataclasses.replace(study, **changes)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{where}: {error}") from None


@dataclasses.dataclass(frozen=True)
class SweepPlan:
    """A validated sweep of `study` (whose fields are the settings not swept).

    - `grid`: setting name → list of distinct values.
    - `seeds`: members per grid point; seed i starts from `fold_in(init key, i)` at every point.
    - `root_seed`: the one seed every random stream of the sweep derives from.
    - `members_per_call`: members trained in one compiled call (every member point of a block of
      seeds), or `"auto"` to size it from XLA's memory analysis.
    - `chunk_records`: records per step chunk (the sweep streams and checkpoints after each), or
      `"auto"` for about a quarter of the records (a divisor of their count: equal chunks).
    - `study_name`: how a sweep file names the study (a built-in name or `module:Class`).
    - `matmul_precision`: of float32 matrix products (`"highest"`, `"high"`, `"default"`; as in
      `train_ensemble_steps`), recorded in the store: a resume under another is refused.
    """

    study: AbstractStudy
    grid: dict
    seeds: int
    root_seed: int = 0
    members_per_call: int | str = "auto"
    chunk_records: int | str = "auto"
    study_name: str = ""
    matmul_precision: str = "highest"

    def __post_init__(self):
        if not isinstance(self.study, AbstractStudy):
            raise ValueError(
                f"`study` must be an AbstractStudy (a Module with the study's settings), got "
                f"{type(self.study).__name__}."
            )
        if not isinstance(self.grid, dict):
            raise ValueError(
                f"`grid` must be a dict of setting → list of values, got {self.grid!r}."
            )
        check.positive_int("seeds", self.seeds)
        if self.seeds >= 2**31:
            # seeds are int32 inside the compiled program (as are its step counters)
            raise ValueError(f"`seeds` must be below 2**31, got {self.seeds}.")
        check.seed("root_seed", self.root_seed)
        check_matmul_precision("matmul_precision", self.matmul_precision)
        for name in ("members_per_call", "chunk_records"):
            if getattr(self, name) != "auto":
                check.positive_int(name, getattr(self, name))
        fields = _fields(self.study)
        for name, values in self.grid.items():
            check.one_of("grid", name, fields)
            if not isinstance(values, list | tuple) or not values:
                raise ValueError(f"`grid.{name}` must be a non-empty list, got {values!r}.")
            if name in self.member_axes:
                for value in values:
                    if isinstance(value, bool) or not isinstance(value, numbers.Real):
                        raise ValueError(
                            f"`grid.{name}` is a member axis: its values must be numbers, got "
                            f"{value!r}."
                        )
            for value in values:
                _replace(self.study, f"`grid.{name}` = {label(value)!r}", **{name: value})
            # Two equal points would share one slot of the store (the second overwrites or
            # never runs) while inspect counts both as done.
            check.distinct(f"grid.{name}", [label(v) for v in values])
        studies = self.group_studies()
        self.study.check_grid({k: list(v) for k, v in self.grid.items()})
        records = {(tuple(s.schedule()), tuple(s.time())) for s in studies}
        if len(records) > 1:
            raise ValueError(
                "the groups of this grid record at different times (one store has one time axis): "
                "keep the settings that change the schedule fixed, or run them as separate sweeps."
            )

    @property
    def member_axes(self) -> tuple[str, ...]:
        return tuple(type(self.study).member_axes)

    @property
    def group_axes(self) -> tuple[str, ...]:
        """The swept settings that are not member axes, in the grid's order."""
        return tuple(name for name in self.grid if name not in self.member_axes)

    @property
    def swept_member_axes(self) -> tuple[str, ...]:
        return tuple(name for name in self.member_axes if name in self.grid)

    def axis(self, name: str) -> list:
        return list(self.grid[name])

    def group_points(self) -> list[dict]:
        names = self.group_axes
        return [dict(zip(names, vs)) for vs in itertools.product(*map(self.axis, names))]

    def group_place(self, index: int) -> str:
        """Where group `index` sits in the grid, as a user wrote it:
        `grid.context_len[1] = 40.0, grid.heads[0] = 2` (or the fixed settings)."""
        names = self.group_axes
        positions = itertools.product(*(range(len(self.axis(n))) for n in names))
        position = next(itertools.islice(positions, index, None), ())
        return (
            ", ".join(
                f"grid.{n}[{i}] = {label(self.axis(n)[i])!r}" for n, i in zip(names, position)
            )
            or "the fixed settings"
        )

    def group_studies(self) -> list[AbstractStudy]:
        """One study per compiled group, in the store's order (an invalid combination is an
        error naming its grid point)."""
        studies = []
        for group in self.group_points():
            where = ", ".join(f"{k} = {label(v)!r}" for k, v in group.items())
            studies.append(
                _replace(self.study, f"the grid point {where or 'of the fixed settings'}", **group)
            )
        return studies

    def member_points(self) -> list[dict]:
        """The member-axis values of every grid point inside a group (unswept member axes take
        the study's value)."""
        names = self.swept_member_axes
        points = [dict(zip(names, vs)) for vs in itertools.product(*map(self.axis, names))]
        fixed = {name: getattr(self.study, name) for name in self.member_axes}
        return [{**fixed, **p} for p in points]

    @property
    def total_members(self) -> int:
        return len(self.group_points()) * len(self.member_points()) * self.seeds

    def settings(self) -> dict:
        """The study's fixed settings (swept ones excluded), described."""
        return {
            name: describe_value(getattr(self.study, name))
            for name in _fields(self.study)
            if name not in self.grid
        }

    def description(self, float64: bool) -> str:
        """What makes two sweeps the same: resuming a store with another description is refused.
        The precisions are part of it (a resume in another would not reproduce the run)."""
        return json.dumps(
            {
                "study": self.study_name or _import_path(type(self.study)),
                "settings": self.settings(),
                "grid": {k: [describe_value(v) for v in vs] for k, vs in self.grid.items()},
                "seeds": self.seeds,
                "root_seed": self.root_seed,
                "float64": float64,
                "matmul_precision": self.matmul_precision,
            },
            sort_keys=True,
        )


def _import_path(cls) -> str:
    """A built-in study's name, or the import path a sweep file would name the class by (a
    subclass of a built-in study is not the built-in study: its own path)."""
    return cls.__dict__.get("registry_name") or f"{cls.__module__}:{cls.__qualname__}"


def chunk_bounds(n: int, size: int) -> list[tuple[int, int]]:
    """[start, stop) blocks of `size` covering range(n)."""
    return [(i * size, min(n, (i + 1) * size)) for i in range(math.ceil(n / size))]
