"""Running a sweep: groups of equal shapes, units of work (a group × a block of seeds, with every
member point of the grid) run in step chunks and streamed into the store one chunk at a time,
so only one chunk of records is in host memory.

A unit's members (member points × seeds) are one ensemble of the group's program, sharded over
the local devices like any ensemble. After each step chunk the unit's states are checkpointed,
then its records written, then its flag: a killed sweep resumes at the first step chunk without
its flag. Under `jax.distributed` (several processes, e.g. one per host), process i runs the
units u ≡ i (mod process count) and writes them into the same store: units own disjoint chunk
files.
"""

import dataclasses
import math
import os
import pathlib

import jax
import numpy as np

from . import _sweep_store as sweep_store
from ._progress import progress_bar
from ._sweep_config import SweepConfig, chunk_bounds
from ._sweep_store import (
    done_chunks,
    drop_unit_state,
    load_unit_state,
    open_store,
    read_series,
    save_unit_state,
    write_chunk,
)


# "auto" sizing: a call may use this fraction of the device's memory (host RAM on CPU), and
# holds at most MAX_MEMBER_CHUNK members (beyond that a call is long enough to amortize).
MEMORY_FRACTION = 0.25
MAX_MEMBER_CHUNK = 65536
PROBE_MEMBERS = 256
AUTO_STEP_CHUNKS = 4


@dataclasses.dataclass(frozen=True)
class Layout:
    """How a sweep is cut: `seed_block` seeds per unit, `chunk_records` records per step chunk."""

    n_units: int
    seed_block: int
    n_step_chunks: int
    chunk_records: int


def device_memory_bytes() -> int:
    """Memory of the first local device: its allocator limit, or physical RAM on CPU."""
    stats = jax.local_devices()[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"])
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def auto_member_chunk(programs: list, budget: int, chunk_records: int) -> int:
    """Members per call from XLA's memory analysis of the compiled calls: the bytes of a
    `PROBE_MEMBERS`-member call of one step chunk (arguments, outputs, temporaries) of the
    hungriest group, scaled to `budget` (one size for every group: the store's chunks are
    uniform)."""
    used = max(p.memory(PROBE_MEMBERS, chunk_records) for p in programs)
    per_member = max(1, used // PROBE_MEMBERS)
    return int(min(MAX_MEMBER_CHUNK, max(1, budget // per_member)))


def sweep_layout(config: SweepConfig, programs: list) -> Layout:
    n_records = len(programs[0].time)
    if config.chunk_records == "auto":
        chunk_records = math.ceil(n_records / AUTO_STEP_CHUNKS)
    else:
        chunk_records = min(n_records, config.chunk_records)
    n_points = len(config.member_points())
    if config.member_chunk == "auto":
        budget = int(MEMORY_FRACTION * device_memory_bytes())
        largest = max(1, auto_member_chunk(programs, budget, chunk_records) // n_points)
        # equal units (the last one no smaller), so one compiled call serves them all
        seed_block = math.ceil(config.seeds / math.ceil(config.seeds / largest))
    else:
        seed_block = min(config.seeds, max(1, config.member_chunk // n_points))
    return Layout(
        n_units=len(config.groups()) * math.ceil(config.seeds / seed_block),
        seed_block=seed_block,
        n_step_chunks=math.ceil(n_records / chunk_records),
        chunk_records=chunk_records,
    )


def _members(config: SweepConfig, start: int, stop: int) -> tuple[dict, np.ndarray]:
    """Member values and seeds of a unit: every member point (grid order) × seeds start..stop."""
    points, n = config.member_points(), stop - start
    values = {name: np.repeat([p[name] for p in points], n) for name in config.spec.member_axes}
    return values, np.tile(np.arange(start, stop), len(points))


def _unit_index(config: SweepConfig, group: dict, start: int, stop: int) -> tuple:
    """Store index of a unit: its group's position, every member point, its seeds."""
    shape = [config.axis(name).index(group[name]) for name in config.spec.group_axes]
    return (*shape, *(slice(None) for _ in config.spec.member_axes), slice(start, stop))


def _check_precision(config: SweepConfig) -> None:
    if config.spec.float64 and not sweep_store.float64():
        raise ValueError(
            f"workload `{config.workload}` runs in float64: call "
            "jax.config.update('jax_enable_x64', True) before any other JAX work "
            "(`jaxicl sweep` does this for you)."
        )


def run_sweep(config: SweepConfig, out, *, progress=None, on_chunk=None) -> pathlib.Path:
    """Run (or resume) `config` into the Zarr store at `out`; returns its path.

    `on_chunk(unit, step_chunk)` is called after each step chunk is stored."""
    _check_precision(config)
    out = pathlib.Path(out)
    groups, settings = config.groups(), config.settings()
    programs = {}

    def program(g):
        if g not in programs:
            programs[g] = config.spec.build({**settings, **groups[g]})
        return programs[g]

    # the same layout in every process: same programs, same kind of device
    layout = sweep_layout(config, [program(g) for g in range(len(groups))])
    process, n_processes = jax.process_index(), jax.process_count()
    root = open_store(out, config, program(0), layout, create=process == 0)
    done = done_chunks(root)
    seed_blocks = chunk_bounds(config.seeds, layout.seed_block)
    units = [(g, a, b) for g in range(len(groups)) for a, b in seed_blocks]
    # several processes (jax.distributed) take every process_count-th unit each
    mine = [u for u in range(len(units)) if u % n_processes == process]
    record_chunks = chunk_bounds(len(program(0).time), layout.chunk_records)
    n_points = len(config.member_points())
    members = {u: n_points * (units[u][2] - units[u][1]) for u in mine}
    steps = [program(0).record_every * (b - a) for a, b in record_chunks]
    total = sum(members[u] * sum(steps) for u in mine)
    bar = progress_bar(total, description="sweep", unit="member-step", enabled=progress)
    bar.update(sum(members[u] * s for u in mine for s, f in zip(steps, done[u]) if f))
    finished = sum(members[u] for u in mine if done[u].all())

    def show_members():
        bar.set_postfix_str(f"members {finished}/{sum(members.values())}")

    show_members()
    for u in mine:
        if not done[u].all():
            g, start, stop = units[u]
            unit = _Unit(
                root, out, config, program(g), u, _unit_index(config, groups[g], start, stop)
            )
            for c in unit.run(start, stop, done[u], record_chunks):
                bar.update(members[u] * steps[c])
                if on_chunk is not None:
                    on_chunk(u, c)
            finished += members[u]
            show_members()
        drop_unit_state(out, u)
    bar.close()
    return out


@dataclasses.dataclass(frozen=True)
class _Unit:
    """One unit of work: its store, program and index in the store."""

    root: object
    out: pathlib.Path
    config: SweepConfig
    program: object
    number: int
    index: tuple

    def run(self, start: int, stop: int, done: np.ndarray, record_chunks: list):
        """Run the step chunks not yet flagged, yielding each one's number once stored."""
        values, seeds = _members(self.config, start, stop)
        states = self.program.init(values, seeds)
        first = int(np.argmin(done))  # the first chunk without its flag
        if first > 0:
            saved = load_unit_state(self.out, self.number, states)
            if saved is None or saved[1] not in (first, first + 1):
                raise ValueError(
                    f"the checkpoint of unit {self.number} in {self.out} does not match its "
                    "flags; delete the store and run the sweep again."
                )
            states, chunks_done, series = saved
            if chunks_done == first + 1:
                # killed after the checkpoint, before the records: store them from it
                self._store(first, record_chunks, series, states)
                yield first
                first += 1
        for c in range(first, len(record_chunks)):
            a, b = record_chunks[c]
            states, series = self.program.advance(states, b - a)
            save_unit_state(self.out, self.number, states, c + 1, series)
            self._store(c, record_chunks, series, states)
            yield c

    def _store(self, c: int, record_chunks: list, series: dict, states) -> None:
        a, b = record_chunks[c]
        shape = self._member_shape()
        writes = [
            (name, (*self.index, slice(a, b)), values.reshape(*shape, b - a))
            for name, values in series.items()
        ]
        if c == len(record_chunks) - 1:
            # summaries of the whole series: this unit's records, read back from the store
            written = read_series(self.root, self.program.series, self.index)
            whole = {
                name: np.concatenate(
                    [written[name][..., :a], values.reshape(*shape, b - a)], axis=-1
                ).reshape(-1, written[name].shape[-1])
                for name, values in series.items()
            }
            summaries = self.program.summarize(states, whole)
            writes += [
                (name, self.index, np.asarray(values).reshape(shape))
                for name, values in summaries.items()
            ]
        write_chunk(self.root, self.number, c, writes)

    def _member_shape(self) -> tuple[int, ...]:
        points = tuple(len(self.config.axis(name)) for name in self.config.spec.member_axes)
        seeds = self.index[-1]
        return (*points, seeds.stop - seeds.start)
