"""Running a sweep: groups of equal shapes, units of work (a member point × a block of seeds)
streamed into the store one at a time, so only one unit's records are ever in host memory.

Each unit's members are one `train_ensemble` call of the group's program (sharded over the
local devices like any ensemble). A killed sweep resumes at the first unit without its flag.
Under `jax.distributed` (several processes, e.g. one per host), process i runs the units
u ≡ i (mod process count) and writes them into the same store: units own disjoint chunk files.
"""

import math
import os
import pathlib

import jax
import numpy as np

from ._progress import progress_bar
from ._sweep_config import SweepConfig, chunk_bounds
from ._sweep_store import done_units, open_store, write_unit


# "auto" sizing: a unit may use this fraction of the device's memory (host RAM on CPU), and
# holds at most MAX_MEMBER_CHUNK members (beyond that a call is long enough to amortize).
MEMORY_FRACTION = 0.25
MAX_MEMBER_CHUNK = 65536
PROBE_MEMBERS = 256


def device_memory_bytes() -> int:
    """Memory of the first local device: its allocator limit, or physical RAM on CPU."""
    stats = jax.local_devices()[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"])
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def auto_member_chunk(program, budget: int) -> int:
    """Members per call from XLA's memory analysis of the compiled call: the bytes of a
    `PROBE_MEMBERS`-member call (arguments, outputs, temporaries), scaled to `budget`."""
    per_member = max(1, program.memory(PROBE_MEMBERS) // PROBE_MEMBERS)
    return int(min(MAX_MEMBER_CHUNK, max(1, budget // per_member)))


def seed_block(config: SweepConfig, program) -> int:
    """Seeds per unit of work (the members of one compiled call)."""
    if config.member_chunk == "auto":
        budget = int(MEMORY_FRACTION * device_memory_bytes())
        largest = auto_member_chunk(program, budget)
        # equal units (the last one no smaller), so one compiled call serves them all
        return math.ceil(config.seeds / math.ceil(config.seeds / largest))
    return min(config.seeds, config.member_chunk)


def _units(config: SweepConfig, block: int) -> list[tuple[int, int, int, int]]:
    blocks = chunk_bounds(config.seeds, block)
    n_groups, n_points = len(config.groups()), len(config.member_points())
    return [(g, p, a, b) for g in range(n_groups) for p in range(n_points) for a, b in blocks]


def _index(config: SweepConfig, group: dict, point: dict, start: int, stop: int) -> tuple:
    shape = [config.axis(name).index(group[name]) for name in config.spec.shape_axes]
    member = [config.axis(name).index(point[name]) for name in config.spec.member_axes]
    return (*shape, *member, slice(start, stop))


def run_sweep(config: SweepConfig, out, *, progress=None, on_unit=None) -> pathlib.Path:
    """Run (or resume) `config` into the Zarr store at `out`; returns its path."""
    out = pathlib.Path(out)
    groups, points, settings = config.groups(), config.member_points(), config.settings()
    programs = {}

    def program(g):
        if g not in programs:
            programs[g] = config.spec.build({**settings, **groups[g]})
        return programs[g]

    # Several processes (jax.distributed) take every process_count-th unit each.
    process, n_processes = jax.process_index(), jax.process_count()
    block = seed_block(config, program(0))  # the same in every process: same program, device
    units = _units(config, block)
    root = open_store(out, config, program(0), len(units), block, create=process == 0)
    done = done_units(root)
    mine = [u for u in range(len(units)) if u % n_processes == process]
    total = sum(units[u][3] - units[u][2] for u in mine)
    bar = progress_bar(total, description="sweep", unit="member", enabled=progress)
    bar.update(sum(units[u][3] - units[u][2] for u in mine if done[u]))
    for u in mine:
        g, p, start, stop = units[u]
        if done[u]:
            continue
        values = {name: np.full(stop - start, v) for name, v in points[p].items()}
        records = program(g).run(values, np.arange(start, stop))
        write_unit(root, u, _index(config, groups[g], points[p], start, stop), records)
        bar.update(stop - start)
        if on_unit is not None:
            on_unit(u)
    bar.close()
    return out
