"""Sweep descriptions: a workload, its fixed settings, a grid of values × a number of seeds.

A sweep file (TOML) looks like

    workload = "reduced-allocation"
    seeds = 1024
    member_chunk = "auto"        # members per call; "auto" sizes it from the device's memory
    chunk_records = "auto"       # records per step chunk (a checkpoint after each)

    [fixed]
    horizon = 20.0

    [grid]
    heads = [2, 3, 4]            # changes shapes: one compiled group per value
    init_scale = [3e-4, 1e-3]    # keeps shapes: members of the same calls, with the seeds

Everything is checked here, in Python, before anything is compiled; every error names the field,
the bad value and what is allowed.
"""

import dataclasses
import itertools
import math
import pathlib
import tomllib

from . import _validation as check
from ._sweep_workloads import WORKLOADS


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """A validated sweep: `fixed` settings, `grid` axes (name → values), `seeds` per point.

    `member_chunk`: members per compiled call (every member-axis point of a block of seeds), or
    `"auto"` to size it from XLA's memory analysis. `chunk_records`: records per step chunk
    (the sweep streams and checkpoints after each), or `"auto"` for a quarter of the records.
    """

    workload: str
    seeds: int
    fixed: dict
    grid: dict
    member_chunk: int | str = "auto"
    chunk_records: int | str = "auto"

    def __post_init__(self):
        check.one_of("workload", self.workload, WORKLOADS)
        check.positive_int("seeds", self.seeds)
        for name in ("member_chunk", "chunk_records"):
            if getattr(self, name) != "auto":
                check.positive_int(name, getattr(self, name))
        spec = WORKLOADS[self.workload]
        for name, value in self.fixed.items():
            check.one_of("fixed", name, spec.defaults)
            spec.check(f"fixed.{name}", name, value)
        for name, values in self.grid.items():
            check.one_of("grid", name, spec.group_axes + spec.member_axes)
            if not isinstance(values, list) or not values:
                raise ValueError(f"`grid.{name}` must be a non-empty list, got {values!r}.")
            if name in self.fixed:
                raise ValueError(f"`{name}` is both in [fixed] and in [grid]; keep one.")
            for value in values:
                spec.check(f"grid.{name}", name, value)
            # Two equal points would share one slot of the store (the second overwrites or
            # never runs) while inspect counts both as done.
            check.distinct(f"grid.{name}", values)
        spec.check_sweep(self.settings(), self.grid)

    @property
    def spec(self):
        return WORKLOADS[self.workload]

    def settings(self) -> dict:
        """Workload defaults overridden by [fixed] (grid axes take their first value here)."""
        out = dict(self.spec.defaults)
        out.update(self.fixed)
        return out

    def axis(self, name) -> list:
        return list(self.grid.get(name, [self.settings()[name]]))

    def groups(self) -> list[dict]:
        """One dict of shape-axis values per compiled group."""
        names = self.spec.group_axes
        return [dict(zip(names, values)) for values in itertools.product(*map(self.axis, names))]

    def member_points(self) -> list[dict]:
        """The member-axis values of every grid point inside a group."""
        names = self.spec.member_axes
        return [dict(zip(names, values)) for values in itertools.product(*map(self.axis, names))]

    @property
    def total_members(self) -> int:
        return len(self.groups()) * len(self.member_points()) * self.seeds

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_sweep(path) -> SweepConfig:
    """Read and validate a sweep file."""
    if not pathlib.Path(path).is_file():
        raise ValueError(f"the sweep file {path} is not a file.")
    with open(path, "rb") as f:
        try:
            raw = tomllib.load(f)
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"{path} is not valid TOML: {error}") from None
    allowed = ("workload", "seeds", "member_chunk", "chunk_records", "fixed", "grid")
    for key in raw:
        check.one_of("top-level key", key, allowed)
    for key in ("workload", "seeds"):
        if key not in raw:
            raise ValueError(f"{path} must set `{key}`.")
    for key in ("fixed", "grid"):
        if not isinstance(raw.get(key, {}), dict):
            raise ValueError(
                f"`{key}` in {path} must be a table ([{key}] with name = value lines), got "
                f"{raw[key]!r}."
            )
    return SweepConfig(
        workload=raw["workload"],
        seeds=raw["seeds"],
        fixed=dict(raw.get("fixed", {})),
        grid={k: list(v) if isinstance(v, list) else v for k, v in raw.get("grid", {}).items()},
        member_chunk=raw.get("member_chunk", "auto"),
        chunk_records=raw.get("chunk_records", "auto"),
    )


def chunk_bounds(n: int, size: int) -> list[tuple[int, int]]:
    """[start, stop) blocks of `size` covering range(n)."""
    return [(i * size, min(n, (i + 1) * size)) for i in range(math.ceil(n / size))]
