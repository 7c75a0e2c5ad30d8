"""The one runner: any study over a grid of settings × member values × seeds.

Groups of the grid (settings that change shapes or the program) are compiled once each; a unit
of work is a group × a block of seeds with every member point, trained as one ensemble (sharded
over the local devices like any ensemble) in step chunks streamed into the store one chunk at a
time, so only one chunk of records is in host memory. After each step chunk the unit's states
are checkpointed, then its records written, then its flag: a killed sweep resumes at the first
step chunk without its flag. Under `jax.distributed` (several processes, e.g. one per host),
process i runs the units u ≡ i (mod process count) and writes them into the same store.

Every random stream derives here from one root seed: the init of seed s is
`fold_in(fold_in(key(root_seed), 0), s)` at every grid point, the data of step t
`fold_in(fold_in(key(root_seed), 1), t)`.
"""

import dataclasses
import math
import os
import sys

import jax
import jax.random as jr
import numpy as np

from .._host._compilation_cache import use_compilation_cache
from .._host._memory import host_memory_bytes
from .._host._progress import ProgressLines, progress_bar
from .._host._stop_requests import raise_if_stop_requested
from . import _store as store_io
from ._group import Group
from ._plan import SweepPlan, chunk_bounds
from ._study import AbstractStudy


# "auto" sizing: a call may use this fraction of the device's memory (host RAM on CPU), and
# holds at most MAX_MEMBERS_PER_CALL members (beyond that a call is long enough to amortize).
MEMORY_FRACTION = 0.25
MAX_MEMBERS_PER_CALL = 65536
PROBE_MEMBERS = 256
AUTO_STEP_CHUNKS = 4
_INIT_STREAM, _DATA_STREAM = 0, 1


def device_memory_bytes() -> int:
    """Memory of the first local device: its allocator limit, or on CPU the host's memory this
    process may use (physical RAM, or less under a cgroup limit)."""
    stats = jax.local_devices()[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"])
    return host_memory_bytes()


def auto_members_per_call(plan: SweepPlan, groups: list, budget: int, chunk_records: int) -> int:
    """Members per call from XLA's memory analysis of the compiled calls: the bytes of a
    `PROBE_MEMBERS`-member call of one step chunk (arguments, outputs, temporaries) of the
    hungriest group, scaled to `budget` (one size for every group: the store's chunks are
    uniform)."""
    values = _member_values(plan, 0, 1)[0]
    used = max(g.memory(values, PROBE_MEMBERS, chunk_records) for g in groups)
    per_member = max(1, used // PROBE_MEMBERS)
    return int(min(MAX_MEMBERS_PER_CALL, max(1, budget // per_member)))


def auto_chunk_records(n_records: int) -> int:
    """Records per step chunk for "auto": the divisor of `n_records` nearest a quarter of it
    (the larger on a tie), so every step chunk has one size and compiles once."""
    target = n_records / AUTO_STEP_CHUNKS
    divisors = [k for k in range(1, n_records + 1) if n_records % k == 0]
    return min(divisors, key=lambda k: (abs(k - target), -k))


def _explicit_sizes(plan: SweepPlan, n_records: int) -> dict:
    """Seeds per unit and records per step chunk that explicit sizes ask for (None: "auto")."""
    n_points = len(plan.member_points())
    return dict(
        seed_block=None
        if plan.members_per_call == "auto"
        else min(plan.seeds, max(1, plan.members_per_call // n_points)),
        chunk_records=None if plan.chunk_records == "auto" else min(n_records, plan.chunk_records),
    )


def _layout(plan: SweepPlan, groups: list) -> dict:
    n_records = groups[0].n_records
    sizes = _explicit_sizes(plan, n_records)
    chunk_records = sizes["chunk_records"] or auto_chunk_records(n_records)
    seed_block = sizes["seed_block"]
    if seed_block is None:
        budget = int(MEMORY_FRACTION * device_memory_bytes())
        n_points = len(plan.member_points())
        largest = auto_members_per_call(plan, groups, budget, chunk_records) // n_points
        # equal units (the last one no smaller), so one compiled call serves them all
        seed_block = math.ceil(plan.seeds / math.ceil(plan.seeds / max(1, largest)))
    return dict(
        group_axes=len(plan.group_axes),
        n_units=len(groups) * math.ceil(plan.seeds / seed_block),
        seed_block=seed_block,
        n_step_chunks=math.ceil(n_records / chunk_records),
        chunk_records=chunk_records,
    )


def _check_memory(plan: SweepPlan, groups: list, layout: dict) -> None:
    """Refuse, before anything runs, a call that cannot fit: its members' states (in and out)
    and one step's data, a lower bound from shapes alone. When that is already a sizeable share
    of the device's memory, XLA's temporaries of one compiled member per local device join the
    bound: past its memory a CPU process is killed without a word, and near the bound the
    temporaries decide (smaller calls skip that compilation). Still a lower bound: a run just
    under it can be killed."""
    members = layout["seed_block"] * len(plan.member_points())
    values = _member_values(plan, 0, 1)[0]
    bounds = [g.minimum_bytes(values, members) for g in groups]
    needed = max(bounds)
    available = device_memory_bytes()
    what = "its members' states, in and out, and one step's data"
    if MEMORY_FRACTION * available < needed <= available:
        # each local device runs at least one member at a time (they share the host's memory)
        at_once = min(members, jax.local_device_count())
        needed = max(
            bound + at_once * g.temporary_bytes(values, layout["chunk_records"])
            for g, bound in zip(groups, bounds)
        )
        what += f", plus {at_once} member(s)' temporaries by XLA's analysis of the compiled call"
    if needed > available:
        raise ValueError(
            f"one call of {members} members needs at least {needed / 2**30:.3g} GiB ({what}), "
            f"more than this device's {available / 2**30:.3g} GiB: "
            "lower the members per call (`members_per_call`, or an experiment's member count) "
            "or the sizes that make a member or a step large (heads, batch size, particles)."
        )


def _resumed_layout(plan: SweepPlan, groups: list, stored: dict) -> dict:
    """A store's own layout (auto sizes may differ on this machine), refusing explicit sizes
    that would cut the sweep differently."""
    asked = _explicit_sizes(plan, groups[0].n_records)
    n_points = len(plan.member_points())
    for key, name, value, shown in (
        ("seed_block", "members_per_call", plan.members_per_call, n_points * stored["seed_block"]),
        ("chunk_records", "chunk_records", plan.chunk_records, stored["chunk_records"]),
    ):
        if asked[key] is not None and asked[key] != stored[key]:
            raise ValueError(
                f"this store was cut with {name} = {shown}; resume it with that value or "
                f'"auto" (a resume keeps the layout the sweep started with), got {value}.'
            )
    return stored


def _member_values(plan: SweepPlan, start: int, stop: int) -> tuple[dict, np.ndarray]:
    """Member values and seeds of a unit: every member point (grid order) × seeds start..stop."""
    points, n = plan.member_points(), stop - start
    values = {name: np.repeat([p[name] for p in points], n) for name in plan.member_axes}
    return values, np.tile(np.arange(start, stop), len(points))


def _unit_index(plan: SweepPlan, group: int, start: int, stop: int) -> tuple:
    """Store index of a unit: its group's position, every member point, its seeds."""
    sizes = [len(plan.axis(name)) for name in plan.group_axes]
    position = np.unravel_index(group, sizes) if sizes else ()
    return (
        *(int(i) for i in position),
        *(slice(None) for _ in plan.swept_member_axes),
        slice(start, stop),
    )


def _check_member_axes_matter(plan: SweepPlan, group, values: dict) -> None:
    """Refuse a swept member axis that no member's computation reads: its members would all
    run the same while the results label them with different values."""
    unused = group.unused_member_axes(values, plan.swept_member_axes)
    if unused:
        name = type(plan.study).__name__
        raise ValueError(
            f"`grid.{unused[0]}` is a member axis of {name}, but nothing a member computes "
            f"depends on it (its initial model, optimizer, objective, moves, records and "
            f"summaries never read `{unused[0]}` per member): every member would run the same. "
            "Read it in `initial_model(values, …)` or `optimizer()`, or sweep it as a group "
            "axis (leave it out of `member_axes`)."
        )


def _check_precision(plan: SweepPlan) -> None:
    if type(plan.study).float64 and not store_io.float64():
        raise ValueError(
            f"study `{type(plan.study).__name__}` runs in float64: call "
            "jax.config.update('jax_enable_x64', True) before any other JAX work "
            "(`jaxicl sweep` does this for you)."
        )


def sweep(
    study: AbstractStudy | type,
    *,
    seeds: int,
    grid: dict | None = None,
    store=None,
    root_seed: int = 0,
    members_per_call: int | str = "auto",
    chunk_records: int | str = "auto",
    progress: bool | str | None = None,
    on_chunk=None,
    allow_code_change: bool = False,
    matmul_precision: str = "highest",
):
    """Run (or resume) `study` over `grid` × `seeds`; returns the labelled xarray dataset.

    **Arguments:**

    - `study`: an `AbstractStudy` (its fields are the settings not swept), or a study class
      (its defaults).
    - `seeds`: members per grid point.
    - `grid`: setting name → list of values. The study's member axes become members of one
      compiled call; every other swept setting makes one compiled group per value combination.
    - `store`: None to keep the results in memory (returned loaded), or a path to stream them
      to a Zarr store there (returned lazily opened). A store of the same sweep is resumed;
      another sweep's store is refused.
    - `root_seed`: the seed every random stream derives from.
    - `members_per_call`: members trained in one compiled call, or `"auto"` (from XLA's memory
      analysis: a quarter of the device's memory).
    - `chunk_records`: records per step chunk (a checkpoint after each), or `"auto"` (about 4
      equal chunks: the divisor of the record count nearest a quarter of it).
    - `progress`: a progress bar (None: only on a terminal); `"lines"`: a line on stderr at
      the start and per stored step chunk instead (for logs).
    - `on_chunk(unit, step_chunk)`: called after each step chunk is stored.
    - `allow_code_change`: resume a store although the study's code (its module's source, or
      jaxicl's version) changed since it was started; the change is recorded in the store.
      Without it such a resume is refused: the store would mix results of two versions.
    - `matmul_precision`: of float32 matrix products, `"highest"` (default), `"high"` or
      `"default"` (as in `train_ensemble_steps`); recorded in the store, and a resume under
      another is refused.

    Member i gets the same trajectory whether it runs alone, with any chunking, on any number
    of devices or processes, or resumed after a kill.
    """
    if isinstance(study, type) and issubclass(study, AbstractStudy):
        study = study()
    plan = SweepPlan(
        study=study,
        grid=dict(grid or {}),
        seeds=seeds,
        root_seed=root_seed,
        members_per_call=members_per_call,
        chunk_records=chunk_records,
        matmul_precision=matmul_precision,
    )
    return run_plan(
        plan, store, progress=progress, on_chunk=on_chunk, allow_code_change=allow_code_change
    )


def run_plan(plan: SweepPlan, store=None, *, progress=None, on_chunk=None, allow_code_change=False):
    """`sweep` of a checked plan (e.g. from `load_sweep`)."""
    _check_precision(plan)
    use_compilation_cache()
    n_processes = jax.process_count()
    if store is None and n_processes > 1:
        raise ValueError("a sweep over several processes needs `store`: a path all of them share.")
    root_key = jr.key(plan.root_seed)
    keys = dict(
        init_key=jr.fold_in(root_key, _INIT_STREAM), data_key=jr.fold_in(root_key, _DATA_STREAM)
    )
    values = _member_values(plan, 0, 1)[0]
    groups, dtypes = [], None
    for index, study in enumerate(plan.group_studies()):
        # an error the study raises building or tracing a group names the group's grid place
        try:
            group = Group(study, **keys, matmul_precision=plan.matmul_precision)
            group_dtypes = group.dtypes(values)
        except (ValueError, TypeError) as error:
            raise ValueError(f"{plan.group_place(index)}: {error}") from None
        if dtypes is not None and group_dtypes != dtypes:
            raise ValueError("the groups of this grid record different series or summaries.")
        groups.append(group)
        dtypes = group_dtypes
    _check_member_axes_matter(plan, groups[0], values)
    stored = store_io.stored_layout(store, plan)
    # the same layout in every process: same groups, same kind of device
    layout = _layout(plan, groups) if stored is None else _resumed_layout(plan, groups, stored)
    _check_memory(plan, groups, layout)
    process = jax.process_index()
    time_axis = (groups[0].time, type(plan.study).time_units)
    root = store_io.open_store(
        store,
        plan,
        time_axis,
        dtypes,
        layout,
        create=process == 0,
        allow_code_change=allow_code_change,
    )
    if stored is None and store is not None:
        # another process may have created the store between our look and our creation (a
        # race of two starts): the store's layout is the one that counts
        won = store_io.stored_layout(store, plan)
        if won != layout:
            layout = _resumed_layout(plan, groups, won)
            _check_memory(plan, groups, layout)
    run = _Run(plan, groups, layout, root, store, progress, on_chunk)
    if n_processes > 1:
        run.run(process, n_processes)
    else:
        with store_io.writer_lock(store):
            run.run(process, n_processes)
    if store is None:
        return store_io.as_dataset(root)
    return store_io.open_sweep(store)


@dataclasses.dataclass
class _Run:
    plan: SweepPlan
    groups: list
    layout: dict
    root: object
    path: object
    progress: bool | str | None
    on_chunk: object

    def run(self, process: int, n_processes: int) -> None:
        plan, layout = self.plan, self.layout
        if self.path is not None and process == 0:
            for line in store_io.recover_bookkeeping(self.root, self.path):
                print(f"jaxicl: {self.path}: {line}.", file=sys.stderr)
        if self.path is not None:
            # flags claim records: recompute any unit whose records do not read back as written
            damaged = [u for u in store_io.damaged_units(self.root) if u % n_processes == process]
            if damaged:
                print(
                    f"jaxicl: {self.path}: units {damaged} do not read back as written (a chunk "
                    "file deleted or truncated); running them again.",
                    file=sys.stderr,
                )
                store_io.reset_units(self.root, self.path, damaged)
        done = store_io.done_chunks(self.root)
        seed_blocks = chunk_bounds(plan.seeds, layout["seed_block"])
        units = [(g, a, b) for g in range(len(self.groups)) for a, b in seed_blocks]
        if len(units) != done.shape[0]:
            raise ValueError(
                f"{self.path} records {done.shape[0]} units where this sweep has {len(units)}; "
                "the store is damaged. Start the sweep in a new store."
            )
        # several processes (jax.distributed) take every process_count-th unit each
        mine = [u for u in range(len(units)) if u % n_processes == process]
        record_chunks = chunk_bounds(self.groups[0].n_records, layout["chunk_records"])
        n_points = len(plan.member_points())
        members = {u: n_points * (units[u][2] - units[u][1]) for u in mine}
        steps = [self.groups[0].record_every * (b - a) for a, b in record_chunks]
        total = sum(members[u] * sum(steps) for u in mine)
        # what is being computed: the study, and the store it streams into (an experiment's
        # stores are named for their groups)
        name = os.path.basename(os.path.normpath(os.fspath(self.path))) if self.path else ""
        where = f" → {name}" if name else ""
        description = f"{type(plan.study).__name__}{where}"
        bar = progress_bar(
            total, description=description, unit="member-step", enabled=self.progress
        )
        bar.update(sum(members[u] * s for u in mine for s, f in zip(steps, done[u]) if f))
        finished = sum(members[u] for u in mine if done[u].all())
        lines = None
        if self.progress == "lines":
            chunks_done = int(sum(done[u].sum() for u in mine))
            where = str(self.path) if self.path is not None else description
            lines = ProgressLines(where, chunks_done, len(mine) * len(steps))

        def show_members():
            bar.set_postfix_str(f"members {finished}/{sum(members.values())}")

        show_members()
        for u in mine:
            if not done[u].all():
                g, start, stop = units[u]
                for c in self._unit(u, g, start, stop, done[u], record_chunks):
                    bar.update(members[u] * steps[c])
                    if lines is not None:
                        lines.chunk_stored(u, c)
                    if self.on_chunk is not None:
                        self.on_chunk(u, c)
                    raise_if_stop_requested()
                finished += members[u]
                show_members()
            if self.path is not None:
                store_io.drop_unit_state(self.path, u)
        bar.close()

    def _unit(self, u: int, g: int, start: int, stop: int, done, record_chunks):
        """Run the unit's step chunks not yet flagged, yielding each one's number once stored."""
        group = self.groups[g]
        index = _unit_index(self.plan, g, start, stop)
        values, seeds = _member_values(self.plan, start, stop)
        states = group.init(values, seeds)
        first = int(np.argmin(done))  # the first chunk without its flag
        saved = self._checkpoint(u, first, states) if first > 0 else None
        if saved is None and first > 0:
            first = 0  # no usable checkpoint: the unit runs again from its start
        if saved is not None:
            states, chunks_done, series = saved
            if chunks_done == first + 1:
                # killed after the checkpoint, before the records: store them from it
                self._store(u, group, index, first, record_chunks, series, states)
                yield first
                first += 1
        frozen = None  # members frozen for good, known after a chunk trained here
        for c in range(first, len(record_chunks)):
            a, b = record_chunks[c]
            states, series, frozen = group.advance(states, b - a, frozen)
            if self.path is not None:
                store_io.save_unit_state(self.path, u, states, c + 1, series)
            self._store(u, group, index, c, record_chunks, series, states)
            yield c

    def _checkpoint(self, u: int, first: int, like):
        """The unit's checkpoint after `first` (or `first + 1`) step chunks; None, after one line
        saying so and clearing the unit's flags, when it is missing, damaged or does not match
        them: the unit then runs again from its start, and no other unit is touched."""
        try:
            saved = store_io.load_unit_state(self.path, u, like)
        except ValueError:  # a damaged file
            saved, why = None, "is damaged"
        else:
            why = "is missing" if saved is None else "does not match its flags"
        if saved is not None and saved[1] in (first, first + 1):
            return saved
        print(
            f"jaxicl: {self.path}: the checkpoint of unit {u} {why}; running that unit again "
            "from its start.",
            file=sys.stderr,
        )
        store_io.reset_units(self.root, self.path, [u])
        return None

    def _store(self, u, group, index, c, record_chunks, series, states) -> None:
        a, b = record_chunks[c]
        shape = self._member_shape(index)
        writes = [
            (name, (*index, slice(a, b)), values.reshape(*shape, b - a, *values.shape[2:]))
            for name, values in series.items()
        ]
        if c == len(record_chunks) - 1:
            # summaries of the whole series: this unit's records, read back from the store
            time = len(shape)  # the time axis of a stored series
            written = store_io.read_series(self.root, series, index)
            whole = {
                name: np.concatenate(
                    [
                        written[name][(slice(None),) * time + (slice(0, a),)].astype(values.dtype),
                        values.reshape(*shape, b - a, *values.shape[2:]),
                    ],
                    axis=time,
                ).reshape(-1, *written[name].shape[time:])
                for name, values in series.items()
            }
            summaries = group.summarize(states, whole)
            writes += [
                (name, index, np.asarray(values).reshape(*shape, *np.shape(values)[1:]))
                for name, values in summaries.items()
            ]
        store_io.write_chunk(self.root, u, c, writes)

    def _member_shape(self, index) -> tuple[int, ...]:
        points = tuple(len(self.plan.axis(name)) for name in self.plan.swept_member_axes)
        seeds = index[-1]
        return (*points, seeds.stop - seeds.start)
