"""A user's own study runs through the same engine as the built-in ones: in memory or into a
store, from Python or from a sweep file by import path, with the keys, per-member
hyperparameters and summaries the runner promises (checked against a closed form)."""

import os
import pathlib
import subprocess
import sys
from typing import ClassVar

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import zarr
from helpers import kill_when_flagged
from own_study import Quadratic, closed_form_loss

import jaxicl


GRID = {"d": [2, 3], "learning_rate": [0.05, 0.2], "init_scale": [0.5, 2.0]}


def _initial_w(seed, d, scale, root_seed=0):
    init_key = jr.fold_in(jr.key(root_seed), 0)  # the runner's init stream
    return scale * jr.normal(jr.fold_in(init_key, seed), (d,))


def test_own_study_in_memory_matches_the_closed_form():
    data = jaxicl.sweep(Quadratic(), grid=GRID, seeds=3, members_per_call=4, chunk_records=1)
    assert dict(data["loss"].sizes) == {
        "d": 2,
        "learning_rate": 2,
        "init_scale": 2,
        "seed": 3,
        "time": 4,
    }
    np.testing.assert_array_equal(data["time"].values, [0, 3, 6, 9])
    for d in (2, 3):
        for rate in (0.05, 0.2):
            for scale in (0.5, 2.0):
                for seed in range(3):
                    w0 = _initial_w(seed, d, scale)
                    expected = closed_form_loss(w0, rate, 3.0 * jnp.arange(4.0))
                    point = dict(d=d, learning_rate=rate, init_scale=scale, seed=seed)
                    np.testing.assert_allclose(data["loss"].sel(point).values, expected, rtol=1e-10)
                    # the observable: w[0] moves to 1 geometrically, at each member's own rate
                    w_end = 1 + (w0[0] - 1) * (1 - 2 * rate) ** 12
                    np.testing.assert_allclose(data["final_w0"].sel(point), w_end, rtol=1e-10)
                    assert data["converged"].sel(point) == float(expected[-1] < 1e-3)
    converged = data["converged"].values
    assert 0 < converged.sum() < converged.size  # both outcomes occur: the flag is informative
    assert data["converged"].attrs["meaning"].startswith("1 = true")


def test_in_memory_equals_the_store_and_the_root_seed_moves_every_member(tmp_path):
    kwargs = dict(grid=GRID, seeds=2, members_per_call=8)
    memory = jaxicl.sweep(Quadratic(), **kwargs)
    stored = jaxicl.sweep(Quadratic(), store=tmp_path / "store", **kwargs).load()
    for name in ("loss", "w0", "final_w0", "converged"):
        np.testing.assert_array_equal(memory[name].values, stored[name].values)
    other = jaxicl.sweep(Quadratic(), root_seed=1, **kwargs)
    assert (np.abs(other["final_w0"].values - memory["final_w0"].values) > 1e-6).all()
    w0 = _initial_w(1, 3, 2.0, root_seed=1)
    point = dict(d=3, learning_rate=0.2, init_scale=2.0, seed=1)
    np.testing.assert_allclose(
        other["loss"].sel(point).values,
        closed_form_loss(w0, 0.2, 3.0 * jnp.arange(4.0)),
        rtol=1e-10,
    )


def test_a_store_of_other_settings_is_refused(tmp_path):
    jaxicl.sweep(Quadratic(steps=8), grid={"d": [2]}, seeds=2, store=tmp_path / "store")
    with pytest.raises(ValueError, match="different sweep"):
        jaxicl.sweep(Quadratic(steps=12), grid={"d": [2]}, seeds=2, store=tmp_path / "store")


@pytest.mark.parametrize(
    "study, grid, message",
    [
        (Quadratic(), {"colour": [1]}, "`grid` must be one of"),
        (Quadratic(), {"d": [2, 0]}, r"`grid.d` = 0: `d` must be a positive integer"),
        (Quadratic(), {"d": [2, 2]}, "`grid.d` repeats 2"),
        (Quadratic(), {"init_scale": ["big"]}, "member axis: its values must be numbers"),
        (Quadratic(), {"n_records": [4, 3]}, "record at different times"),
    ],
)
def test_bad_grids_are_refused_before_compiling(study, grid, message):
    with pytest.raises(ValueError, match=message):
        jaxicl.sweep(study, grid=grid, seeds=1)


@pytest.mark.slow
def test_own_study_from_a_sweep_file_by_import_path(tmp_path):
    """`study = "module:Class"` in a sweep file, on the command line, equals the Python run;
    the store records which study it holds."""
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(
        'study = "own_study:Quadratic"\nseeds = 2\n[fixed]\nsteps = 8\n'
        "[grid]\nlearning_rate = [0.05, 0.2]\n"
    )
    here = str(pathlib.Path(__file__).parent)
    env = {**os.environ, "PYTHONPATH": here, "JAX_ENABLE_X64": "1"}
    command = [sys.executable, "-m", "jaxicl", "sweep", str(sweep), "--out"]
    done = subprocess.run(
        [*command, str(tmp_path / "store"), "--quiet"], env=env, text=True, capture_output=True
    )
    assert done.returncode == 0, done.stderr
    assert "study own_study:Quadratic" in done.stdout
    data = jaxicl.open_sweep(tmp_path / "store").load()
    direct = jaxicl.sweep(Quadratic(steps=8), grid={"learning_rate": [0.05, 0.2]}, seeds=2)
    np.testing.assert_allclose(data["loss"].values, direct["loss"].values, rtol=1e-12)
    sweep.write_text('study = "own_study:Nothing"\nseeds = 2\n')
    bad = subprocess.run(
        [*command, str(tmp_path / "other")], env=env, text=True, capture_output=True
    )
    assert bad.returncode == 2 and "has no 'Nothing'" in bad.stderr
    assert "Traceback" not in bad.stderr


class _VectorSeries(Quadratic):
    def series(self, trajectory):
        return {"w": trajectory.observables}

    def observe(self):
        return lambda model: model.w


class _VectorSummary(Quadratic):
    def summarize(self, state, series):
        return {"w": state.model.w}


@pytest.mark.parametrize(
    "study, message",
    [
        (
            _VectorSeries(),
            r"_VectorSeries.series\(\)\[.w.\] has shape \(3,\) per record, but it is not in "
            "`series_dims`",
        ),
        (_VectorSummary(), r"_VectorSummary.summarize\(\)\['w'\] has shape \(3,\) per member"),
    ],
)
def test_records_that_do_not_fit_the_store_are_refused_by_tracing(study, message):
    with pytest.raises(ValueError, match=message):
        jaxicl.sweep(study, seeds=1)


class _Trajectories(Quadratic):
    """Records the whole iterate w_t, one vector per record, under a named dimension."""

    series_dims: ClassVar[dict] = {"w": ("component",)}
    summary_dims: ClassVar[dict] = {"w_final": ("component",)}

    def series(self, trajectory):
        return {"loss": trajectory.loss, "w": trajectory.observables}

    def observe(self):
        return lambda model: model.w

    def summarize(self, state, series):
        # from the stored series: the last record's distance to the optimum
        return {"last_gap": jnp.abs(series["w"][-1] - 1.0).max(), "w_final": state.model.w}


def test_vector_series_and_summaries_are_stored_under_their_named_dimensions_and_resume(
    tmp_path,
):
    grid = {"learning_rate": [0.05, 0.2]}
    memory = jaxicl.sweep(_Trajectories(), grid=grid, seeds=3, chunk_records=1)
    assert memory["w"].dims == ("learning_rate", "seed", "time", "component")
    assert memory["w_final"].dims == ("learning_rate", "seed", "component")
    for rate in (0.05, 0.2):
        for seed in range(3):
            w0 = _initial_w(seed, 3, 1.0)
            steps = 3.0 * jnp.arange(4.0)
            expected = 1 + (w0[None, :] - 1) * (1 - 2 * rate) ** steps[:, None]
            point = dict(learning_rate=rate, seed=seed)
            np.testing.assert_allclose(memory["w"].sel(point).values, expected, rtol=1e-10)
            np.testing.assert_allclose(
                memory["last_gap"].sel(point), np.abs(expected[-1] - 1).max(), rtol=1e-10
            )
            final = 1 + (w0 - 1) * (1 - 2 * rate) ** 12.0
            np.testing.assert_allclose(memory["w_final"].sel(point).values, final, rtol=1e-10)

    def interrupt(unit, chunk):
        if (unit, chunk) == (0, 2):
            raise KeyboardInterrupt

    kwargs = dict(grid=grid, seeds=3, chunk_records=1, store=tmp_path / "store")
    with pytest.raises(KeyboardInterrupt):
        jaxicl.sweep(_Trajectories(), on_chunk=interrupt, **kwargs)
    resumed = jaxicl.sweep(_Trajectories(), **kwargs).load()
    for name in ("loss", "w", "last_gap", "w_final"):
        np.testing.assert_array_equal(resumed[name].values, memory[name].values)


@pytest.mark.slow  # SIGKILL of a subprocess
def test_own_study_killed_mid_sweep_resumes_to_the_uninterrupted_store(tmp_path):
    """A user's own study, named by import path on the command line, SIGKILLed once some step
    chunks are stored, then rerun: the store equals one uninterrupted run bitwise."""
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(
        'study = "own_study:Quadratic"\nseeds = 4\nmembers_per_call = 2\nchunk_records = 1\n'
        "[fixed]\nd = 200000\nsteps = 1000\nn_records = 8\n"
        "[grid]\nlearning_rate = [0.0001, 0.0002]\n"
    )
    env = {**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).parent)}
    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "jaxicl", "sweep", str(sweep), "--quiet", "--out"]
    kill_when_flagged([*command, str(killed)], env, killed, 3)
    flags = np.asarray(zarr.open_group(str(killed), mode="r")["chunk_done"][:])
    assert 0 < flags.sum() < flags.size, "the kill must land mid-sweep"
    subprocess.run([*command, str(killed)], env=env, check=True)
    subprocess.run([*command, str(tmp_path / "whole")], env=env, check=True)
    resumed, whole = (jaxicl.open_sweep(tmp_path / n).load() for n in ("killed", "whole"))
    for name in ("loss", "w0", "final_w0", "converged"):
        np.testing.assert_array_equal(resumed[name].values, whole[name].values)


def test_a_study_module_beside_its_sweep_file_needs_no_pythonpath(tmp_path):
    """`study = "module:Class"` is looked for in the sweep file's own directory (and the
    working directory) first; the search path is left as it was."""
    from jaxicl import load_sweep

    source = pathlib.Path(__file__).with_name("own_study.py").read_text()
    (tmp_path / "beside_its_sweep_file.py").write_text(source)
    path = tmp_path / "sweep.toml"
    path.write_text('study = "beside_its_sweep_file:Quadratic"\nseeds = 2\n')
    before = list(sys.path)
    plan = load_sweep(path)
    assert type(plan.study).__name__ == "Quadratic" and sys.path == before
    path.write_text('study = "not_beside_it:Quadratic"\nseeds = 2\n')
    with pytest.raises(ValueError, match=f"looked in {tmp_path}"):
        load_sweep(path)
