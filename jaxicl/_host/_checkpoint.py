"""Resumable runs on disk: a configuration guard, atomic writes, and per-chunk checkpoints.

A run directory holds `config.json`. Reopening it with a different configuration is refused
(never overwritten); with the same configuration the run continues from its last complete
chunk. Because every random stream is step-indexed, a resumed run equals an uninterrupted one.
"""

import contextlib
import io
import json
import os
import pathlib
import tempfile
import zipfile

import equinox as eqx
import numpy as np


def _atomic_write(path: pathlib.Path, write) -> None:
    """Write through a temporary file and rename, so a kill never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        # mkstemp makes the file private (0600); results get the user's usual permissions.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def claim_run_directory(out_dir: pathlib.Path, config: dict) -> None:
    """Create `out_dir` for `config`, or check that it already belongs to the same `config`.

    A directory that holds anything but a run (no `config.json`) is refused: writing into it
    would overwrite files of the same names (a `summary.json`, a sweep store's contents)."""
    out_dir = pathlib.Path(out_dir).resolve()  # `.` and `sub/..` have no name of their own
    path = out_dir / "config.json"
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir} is a file, not a directory; choose another output path.")
    if out_dir.is_dir() and not path.exists() and any(out_dir.iterdir()):
        raise ValueError(
            f"{out_dir} is not empty and holds no jaxicl run (no config.json); choose a new "
            "or empty directory, so that nothing in it is overwritten."
        )
    if path.exists():
        try:
            stored = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(
                f"{path} is not a jaxicl run's configuration (not JSON: {error}); choose another "
                "output directory, so that nothing in this one is overwritten."
            ) from None
        if not isinstance(stored, dict):
            raise ValueError(
                f"{path} is not a jaxicl run's configuration (a JSON {type(stored).__name__}, "
                "not an object); choose another output directory."
            )
        if stored != config:
            differing = sorted(
                k for k in set(stored) | set(config) if stored.get(k) != config.get(k)
            )
            details = "; ".join(
                f"{k}: stored {stored.get(k)!r}, requested {config.get(k)!r}" for k in differing
            )
            raise ValueError(
                f"{out_dir} holds a run with a different configuration ({details}). "
                "Choose another output directory or delete this one; it is never overwritten."
            )
        return
    try:
        _atomic_write(
            path, lambda f: f.write(json.dumps(config, indent=2, sort_keys=True).encode())
        )
    except OSError as error:
        raise ValueError(f"cannot write the run directory {out_dir}: {error.strerror}.") from None


_STATE_KEY = "__state__"


def save_checkpoint(path: pathlib.Path, state, records: dict) -> None:
    """Save a pytree of arrays (`state`) and a dict of NumPy record arrays in one file
    (`path.npz`), atomically: a kill leaves the previous checkpoint or the new one, never a
    state from one and records from the other."""
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, state)
    arrays = {**records, _STATE_KEY: np.frombuffer(buffer.getvalue(), np.uint8)}
    _atomic_write(path.with_suffix(".npz"), lambda f: np.savez(f, **arrays))


def load_checkpoint(path: pathlib.Path, like):
    """Load what `save_checkpoint` wrote (`like`: a pytree of the state's structure), or return
    None if there is no checkpoint."""
    path = path.with_suffix(".npz")
    if not path.exists():
        return None
    # Our own file handle: np.load leaves its own open when the zip is damaged.
    with _readable(path, "that chunk"), open(path, "rb") as f:
        with np.load(f) as data:
            records = {k: data[k] for k in data.files if k != _STATE_KEY}
            state_bytes = data[_STATE_KEY].tobytes()
        state = eqx.tree_deserialise_leaves(io.BytesIO(state_bytes), like)
    return state, records


@contextlib.contextmanager
def _readable(path: pathlib.Path, redo: str):
    """Turn a damaged stored file (truncated, not a zip, wrong contents) into one clear error
    that names it and how to recover."""
    try:
        yield
    except (zipfile.BadZipFile, EOFError, KeyError, ValueError, OSError) as error:
        raise ValueError(
            f"{path} is damaged ({type(error).__name__}: {error}); delete it and rerun the "
            f"same command to recompute {redo}."
        ) from None


def save_json(path: pathlib.Path, payload: dict) -> None:
    _atomic_write(path, lambda f: f.write(json.dumps(payload, indent=2).encode()))
