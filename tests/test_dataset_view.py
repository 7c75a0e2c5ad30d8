"""One dataset: a stored sweep opened with `open_sweep` is identical to the in-memory sweep,
every dimension has a coordinate, and the attributes survive netCDF."""

import numpy as np
import pytest
import xarray as xr

from jaxicl import ReducedAllocation, open_sweep, sweep


STUDY = ReducedAllocation(d=9, horizon=2.0, n_records=4, history=True)
KWARGS = dict(grid={"context_len": [50, 100], "init_scale": [1e-3, 2e-3]}, seeds=2)


@pytest.fixture(scope="module")
def in_memory():
    return sweep(STUDY, **KWARGS, progress=False)


def test_the_stored_sweep_is_the_in_memory_one(in_memory, tmp_path):
    sweep(STUDY, **KWARGS, store=tmp_path / "store", progress=False)
    xr.testing.assert_identical(open_sweep(tmp_path / "store").load(), in_memory)
    assert "chunk_done" not in in_memory and "chunk_digest" not in in_memory


def test_every_dimension_has_a_coordinate(in_memory):
    assert set(in_memory.dims) <= set(in_memory.coords)
    np.testing.assert_array_equal(in_memory["head"], np.arange(3))


def test_the_dataset_round_trips_through_netcdf(in_memory, tmp_path):
    pytest.importorskip("scipy")  # xarray's netCDF3 writer (netCDF4 also serves)
    in_memory.to_netcdf(tmp_path / "sweep.nc")
    with xr.open_dataset(tmp_path / "sweep.nc") as back:
        xr.testing.assert_identical(back.load(), in_memory)


def test_the_default_loss_says_it_is_averaged_after_the_record(in_memory):
    """The default `loss` series is the mean over the block of steps after each record time,
    while observables are taken at the record time itself: the store says so. A study's own
    `loss` (here the loss at the record step, with its (Ω, M)) is left to its own words."""
    from jaxicl import FullAllocation

    study = FullAllocation(d=6, n_tasks=2, context_len=8, batch_size=8, steps=4, n_records=2)
    data = sweep(study, seeds=1, progress=False)
    assert "observables are taken at t" in data["loss"].attrs["meaning"]
    assert "meaning" not in in_memory["loss"].attrs
