"""Coordinates are checked: a damaged grid value or time is named at `inspect` and rewritten
from the sweep's description at resume (one line each), never a silent relabelling."""

import numpy as np
import pytest
import xarray as xr

from jaxicl import ReducedAllocation, sweep
from jaxicl._sweeps._store import describe_store


STUDY = ReducedAllocation(d=9, horizon=2.0, n_records=4)
GRID = {"heads": [2, 3], "init_scale": [1e-3, 3e-3]}


def _flip_a_bit(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage, name",
    [(_flip_a_bit, "init_scale"), (lambda p: p.unlink(), "time")],
)
def test_a_damaged_coordinate_is_named_and_rewritten_at_resume(tmp_path, capsys, damage, name):
    store = tmp_path / "store"
    kwargs = dict(grid=GRID, seeds=2, store=store, progress=False)
    sweep(STUDY, **kwargs)
    before = xr.open_zarr(str(store), consolidated=False)[name].values
    damage(store / name / "c" / "0")
    assert f"damaged coordinates: {name} do not read back" in describe_store(store)
    sweep(STUDY, **kwargs)
    assert f"coordinate `{name}` did not read back as written" in capsys.readouterr().err
    np.testing.assert_array_equal(xr.open_zarr(str(store), consolidated=False)[name], before)
    assert "damaged coordinates" not in describe_store(store)


def test_text_labels_read_back_as_written(tmp_path):
    """Init schemes are stored as variable-length strings: an intact store reports nothing."""
    from jaxicl import Balanced, RandomPositive

    store = tmp_path / "store"
    schemes = {"scheme": [Balanced(), RandomPositive()]}
    sweep(STUDY, grid=schemes, seeds=2, store=store, progress=False)
    assert "damaged coordinates" not in describe_store(store)
