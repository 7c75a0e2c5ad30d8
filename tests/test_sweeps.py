"""Sweeps: validation before compiling, the labelled store, equality with direct training,
chunking, resume after SIGKILL, refusal of another sweep's store."""

import dataclasses
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
from jaxicl._sweep_workloads import WORKLOADS
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
        # A repeated grid value would share one store slot with its twin.
        ({"grid": {"heads": [2, 2]}}, "grid.heads` repeats 2"),
        ({"grid": {"heads": [2], "init_scale": [1e-3, 1e-3]}}, "grid.init_scale` repeats"),
        # Schedules that do not divide are refused, never silently rounded.
        ({"fixed": {"d": 9, "horizon": 0.04, "dt": 0.01, "n_records": 10}}, "fixed.horizon"),
        ({"fixed": {"d": 9, "horizon": 0.01, "dt": 0.5, "n_records": 1}}, "fixed.horizon"),
        ({"fixed": {"d": 9, "horizon": 0.035, "dt": 0.01, "n_records": 1}}, "fixed.horizon"),
        (
            {"workload": "full-allocation", "fixed": {"steps": 10, "n_records": 4}, "grid": {}},
            "fixed.steps",
        ),
        (
            {"workload": "feature-learning", "fixed": {"steps": 10, "n_records": 4}, "grid": {}},
            "fixed.steps",
        ),
        ({"fixed": {"d": 9, "seed": -1}}, "fixed.seed"),
        (
            {"workload": "feature-learning", "fixed": {"d": 3, "k": 5}, "grid": {}},
            r"`fixed.k` \(5\) must be at most `fixed.d` \(3\)",
        ),
        ({"fixed": {"d": 9, "seed": 2**63}}, "fixed.seed"),
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
    for key in ("fixed", "grid"):
        path.write_text(f'workload = "reduced-allocation"\nseeds = 4\n{key} = 3\n')
        with pytest.raises(ValueError, match=f"`{key}` in .* must be a table"):
            load_sweep(path)
    with pytest.raises(ValueError, match="is not a file"):
        load_sweep(tmp_path)


def test_store_is_labelled_and_equals_direct_training(tmp_path):
    config = _config()
    run_sweep(config, tmp_path / "store", progress=False)
    data = xr.open_zarr(str(tmp_path / "store"), consolidated=False)
    assert dict(data["loss"].sizes) == {
        "heads": 2,
        "context_len": 1,
        "scheme": 1,
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
    stored = data["loss"].sel(heads=3, init_scale=3e-3, seed=4).values[0, 0]
    np.testing.assert_allclose(stored, np.asarray(traj.loss, np.float32), rtol=1e-6)


def test_results_do_not_depend_on_member_or_step_chunks(tmp_path):
    run_sweep(_config(member_chunk=2, chunk_records=1), tmp_path / "a", progress=False)
    run_sweep(_config(member_chunk=10, chunk_records=3), tmp_path / "b", progress=False)
    a, b = _arrays(tmp_path / "a"), _arrays(tmp_path / "b")
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-6)
    np.testing.assert_array_equal(a["success"], b["success"])
    layout = zarr.open_group(str(tmp_path / "a"), mode="r")["chunk_done"].shape
    assert layout == (2 * 5, 4)  # groups × blocks of one seed (2 points each), 4 step chunks


def _interrupt_at(unit, step_chunk):
    def on_chunk(u, c):
        if (u, c) == (unit, step_chunk):
            raise KeyboardInterrupt

    return on_chunk


def test_interrupted_mid_unit_resumes_from_its_checkpoint(tmp_path):
    config = _config(chunk_records=1)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(config, tmp_path / "store", progress=False, on_chunk=_interrupt_at(3, 1))
    flags = np.asarray(zarr.open_group(str(tmp_path / "store"), mode="r")["chunk_done"][:])
    assert flags[:3].all() and flags[3, :2].all() and not flags[3, 2:].any()
    assert (tmp_path / "store" / "resume" / "unit-000003.npz").exists()
    run_sweep(config, tmp_path / "store", progress=False)
    run_sweep(config, tmp_path / "whole", progress=False)
    resumed, whole = _arrays(tmp_path / "store"), _arrays(tmp_path / "whole")
    for name in whole:
        np.testing.assert_array_equal(resumed[name], whole[name])
    assert list((tmp_path / "store" / "resume").glob("*.npz")) == []


def test_killed_between_checkpoint_and_records_stores_them_from_the_checkpoint(
    tmp_path, monkeypatch
):
    from jaxicl import _sweep_runner as runner

    config = _config(chunk_records=1)
    real_write = runner.write_chunk

    def dies_at_unit_1_chunk_2(root, unit, step_chunk, writes):
        if (unit, step_chunk) == (1, 2):
            raise KeyboardInterrupt  # the checkpoint after chunk 2 is already saved
        real_write(root, unit, step_chunk, writes)

    monkeypatch.setattr(runner, "write_chunk", dies_at_unit_1_chunk_2)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(config, tmp_path / "store", progress=False)
    monkeypatch.setattr(runner, "write_chunk", real_write)
    advances = []
    build = config.spec.build

    def counting_build(settings):
        program = build(settings)
        advance = lambda s, n: advances.append(n) or program.advance(s, n)  # noqa: E731
        return dataclasses.replace(program, advance=advance)

    spec = dataclasses.replace(config.spec, build=counting_build)
    monkeypatch.setitem(WORKLOADS, "reduced-allocation", spec)
    run_sweep(config, tmp_path / "store", progress=False)
    # unit 1's chunk 2 came from the checkpoint: one step chunk left there, 4 in units 2…9
    assert len(advances) == 1 + 8 * 4
    run_sweep(_config(chunk_records=1), tmp_path / "whole", progress=False)
    resumed, whole = _arrays(tmp_path / "store"), _arrays(tmp_path / "whole")
    for name in whole:
        np.testing.assert_array_equal(resumed[name], whole[name])


def test_another_sweep_is_refused_never_overwritten(tmp_path, monkeypatch):
    run_sweep(_config(), tmp_path / "store", progress=False)
    with pytest.raises(ValueError, match="different sweep"):
        run_sweep(_config(seeds=6), tmp_path / "store", progress=False)
    monkeypatch.setattr(sweep_store, "float64", lambda: False)  # as if x64 were off
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
    assert "complete: 10 of 10 units, 40 of 40 step chunks (100%)" in out
    assert "init_scale" in out
    assert _cli.main(["plot", str(tmp_path / "store"), "--out", str(tmp_path / "f.png")]) == 0
    assert (tmp_path / "f.png").stat().st_size > 10_000
    assert _cli.main(["inspect", str(tmp_path / "missing")]) == 2
    # A damaged zarr.json: one line naming it, from inspect and from a rerun of the sweep.
    (tmp_path / "store" / "zarr.json").write_text('{"zarr_format": 3, "node_')
    capsys.readouterr()
    assert _cli.main(["inspect", str(tmp_path / "store")]) == 2
    err = capsys.readouterr().err
    assert "zarr.json is damaged" in err and "Traceback" not in err
    with pytest.raises(ValueError, match="zarr.json is damaged"):
        run_sweep(_config(), tmp_path / "store", progress=False)


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
    programs = [config.spec.build({**config.settings(), **g}) for g in config.groups()]
    small, large = programs[0].memory(64, 1), programs[0].memory(256, 1)
    assert 3.0 < large / small < 5.0  # the compiled call's bytes grow with the members
    # every group fits: the members per call follow the hungriest group (here H = 3)
    per_member = max(p.memory(runner.PROBE_MEMBERS, 1) for p in programs) // runner.PROBE_MEMBERS
    assert per_member > programs[0].memory(runner.PROBE_MEMBERS, 1) // runner.PROBE_MEMBERS
    assert runner.auto_member_chunk(programs, 10 * per_member, 1) == 10
    # room for ~16 members per call: 2 member points × 8 seeds
    monkeypatch.setattr(runner, "device_memory_bytes", lambda: 4 * 16 * per_member)
    run_sweep(config, tmp_path / "store", progress=False)
    flags = zarr.open_group(str(tmp_path / "store"), mode="r")["chunk_done"]
    assert flags.shape == (2 * 5, 4)  # groups × ceil(40 / 8), step chunks


def test_members_not_run_read_as_missing_not_as_failures(tmp_path):
    """An interrupted store: the flags of members not run yet are NaN (missing), not False, so
    rates are over the seeds that ran and the figure says "not run" instead of 0%."""
    from jaxicl._sweep_store import FLAG_MEANING, plot_sweep

    config = _config(chunk_records=1)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(config, tmp_path / "store", progress=False, on_chunk=_interrupt_at(3, 1))
    data = xr.open_zarr(str(tmp_path / "store"), consolidated=False).load()
    success = np.asarray(data["success"])
    # units 0-2 of 10 finished: 3 of 10 blocks of members have flags, the rest are missing
    assert np.isfinite(success).sum() == 0.3 * success.size
    assert np.isnan(success).sum() == 0.7 * success.size
    assert data["success"].attrs["meaning"] == FLAG_MEANING
    plot_sweep(tmp_path / "store", tmp_path / "partial.png")
    assert (tmp_path / "partial.png").stat().st_size > 10_000
