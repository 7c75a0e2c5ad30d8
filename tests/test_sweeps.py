"""Sweeps: validation before compiling, the labelled store, equality with direct training,
chunking, resume after SIGKILL, refusal of another sweep's store."""

import os
import signal
import subprocess
import sys
import time

import jax.random as jr
import numpy as np
import pytest
import xarray as xr
import zarr

from jaxicl import _cli, _sweep_store as sweep_store
from jaxicl._experiments._task_allocation import initial_state
from jaxicl._reduced import ReducedLoss
from jaxicl._sweep_config import SweepConfig, load_sweep
from jaxicl._sweep_runner import run_sweep
from jaxicl._trainer import sgd, train


FIXED = {"d": 9, "horizon": 2.0, "n_records": 4}
GRID = {"heads": [2, 3], "init_scale": [1e-3, 3e-3]}


def _config(**changes):
    kwargs = dict(workload="reduced-allocation", seeds=5, fixed=FIXED, grid=GRID, member_chunk=2)
    kwargs.update(changes)
    return SweepConfig(**kwargs)


def _arrays(path):
    data = xr.open_zarr(str(path), consolidated=False).load()
    return {name: np.asarray(data[name]) for name in ("loss", "success", "warmup_end")}


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"workload": "everything"}, "workload"),
        ({"seeds": 0}, "seeds"),
        ({"grid": {"colour": [1]}}, "grid"),
        ({"grid": {"heads": [2, 0]}}, "grid.heads"),
        ({"grid": {"heads": []}}, "non-empty list"),
        ({"fixed": {"dt": -1.0}}, "fixed.dt"),
        ({"fixed": {"scheme": "sideways"}}, "fixed.scheme"),
        ({"fixed": {"heads": 2}}, "both in"),
        ({"member_chunk": 0}, "member_chunk"),
    ],
)
def test_bad_sweeps_are_refused_naming_the_field(changes, message):
    with pytest.raises(ValueError, match=message):
        _config(**changes)


def test_sweep_file_is_read_and_checked(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text('workload = "reduced-allocation"\nseeds = 4\n[grid]\nheads = [2, 3]\n')
    config = load_sweep(path)
    assert config.total_members == 8 and [g["heads"] for g in config.groups()] == [2, 3]
    path.write_text('workload = "reduced-allocation"\nseed = 4\n')
    with pytest.raises(ValueError, match="top-level key"):
        load_sweep(path)


def test_store_is_labelled_and_equals_direct_training(tmp_path):
    config = _config()
    run_sweep(config, tmp_path / "store", progress=False)
    data = xr.open_zarr(str(tmp_path / "store"), consolidated=False)
    assert dict(data["loss"].sizes) == {
        "heads": 2,
        "context_len": 1,
        "init_scale": 2,
        "seed": 5,
        "time": 4,
    }
    assert list(data["init_scale"].values) == [1e-3, 3e-3]
    # member (H = 3, scale 3e-3, seed 4), trained alone with the same initial key
    settings = {**config.settings(), "heads": 3}
    steps = round(settings["horizon"] / settings["dt"])
    key = jr.fold_in(jr.fold_in(jr.key(0), 3), 4)
    state = initial_state("random-positive", 3, 3, 3e-3, key=key)
    _, traj = train(
        state,
        ReducedLoss((3, 3, 3), 100),
        sgd(settings["dt"]),
        steps=steps,
        record_every=steps // 4,
        key=jr.key(0),
    )
    stored = data["loss"].sel(heads=3, init_scale=3e-3, seed=4).values[0]
    np.testing.assert_allclose(stored, np.asarray(traj.loss, np.float32), rtol=1e-6)


def test_results_do_not_depend_on_the_member_chunk(tmp_path):
    run_sweep(_config(member_chunk=2), tmp_path / "a", progress=False)
    run_sweep(_config(member_chunk=5), tmp_path / "b", progress=False)
    a, b = _arrays(tmp_path / "a"), _arrays(tmp_path / "b")
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


def test_another_sweep_is_refused_never_overwritten(tmp_path, monkeypatch):
    run_sweep(_config(), tmp_path / "store", progress=False)
    with pytest.raises(ValueError, match="different sweep"):
        run_sweep(_config(seeds=6), tmp_path / "store", progress=False)
    monkeypatch.setattr(sweep_store, "_float64", lambda: False)  # as if x64 were off
    with pytest.raises(ValueError, match="different sweep"):
        run_sweep(_config(), tmp_path / "store", progress=False)
    assert xr.open_zarr(str(tmp_path / "store"), consolidated=False).sizes["seed"] == 5


def test_killed_sweep_resumes_to_the_uninterrupted_store(tmp_path):
    """SIGKILL a sweep in a subprocess after some units, rerun it, compare with one run."""
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(
        'workload = "reduced-allocation"\nseeds = 6\nmember_chunk = 1\n'
        "[fixed]\nd = 9\nhorizon = 6.0\nn_records = 4\n"
        "[grid]\nheads = [2, 3]\ninit_scale = [1e-3, 3e-3]\n"
    )
    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "jaxicl", "sweep", str(sweep), "--out", str(killed), "--quiet"]
    env = {**os.environ, "JAX_ENABLE_X64": "0"}
    process = subprocess.Popen(command, env=env)
    deadline = time.monotonic() + 300
    flags = None
    while time.monotonic() < deadline:
        if (killed / "chunk_done" / "zarr.json").exists():
            flags = np.asarray(zarr.open_group(str(killed), mode="r")["chunk_done"][:])
            if flags.sum() >= 3:
                break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    flags = np.asarray(zarr.open_group(str(killed), mode="r")["chunk_done"][:])
    assert 0 < flags.sum() < flags.size, "the kill must land mid-sweep"
    # resumed and uninterrupted runs in fresh processes too: the same (float32) precision
    subprocess.run(command, env=env, check=True)
    whole = [*command[:-3], "--out", str(tmp_path / "whole"), "--quiet"]
    subprocess.run(whole, env=env, check=True, capture_output=True)
    resumed, uninterrupted = _arrays(killed), _arrays(tmp_path / "whole")
    for name in uninterrupted:
        np.testing.assert_array_equal(resumed[name], uninterrupted[name])


def test_inspect_reports_completeness(tmp_path, capsys):
    run_sweep(_config(), tmp_path / "store", progress=False)
    assert _cli.main(["inspect", str(tmp_path / "store")]) == 0
    out = capsys.readouterr().out
    assert "complete: 12 of 12 units (100%)" in out and "init_scale" in out
    assert _cli.main(["plot", str(tmp_path / "store"), "--out", str(tmp_path / "f.png")]) == 0
    assert (tmp_path / "f.png").stat().st_size > 10_000
    assert _cli.main(["inspect", str(tmp_path / "missing")]) == 2


def test_a_process_runs_every_process_count_th_unit(tmp_path, monkeypatch):
    import jax

    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(jax, "process_index", lambda: 0)
    run_sweep(_config(), tmp_path / "store", progress=False)
    flags = np.asarray(zarr.open_group(str(tmp_path / "store"), mode="r")["chunk_done"][:])
    assert flags[0::2].all() and not flags[1::2].any()


def test_auto_member_chunk_follows_the_memory_analysis(tmp_path, monkeypatch):
    from jaxicl import _sweep_runner as runner

    config = _config(member_chunk="auto", seeds=40)
    program = config.spec.build({**config.settings(), **config.groups()[0]})
    small, large = program.memory(64), program.memory(256)
    assert 3.0 < large / small < 5.0  # the compiled call's bytes grow with the members
    per_member = program.memory(runner.PROBE_MEMBERS) // runner.PROBE_MEMBERS
    assert runner.auto_member_chunk(program, 10 * per_member) == 10
    # a device with room for ~16 members per unit gets units of 16 seeds
    monkeypatch.setattr(runner, "device_memory_bytes", lambda: 4 * 16 * per_member)
    run_sweep(config, tmp_path / "store", progress=False)
    flags = zarr.open_group(str(tmp_path / "store"), mode="r")["chunk_done"]
    assert flags.shape == (2 * 2 * 3,)  # groups × points × ceil(40 / 16)
