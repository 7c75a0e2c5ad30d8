"""The Zarr store a sweep streams into, readable as one labelled xarray dataset.

Layout: one array per series with dimensions (shape axes…, member axes…, seed, time) and one
per summary without `time`; the coordinates of every axis; and `chunk_done`, one flag per unit
of work (a group × a block of seeds, every member point) and step chunk. A unit's step chunk
owns whole Zarr chunks, so processes writing different units never touch the same file. Its
records are written first and its flag last (Zarr's local store writes every chunk file
atomically), and the unit's state is checkpointed under `resume/` before either, so a killed
sweep resumes at the first step chunk without its flag and ends with a store identical to an
uninterrupted run. The sweep description is stored in the attributes; another is refused.
"""

import json
import os
import pathlib
import shutil
import time

import jax
import numpy as np
import zarr

from ._checkpoint import load_checkpoint, save_checkpoint
from ._sweep_config import SweepConfig


RESUME_DIR = "resume"


def _dimensions(config: SweepConfig) -> tuple[str, ...]:
    return (*config.spec.group_axes, *config.spec.member_axes, "seed")


def _coordinates(config: SweepConfig) -> dict:
    out = {name: np.asarray(config.axis(name)) for name in _dimensions(config)[:-1]}
    out["seed"] = np.arange(config.seeds)
    return out


FLAG_MEANING = "1 = true, 0 = false, NaN = not run yet"


def float64() -> bool:
    return bool(jax.config.jax_enable_x64)


def _describe(config: SweepConfig) -> str:
    # The precision is part of the sweep: a resume in the other precision would not reproduce it.
    return json.dumps({**config.as_dict(), "float64": float64()}, sort_keys=True)


def _check_metadata(path) -> None:
    """Read the store's zarr.json first, so a damaged one is an error that names it (Zarr's own
    reader gives a bare JSON error)."""
    metadata = pathlib.Path(path) / "zarr.json"
    try:
        json.loads(metadata.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{metadata} is damaged ({error}); the store's layout cannot be read. Restore it "
            "or start the sweep in a new store."
        ) from None


def open_store(path, config: SweepConfig, program, layout, *, create: bool = True) -> zarr.Group:
    """Create the store for `config`, or reopen it if it holds the same sweep. `layout` gives
    the number of units and step chunks, the seeds per unit and the records per step chunk.
    With `create=False` (processes other than the first of a distributed sweep) wait for the
    store to appear instead of creating it."""
    path = pathlib.Path(path)
    if not create:
        _wait_for(path / "zarr.json")
    if (path / "zarr.json").exists():
        _check_metadata(path)
        root = zarr.open_group(str(path), mode="a")
        stored = root.attrs.get("sweep")
        if stored != _describe(config):
            raise ValueError(
                f"{path} holds a different sweep ({stored}); it is never overwritten. "
                "Choose another output path or delete it."
            )
        return root
    # Built beside its final path and moved into place, so a kill never leaves half a store.
    building = path.with_name(f".{path.name}.building")
    shutil.rmtree(building, ignore_errors=True)
    root = zarr.open_group(str(building), mode="w")
    dims = _dimensions(config)
    coords = _coordinates(config)
    for name, values in coords.items():
        # text labels (e.g. init schemes) as Zarr's variable-length strings
        dtype = str if values.dtype.kind == "U" else values.dtype
        array = root.create_array(name, shape=values.shape, dtype=dtype, dimension_names=[name])
        array[:] = values.astype(object) if dtype is str else values
    times = root.create_array(
        "time", shape=program.time.shape, dtype=program.time.dtype, dimension_names=["time"]
    )
    times[:] = program.time
    times.attrs["units"] = program.time_units
    shape = tuple(len(coords[d]) for d in dims)
    # a unit spans every member point and `seed_block` seeds of one group
    n_shape = len(config.spec.group_axes)
    unit_chunks = (1,) * n_shape + shape[n_shape:-1] + (layout.seed_block,)
    arrays = [(name, dtype, True) for name, dtype in program.series.items()]
    arrays += [(name, dtype, False) for name, dtype in program.summaries.items()]
    for name, dtype, over_time in arrays:
        extra = (len(program.time),) if over_time else ()
        # A bool fill value would make members not yet run read as False (a failure): flags
        # are stored as 1.0 / 0.0 with NaN for "not run", which means missing to every reader.
        flag = dtype == "bool"
        array = root.create_array(
            name,
            shape=shape + extra,
            chunks=unit_chunks + ((layout.chunk_records,) if over_time else ()),
            dtype="float32" if flag else dtype,
            fill_value=np.nan,
            dimension_names=[*dims, *(("time",) if over_time else ())],
        )
        if flag:
            array.attrs["meaning"] = FLAG_MEANING
    root.create_array(
        "chunk_done",
        shape=(layout.n_units, layout.n_step_chunks),
        chunks=(1, 1),
        dtype="bool",
        fill_value=False,
        dimension_names=["unit", "step_chunk"],
    )
    # a group of its own, so Zarr readers take the checkpoints in it for foreign files of a
    # subgroup and leave them alone
    root.create_group(RESUME_DIR)
    root.attrs["sweep"] = _describe(config)
    root.attrs["workload"] = config.workload
    path.parent.mkdir(parents=True, exist_ok=True)
    os.replace(building, path)
    return zarr.open_group(str(path), mode="a")


def _wait_for(marker: pathlib.Path, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if time.monotonic() > deadline:
            raise ValueError(f"{marker.parent} was not created by process 0 within {timeout} s.")
        time.sleep(0.1)


def done_chunks(root: zarr.Group) -> np.ndarray:
    """(units, step chunks) flags."""
    return np.asarray(root["chunk_done"][:])


def write_chunk(root: zarr.Group, unit: int, step_chunk: int, writes: list) -> None:
    """Write `(name, index, values)` records of one unit's step chunk, then its flag."""
    for name, index, values in writes:
        root[name][index] = values
    root["chunk_done"][unit, step_chunk] = True


def read_series(root: zarr.Group, names, index: tuple) -> dict:
    return {name: np.asarray(root[name][index]) for name in names}


def _checkpoint_path(store, unit: int) -> pathlib.Path:
    return pathlib.Path(store) / RESUME_DIR / f"unit-{unit:06d}"


def save_unit_state(store, unit: int, states, step_chunks_done: int, series: dict) -> None:
    """The unit's states after `step_chunks_done` chunks, with the last chunk's series."""
    records = {f"series/{k}": v for k, v in series.items()}
    records["step_chunks_done"] = np.asarray(step_chunks_done)
    save_checkpoint(_checkpoint_path(store, unit), states, records)


def load_unit_state(store, unit: int, like):
    """`(states, step_chunks_done, last chunk's series)`, or None without a checkpoint."""
    loaded = load_checkpoint(_checkpoint_path(store, unit), like)
    if loaded is None:
        return None
    states, records = loaded
    series = {k.removeprefix("series/"): v for k, v in records.items() if k.startswith("series/")}
    return states, int(records["step_chunks_done"]), series


def drop_unit_state(store, unit: int) -> None:
    _checkpoint_path(store, unit).with_suffix(".npz").unlink(missing_ok=True)


def describe_store(path) -> str:
    """What a sweep store holds and how complete it is."""
    dataset = open_sweep(path)
    root = zarr.open_group(str(path), mode="r")
    config = json.loads(root.attrs["sweep"])
    done = done_chunks(root)
    lines = [
        f"sweep: workload {config['workload']}, {config['seeds']} seeds, grid {config['grid']}",
        f"complete: {int(done.all(axis=1).sum())} of {done.shape[0]} units, "
        f"{int(done.sum())} of {done.size} step chunks ({done.mean():.0%})",
        str(dataset),
    ]
    return "\n".join(lines)


def open_sweep(path):
    """The store as one labelled xarray dataset (lazily loaded)."""
    import xarray as xr

    if not (pathlib.Path(path) / "zarr.json").exists():
        raise ValueError(f"{path} is not a sweep store (no zarr.json).")
    _check_metadata(path)
    return xr.open_zarr(str(path), consolidated=False)


def plot_sweep(path, figure) -> None:
    """The standard figures of a (possibly incomplete) sweep store."""
    from ._plots_sweep import plot_figures

    plot_figures(open_sweep(path), figure)
