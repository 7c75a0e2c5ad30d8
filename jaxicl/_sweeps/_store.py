"""The Zarr store a sweep streams into, readable as one labelled xarray dataset.

Layout: one array per series with dimensions (group axes…, member axes…, seed, time) and one
per summary without `time` (swept settings only: fixed ones are in the description); the
coordinates of every axis; and `chunk_done`, one flag per unit of work (a group × a block of
seeds, every member point) and step chunk, with `chunk_digest`, the checksum of what that step
chunk wrote: a resume and `inspect` read every flagged chunk back and compare, so a deleted or
truncated chunk file is found and recomputed, never reported complete. A unit's step chunk
owns whole Zarr chunks, so processes writing different units never touch the same file. Its
records are written first, then their checksum, and its flag last (Zarr's local store writes
every chunk file atomically); the unit's state is checkpointed under `resume/` before either,
so a killed sweep resumes at the first step chunk without its flag and ends with a store
identical to an uninterrupted run.

The attributes hold the sweep's description (another sweep is refused) and its layout (seeds
per unit, records per step chunk): a resume uses the stored layout, so a machine with other
memory cannot cut the same sweep differently. Without a path the store lives in memory (same
code, no checkpoints).
"""

import contextlib
import fcntl
import hashlib
import json
import os
import pathlib
import shutil
import sys
import tempfile
import time
import warnings

import jax
import numpy as np

from .._host._checkpoint import load_checkpoint, save_checkpoint
from ._code import check_code, code_fingerprint
from ._plan import SweepPlan, label
from ._plots import plot_figures
from ._study import AbstractStudy


def _zarr():
    """Zarr, imported on the first store opened, so that `import jaxicl` stays light."""
    import zarr
    import zarr.storage

    return zarr


RESUME_DIR = "resume"
FLAG_MEANING = "1 = true, 0 = false, NaN = not run yet"
# the default series: not taken at the record's step like the observables, but averaged after it
LOSS_MEANING = (
    "mean training loss over the record_every steps that start at the record's time t "
    "(observables are taken at t itself)"
)


def float64() -> bool:
    return bool(jax.config.jax_enable_x64)


def _dimensions(plan: SweepPlan) -> tuple[str, ...]:
    return (*plan.group_axes, *plan.swept_member_axes, "seed")


def _coordinates(plan: SweepPlan) -> dict:
    out = {name: np.asarray([label(v) for v in plan.axis(name)]) for name in _dimensions(plan)[:-1]}
    out["seed"] = np.arange(plan.seeds)
    return out


def _coordinate_digest(values) -> str:
    values = np.asarray(values)
    if values.dtype.kind in "UOT":  # labels (NumPy, object or variable-length strings): text
        data = "\x00".join(str(v) for v in values.ravel()).encode()
    else:
        data = values.dtype.str.encode() + np.ascontiguousarray(values).tobytes()
    return hashlib.sha256(data).hexdigest()[:16]


def _digests(arrays: dict) -> dict:
    return {name: _coordinate_digest(values) for name, values in arrays.items()}


def damaged_coordinates(root) -> list[str]:
    """The coordinate arrays (grid values, seeds, times) whose stored values no longer match
    the checksums taken when the store was created (a flipped bit or a deleted chunk would
    relabel results silently). Stores from before the checksums: none."""
    expected = dict(root.attrs.get("coordinates", {}))
    damaged = []
    for name, digest in expected.items():
        try:
            if _coordinate_digest(root[name][:]) != digest:
                damaged.append(name)
        except Exception:  # an unreadable array is damaged too, whatever Zarr raised
            damaged.append(name)
    return damaged


def repair_coordinates(root, path, plan, times) -> None:
    """Rewrite damaged coordinate arrays from the sweep's own plan (they are a function of it),
    saying which in one line each."""
    damaged = damaged_coordinates(root)
    if not damaged:
        return
    values = {**_coordinates(plan), "time": times}
    for name in damaged:
        array = root[name]
        array[:] = values[name].astype(object) if values[name].dtype.kind == "U" else values[name]
        print(
            f"jaxicl: {path}: coordinate `{name}` did not read back as written; rewritten from "
            "the sweep's description.",
            file=sys.stderr,
        )


def _metadata_fault(path: pathlib.Path) -> str | None:
    """None where the JSON file at `path` reads, else why not: "missing" or "damaged (…)"."""
    try:
        json.loads(path.read_text())
    except FileNotFoundError:
        return "missing"
    except (OSError, ValueError) as error:  # a UnicodeDecodeError is a ValueError
        return f"damaged ({error})"
    return None


def _check_metadata(path, arrays: bool = False) -> None:
    """Read the store's zarr.json first (and with `arrays`, every array's), so a damaged one is
    an error that names it (Zarr's own reader gives a bare JSON error)."""
    metadata = pathlib.Path(path) / "zarr.json"
    fault = _metadata_fault(metadata)
    if fault:
        raise ValueError(
            f"{metadata} is {fault}; the store's layout cannot be read. Restore it or start "
            "the sweep in a new store."
        )
    for array in sorted(pathlib.Path(path).glob("*/zarr.json")) if arrays else ():
        fault = _metadata_fault(array)
        if fault:
            raise ValueError(
                f"{array} is {fault}; rerun the sweep to rebuild it from the sweep's description."
            )


def _reopen(path: pathlib.Path, description: str, mode: str):
    """The store at `path`, refused unless it holds the sweep of `description`."""
    _check_metadata(path)
    root = _zarr().open_group(str(path), mode=mode)
    stored = root.attrs.get("sweep")
    if stored != description:
        differences = (
            ["it holds no sweep description"]
            if stored is None
            else sweep_differences(json.loads(stored), json.loads(description))
        )
        if differences:
            raise ValueError(
                f"{path} holds a different sweep ({'; '.join(differences)}); it is never "
                "overwritten. Choose another output path or delete it."
            )
    return root


def _same(a, b) -> bool:
    """Equal as settings: numbers by value (8 == 8.0), lists and dicts item by item."""
    number = lambda v: isinstance(v, int | float) and not isinstance(v, bool)  # noqa: E731
    if number(a) and number(b):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def sweep_differences(stored: dict, asked: dict) -> list[str]:
    """What differs between a stored sweep description and the one asked for, field by field
    (`settings.horizon: stored 8.0, asked 9`); empty when they are the same sweep."""
    out = []
    for key in sorted(stored.keys() | asked.keys()):
        old, new = stored.get(key), asked.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            for field in sorted(old.keys() | new.keys()):
                if not _same(old.get(field), new.get(field)):
                    out.append(
                        f"{key}.{field}: stored {old.get(field)!r}, asked {new.get(field)!r}"
                    )
        elif not _same(old, new):
            out.append(f"{key}: stored {old!r}, asked {new!r}")
    return out


def stored_layout(path, plan: SweepPlan) -> dict | None:
    """The layout the store at `path` was created with (refusing another sweep's store first),
    or None when there is no store yet."""
    if path is None or not (pathlib.Path(path) / "zarr.json").exists():
        return None
    root = _reopen(pathlib.Path(path), plan.description(float64()), "r")
    return dict(root.attrs["layout"])


def open_store(
    path, plan: SweepPlan, time_axis, dtypes, layout, *, create=True, allow_code_change=False
):
    """Create the store of `plan` (in memory when `path` is None), or reopen it if it holds the
    same sweep. `time_axis` is `(times, units)`; `dtypes` is `(series, summaries)`: name →
    (dtype, shape per record) and name → (dtype, shape per member); `layout` (a dict) gives
    the units, step chunks, seeds per unit and records per step chunk. With `create=False`
    (processes other than the first of a distributed sweep) wait for the store to appear
    instead of creating it. Resuming under other code of the study is refused unless
    `allow_code_change` (see `_code.py`)."""
    description = plan.description(float64())
    if path is None:
        root = _zarr().open_group(_zarr().storage.MemoryStore(), mode="w")
        _create(root, plan, time_axis, dtypes, layout, description)
        return root
    path = pathlib.Path(path)
    if not create:
        _wait_for(path / "zarr.json")
    if (path / "zarr.json").exists():
        return _resume(
            path, description, plan, (time_axis[0], dtypes, layout), create, allow_code_change
        )
    # Built beside its final path, in a directory of this process's own, and renamed into
    # place: a kill never leaves half a store, and of two processes creating it at once one
    # store wins whole (the other's rename fails and it opens the winner's).
    path.parent.mkdir(parents=True, exist_ok=True)
    building = pathlib.Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.building-"))
    root = _zarr().open_group(str(building), mode="w")
    _create(root, plan, time_axis, dtypes, layout, description)
    # a group of its own, so Zarr readers take the checkpoints in it for foreign files of a
    # subgroup and leave them alone
    root.create_group(RESUME_DIR)
    try:
        os.rename(building, path)
    except OSError:
        shutil.rmtree(building, ignore_errors=True)
        if not (path / "zarr.json").exists():
            raise ValueError(
                f"{path} exists and is not a sweep store; choose another output path."
            ) from None
        return _resume(
            path, description, plan, (time_axis[0], dtypes, layout), create, allow_code_change
        )
    return _zarr().open_group(str(path), mode="a")


def _resume(path, description, plan, shapes, writer: bool, allow_code_change: bool):
    """Reopen the store of this sweep; the process that speaks for it checks the code and
    repairs coordinates and array metadata (`shapes`: the times, dtypes and layout)."""
    root = _reopen(path, description, "a")
    if writer:  # the process that created or resumes the store speaks for it
        times, dtypes, layout = shapes
        check_code(root, path, plan.study, allow_code_change=allow_code_change)
        repair_coordinates(root, path, plan, times)
        repair_arrays(root, path, plan, len(times), dtypes, layout)
    return root


@contextlib.contextmanager
def writer_lock(path):
    """Hold the store's writer lock while a sweep runs in it (one process; a distributed sweep's
    processes coordinate through their units instead): a second sweep into the same store is
    refused instead of racing the first."""
    if path is None:
        yield
        return
    lock = pathlib.Path(path) / RESUME_DIR / "writer.lock"
    lock.parent.mkdir(exist_ok=True)  # a deleted resume/ is rebuilt by the resume
    with open(lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(
                f"another process is running a sweep into {path}; wait for it to finish (or "
                "stop it), then rerun this command to resume."
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _data_arrays(plan: SweepPlan, n_times: int, dtypes, layout: dict):
    """`(name, create_array arguments, meaning)` of every series and summary array."""
    dims = _dimensions(plan)
    shape = (*(len(plan.axis(d)) for d in dims[:-1]), plan.seeds)
    # a unit spans every member point and `seed_block` seeds of one group
    n_groups = len(plan.group_axes)
    unit_chunks = (1,) * n_groups + shape[n_groups:-1] + (layout["seed_block"],)
    series, summaries = dtypes
    series_dims, summary_dims = type(plan.study).series_dims, type(plan.study).summary_dims
    arrays = [(name, dtype, extra, True) for name, (dtype, extra) in series.items()]
    arrays += [(name, dtype, extra, False) for name, (dtype, extra) in summaries.items()]
    for name, dtype, extra, over_time in arrays:
        after = (
            ((n_times, *extra), ("time", *series_dims.get(name, ())))
            if over_time
            else (extra, summary_dims.get(name, ()))
        )
        # A bool fill value would make members not yet run read as False (a failure): flags
        # are stored as 1.0 / 0.0 with NaN for "not run", which means missing to every reader.
        flag = np.dtype(dtype) == np.bool_
        if not flag and np.dtype(dtype).kind not in "fc":
            dtype = np.float64 if float64() else np.float32  # integers: NaN marks "not run"
        spec = dict(
            shape=shape + after[0],
            chunks=unit_chunks + ((layout["chunk_records"], *extra) if over_time else extra),
            dtype="float32" if flag else dtype,
            fill_value=np.nan,
            dimension_names=[*dims, *after[1]],
        )
        meaning = type(plan.study).meanings.get(name, FLAG_MEANING if flag else None)
        if meaning is None and name == "loss" and type(plan.study).series is AbstractStudy.series:
            meaning = LOSS_MEANING
        yield name, spec, meaning


def repair_arrays(root, path, plan: SweepPlan, n_times: int, dtypes, layout: dict) -> None:
    """Rebuild the metadata (zarr.json) of every series or summary array whose metadata is
    missing or damaged, from the sweep's description, with one line each. Its chunk files
    are kept: where they are intact they read back as written again, and the read-back
    check reruns the units whose records do not."""
    for name, spec, meaning in _data_arrays(plan, n_times, dtypes, layout):
        metadata = pathlib.Path(path) / name / "zarr.json"
        fault = _metadata_fault(metadata)
        if fault is None:
            continue
        why = fault.split(" ")[0]  # missing or damaged
        metadata.unlink(missing_ok=True)
        chunks = pathlib.Path(path) / name / "c"
        kept = pathlib.Path(path) / f".{name}-chunks-kept"
        if chunks.exists():  # create_array(overwrite=True) would delete the chunk files
            chunks.rename(kept)
        with _quiet_about_unrecognized():
            array = root.create_array(name, **spec, overwrite=True)
        if kept.exists():
            shutil.rmtree(chunks, ignore_errors=True)
            kept.rename(chunks)
        if meaning is not None:
            array.attrs["meaning"] = meaning
        print(
            f"jaxicl: {path}: the metadata of `{name}` ({metadata}) was {why}; rebuilt from "
            "the sweep's description.",
            file=sys.stderr,
        )


def _create(root, plan: SweepPlan, time_axis, dtypes, layout: dict, description: str) -> None:
    coords = _coordinates(plan)
    for name, values in coords.items():
        # text labels (e.g. init schemes) as Zarr's variable-length strings
        dtype = str if values.dtype.kind == "U" else values.dtype
        array = root.create_array(name, shape=values.shape, dtype=dtype, dimension_names=[name])
        array[:] = values.astype(object) if dtype is str else values
    times, units = time_axis
    time_array = root.create_array(
        "time", shape=times.shape, dtype=times.dtype, dimension_names=["time"]
    )
    time_array[:] = times
    time_array.attrs["units"] = units
    root.attrs["coordinates"] = _digests({**coords, "time": times})
    for name, spec, meaning in _data_arrays(plan, len(times), dtypes, layout):
        array = root.create_array(name, **spec)
        if meaning is not None:
            array.attrs["meaning"] = meaning
    for name in BOOKKEEPING:
        _bookkeeping_array(root, name, layout)
    described = json.loads(description)
    root.attrs["sweep"] = description
    root.attrs["study"] = described["study"]
    root.attrs["settings"] = described["settings"]
    root.attrs["layout"] = layout
    root.attrs["code"] = code_fingerprint(plan.study)


def _wait_for(marker: pathlib.Path, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if time.monotonic() > deadline:
            raise ValueError(f"{marker.parent} was not created by process 0 within {timeout} s.")
        time.sleep(0.1)


# per unit and step chunk: the checksum of what was written, then the flag that it is done
BOOKKEEPING = {"chunk_digest": ("uint64", 0), "chunk_done": ("bool", False)}


def _bookkeeping_array(root, name: str, layout: dict, overwrite: bool = False):
    dtype, fill = BOOKKEEPING[name]
    return root.create_array(
        name,
        shape=(layout["n_units"], layout["n_step_chunks"]),
        chunks=(1, 1),  # a file per unit and step chunk: damage stays with its unit
        dtype=dtype,
        fill_value=fill,
        dimension_names=["unit", "step_chunk"],
        overwrite=overwrite,
    )


def _rows(root, name: str) -> tuple[np.ndarray, list[int]]:
    """A bookkeeping array read unit by unit, and the units whose row cannot be read (a
    damaged chunk file); their rows read as the fill value."""
    dtype, fill = BOOKKEEPING[name]
    layout = root.attrs["layout"]
    out = np.full((layout["n_units"], layout["n_step_chunks"]), fill, dtype)
    try:
        array = root[name]
    except Exception:  # noqa: BLE001 — missing or unreadable metadata: every row unknown
        return out, list(range(out.shape[0]))
    try:
        return np.asarray(array[:], dtype), []  # intact: one read
    except Exception:  # noqa: BLE001 — a damaged chunk file somewhere: find it unit by unit
        pass
    unreadable = []
    for u in range(out.shape[0]):
        try:
            out[u] = array[u, :]
        except Exception:  # noqa: BLE001 — a damaged chunk file: this unit's row unknown
            unreadable.append(u)
    return out, unreadable


def recover_bookkeeping(root, path) -> list[str]:
    """Repair the flags and checksums unit by unit before a resume, so no damaged bookkeeping
    file costs more than the units it covers; returns one line per repair.

    - A missing or unreadable `chunk_done` (whole array): the flags are rebuilt from the
      checksums (a chunk with one was written whole; the resume then checks it against the
      records), so no finished unit is lost.
    - A missing or unreadable `chunk_digest` (whole array): no finished unit can be checked,
      so every unit runs again.
    - A unit whose flags or checksums cannot be read: that unit runs again.
    - A missing `resume/` group (the units' checkpoints): recreated; units part-way through
      run again from their start (see the runner)."""
    layout = root.attrs["layout"]
    lines = []
    readable = {}
    for name in BOOKKEEPING:
        try:
            root[name][0, 0]
            readable[name] = True
        except Exception:  # noqa: BLE001 — missing or damaged metadata
            readable[name] = False
    digests, bad_digests = _rows(root, "chunk_digest")
    if not readable["chunk_digest"]:
        _bookkeeping_array(root, "chunk_digest", layout, overwrite=True)
        _bookkeeping_array(root, "chunk_done", layout, overwrite=True)
        return [
            "the chunk checksums (chunk_digest) are missing or damaged: no finished unit can be "
            "checked, so every unit runs again"
        ]
    flags, bad_flags = _rows(root, "chunk_done")
    if not readable["chunk_done"]:
        flags, bad_flags = digests != 0, []
        array = _bookkeeping_array(root, "chunk_done", layout, overwrite=True)
        array[:] = flags
        lines.append(
            "the flags (chunk_done) were missing or damaged: rebuilt from the checksums, each "
            "checked against its records"
        )
    bad = sorted(set(bad_digests) | set(bad_flags))
    for u in bad:
        root["chunk_digest"][u, :] = 0
        root["chunk_done"][u, :] = False
    if bad:
        lines.append(f"units {bad} had unreadable flags or checksums: they run again")
    if path is not None and not (pathlib.Path(path) / RESUME_DIR / "zarr.json").exists():
        root.require_group(RESUME_DIR)
        lines.append("the checkpoints' group (resume/) was missing: recreated")
    return lines


def done_chunks(root) -> np.ndarray:
    """(units, step chunks) flags; a unit whose flags cannot be read counts as not done."""
    return _rows(root, "chunk_done")[0]


def _digest(pieces) -> np.uint64:
    """A checksum of `(name, values)` pieces, in any order, of what a reader reads back: every
    NaN as the canonical one (Zarr does not write a chunk that is all NaN, its fill value, and
    reads it back as the canonical NaN whatever bits the computation produced)."""
    h = hashlib.blake2b(digest_size=8)
    for name, values in sorted(pieces, key=lambda piece: piece[0]):
        values = np.asarray(values)
        if values.dtype.kind in "fc":
            values = np.where(np.isnan(values), np.array(np.nan, values.dtype), values)
        h.update(name.encode())
        h.update(np.ascontiguousarray(values).tobytes())
    return np.uint64(int.from_bytes(h.digest(), "little"))


def write_chunk(root, unit: int, step_chunk: int, writes: list) -> None:
    """Write `(name, index, values)` records of one unit's step chunk, then their checksum,
    then its flag."""
    for name, index, values in writes:
        root[name][index] = values
    pieces = [(name, np.asarray(values, root[name].dtype)) for name, _, values in writes]
    root["chunk_digest"][unit, step_chunk] = _digest(pieces)
    root["chunk_done"][unit, step_chunk] = True


def damaged_units(root) -> list[int]:
    """Units whose flagged step chunks do not read back as written (a chunk file deleted,
    truncated or altered): their records are not what the flags claim."""
    layout = root.attrs["layout"]
    done, digests = done_chunks(root), _rows(root, "chunk_digest")[0]
    n_seeds, block = root["seed"].shape[0], layout["seed_block"]
    n_blocks = -(-n_seeds // block)
    n_times = root["time"].shape[0]
    names = [n for n, a in root.arrays() if "seed" in (a.metadata.dimension_names or ())]
    names = [n for n in names if n != "seed"]
    damaged = []
    for u in range(done.shape[0]):
        g, b = divmod(u, n_blocks)
        seeds = slice(b * block, min(n_seeds, (b + 1) * block))
        for c in np.flatnonzero(done[u]):
            times = slice(
                c * layout["chunk_records"], min(n_times, (c + 1) * layout["chunk_records"])
            )
            pieces = []
            try:
                for name in names:
                    array = root[name]
                    over_time = "time" in array.metadata.dimension_names
                    if not over_time and c != done.shape[1] - 1:
                        continue  # summaries come with the last step chunk
                    n_group = layout["group_axes"]
                    position = np.unravel_index(g, array.shape[:n_group]) if n_group else ()
                    # member axes between the group axes and `seed`; any record dims after time
                    rest = array.metadata.dimension_names.index("seed") - n_group
                    index = (*map(int, position), *(slice(None),) * rest, seeds)
                    index += (times,) if over_time else ()
                    pieces.append((name, np.asarray(array[index])))
            except Exception:  # noqa: BLE001 — any unreadable chunk is damage to report
                damaged.append(u)
                break
            if _digest(pieces) != digests[u, c]:
                damaged.append(u)
                break
    return damaged


def reset_units(root, path, units) -> None:
    """Clear the flags, checksums and checkpoints of `units`, so the sweep runs them again."""
    for u in units:
        root["chunk_done"][u, :] = False
        root["chunk_digest"][u, :] = 0
        if path is not None:
            drop_unit_state(path, u)


def read_series(root, names, index: tuple) -> dict:
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


@contextlib.contextmanager
def _quiet_about_unrecognized():
    """Zarr warns once per directory it finds without metadata (a bookkeeping array or the
    checkpoints' group whose zarr.json was lost); the store's own checks name those once."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr")
        yield


def _bookkeeping_lines(root) -> list[str]:
    """What `inspect` says of damaged flags and checksums (what a rerun does about them)."""
    n_units = root.attrs["layout"]["n_units"]
    unreadable = {name: _rows(root, name)[1] for name in BOOKKEEPING}
    if len(unreadable["chunk_digest"]) == n_units:
        return [
            "damaged: the chunk checksums (chunk_digest) are missing or unreadable; a rerun "
            "runs every unit again"
        ]
    if len(unreadable["chunk_done"]) == n_units:
        return [
            "damaged: the flags (chunk_done) are missing or unreadable; a rerun rebuilds them "
            "from the checksums"
        ]
    bad = sorted(set(unreadable["chunk_done"]) | set(unreadable["chunk_digest"]))
    if not bad:
        return []
    return [f"damaged: units {bad} have unreadable flags or checksums; a rerun reruns them"]


def describe_store(path) -> str:
    """What a sweep store holds and how complete it is."""
    with _quiet_about_unrecognized():
        return _describe(path)


def _describe(path) -> str:
    dataset = open_sweep(path)
    root = _zarr().open_group(str(path), mode="r")
    sweep = json.loads(root.attrs["sweep"])
    done = done_chunks(root)
    damaged = damaged_units(root)
    done[damaged] = False
    lines = [
        f"sweep: study {sweep['study']}, {sweep['seeds']} seeds, grid {sweep['grid']}",
        f"settings: {sweep['settings']}",
        f"complete: {int(done.all(axis=1).sum())} of {done.shape[0]} units, "
        f"{int(done.sum())} of {done.size} step chunks ({done.mean():.0%})",
    ]
    if damaged:
        lines.append(
            f"damaged: units {damaged} do not read back as written (a chunk file deleted or "
            "truncated); rerun the sweep to recompute them."
        )
    lines += _bookkeeping_lines(root)
    coordinates = damaged_coordinates(root)
    if coordinates:
        lines.append(
            f"damaged coordinates: {', '.join(coordinates)} do not read back as written (their "
            "labels would be wrong); rerun the sweep to rewrite them from its description."
        )
    code = root.attrs.get("code")
    if code is not None:
        changes = len(root.attrs.get("code_changes", []))
        lines.append(
            f"code: {code['class']} (source {code['source']}, jaxicl {code['jaxicl']})"
            + (f"; {changes} accepted code change(s) while it ran" if changes else "")
        )
    path = pathlib.Path(path)
    for leftover in sorted(path.parent.glob(f".{path.name}.building-*")):
        lines.append(
            f"leftover: {leftover} is a creation of this store that was killed before it "
            "finished; nothing reads it, delete it."
        )
    lines.append(str(dataset.drop_vars(["chunk_done", "chunk_digest"], errors="ignore")))
    return "\n".join(lines)


def open_sweep(path):
    """The store at `path` as one labelled xarray dataset (lazily loaded)."""
    import xarray as xr

    if not (pathlib.Path(path) / "zarr.json").exists():
        raise ValueError(f"{path} is not a sweep store (no zarr.json).")
    _check_metadata(path, arrays=True)
    with _quiet_about_unrecognized():
        dataset = xr.open_zarr(str(path), consolidated=False)
    return _labelled(dataset)


def as_dataset(root):
    """An open store as a labelled xarray dataset, loaded into memory (for in-memory sweeps):
    the same dataset `open_sweep` gives of a stored sweep."""
    import xarray as xr

    return _labelled(xr.open_zarr(root.store, consolidated=False)).load()


def _labelled(dataset):
    """The dataset users see: without the bookkeeping arrays (`zarr.open_group(store)` still
    reads them), every dimension with a coordinate (a series' or summary's own dimensions,
    e.g. head and task, numbered from 0), and attributes netCDF can write (tables as JSON
    text)."""
    dataset = dataset.drop_vars(list(BOOKKEEPING), errors="ignore")
    numbered = {d: np.arange(n) for d, n in dataset.sizes.items() if d not in dataset.coords}
    dataset = dataset.assign_coords(numbered)
    # netCDF reserves `coordinates` (CF): the store's checksums of them keep another name
    renamed = {"coordinates": "coordinate_checksums"}
    dataset.attrs = {
        renamed.get(k, k): json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else v
        for k, v in dataset.attrs.items()
    }
    return dataset


def plot_sweep(path, figure, var: str | None = None) -> int:
    """The standard figures of a (possibly incomplete) sweep store, the series `var` (default
    `loss`) over time; returns how many diverged members the medians exclude."""
    return plot_figures(open_sweep(path), figure, var)
