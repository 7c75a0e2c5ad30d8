"""The Zarr store a sweep streams into, readable as one labelled xarray dataset.

Layout: one array per record with dimensions (shape axes…, member axes…, seed[, time]), the
coordinates of every axis, and `chunk_done` (one flag per unit of work: group × member point ×
block of seeds). A unit's records are written first and its flag last (Zarr's local store
writes every chunk file atomically), so a killed sweep resumes at the first unit without a flag
and ends with a store identical to an uninterrupted run. The sweep description is stored in
the attributes; another description is refused.
"""

import json
import os
import pathlib
import shutil
import time

import jax
import numpy as np
import zarr

from ._sweep_config import SweepConfig


def _dimensions(config: SweepConfig) -> tuple[str, ...]:
    return (*config.spec.shape_axes, *config.spec.member_axes, "seed")


def _coordinates(config: SweepConfig) -> dict:
    out = {name: np.asarray(config.axis(name)) for name in config.spec.shape_axes}
    out.update({name: np.asarray(config.axis(name)) for name in config.spec.member_axes})
    out["seed"] = np.arange(config.seeds)
    return out


def _float64() -> bool:
    return bool(jax.config.jax_enable_x64)


def _describe(config: SweepConfig) -> str:
    # The precision is part of the sweep: a resume in the other precision would not reproduce it.
    return json.dumps({**config.as_dict(), "float64": _float64()}, sort_keys=True)


def open_store(
    path, config: SweepConfig, program, n_units: int, seed_block: int, *, create: bool = True
) -> zarr.Group:
    """Create the store for `config`, or reopen it if it holds the same sweep. Every unit
    (a block of `seed_block` seeds) owns whole chunks, so processes writing different units
    never touch the same file. With `create=False` (processes other than the first of a
    distributed sweep) wait for the store to appear instead of creating it."""
    path = pathlib.Path(path)
    if not create:
        _wait_for(path / "zarr.json")
    if (path / "zarr.json").exists():
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
        array = root.create_array(
            name, shape=values.shape, dtype=values.dtype, dimension_names=[name]
        )
        array[:] = values
    time = root.create_array(
        "time", shape=program.time.shape, dtype="float64", dimension_names=["time"]
    )
    time[:] = program.time
    shape = tuple(len(coords[d]) for d in dims)
    for name, (trailing, dtype) in program.records.items():
        full_shape = shape + tuple(len(program.time) for _ in trailing)
        chunks = (1,) * (len(dims) - 1) + (seed_block,) + full_shape[len(dims) :]
        fill = False if dtype == "bool" else np.nan
        root.create_array(
            name,
            shape=full_shape,
            chunks=chunks,
            dtype=dtype,
            fill_value=fill,
            dimension_names=[*dims, *trailing],
        )
    root.create_array(
        "chunk_done",
        shape=(n_units,),
        chunks=(1,),
        dtype="bool",
        fill_value=False,
        dimension_names=["unit"],
    )
    root.attrs["sweep"] = _describe(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.replace(building, path)
    return zarr.open_group(str(path), mode="a")


def _wait_for(marker: pathlib.Path, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if time.monotonic() > deadline:
            raise ValueError(f"{marker.parent} was not created by process 0 within {timeout} s.")
        time.sleep(0.1)


def done_units(root: zarr.Group) -> np.ndarray:
    return np.asarray(root["chunk_done"][:])


def write_unit(root: zarr.Group, unit: int, index: tuple, records: dict) -> None:
    """Write one unit's records at `index` (a tuple of ints and one seed slice), then its flag."""
    for name, values in records.items():
        root[name][index] = values
    flags = root["chunk_done"]
    flags[unit] = True


def describe_store(path) -> str:
    """What a sweep store holds and how complete it is."""
    dataset = open_sweep(path)
    root = zarr.open_group(str(path), mode="r")
    config = json.loads(root.attrs["sweep"])
    done = done_units(root)
    lines = [
        f"sweep: workload {config['workload']}, {config['seeds']} seeds, grid {config['grid']}",
        f"complete: {int(done.sum())} of {done.size} units ({done.mean():.0%})",
        str(dataset),
    ]
    return "\n".join(lines)


def open_sweep(path):
    """The store as one labelled xarray dataset (lazily loaded)."""
    import xarray as xr

    if not (pathlib.Path(path) / "zarr.json").exists():
        raise ValueError(f"{path} is not a sweep store (no zarr.json).")
    return xr.open_zarr(str(path), consolidated=False)


def plot_sweep(path, figure) -> None:
    """The standard figures of a (possibly incomplete) sweep store."""
    from ._plots_sweep import plot_figures

    plot_figures(open_sweep(path), figure)
