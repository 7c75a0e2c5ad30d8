"""Sweeps of a user's own study (tests/own_study.py, named by import path as a researcher's
would be) across devices and processes, each run in fresh subprocesses: 4 CPU devices give the
store of 1; two processes under jax.distributed (localhost) write the store of one process."""

import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr
import zarr


SWEEP = (
    'study = "own_study:Quadratic"\nseeds = 8\nmembers_per_call = 8\nchunk_records = 2\n'
    "[fixed]\nsteps = 40\nn_records = 8\n"
    "[grid]\nd = [3, 5]\nlearning_rate = [0.05, 0.2]\ninit_scale = [0.5, 2.0]\n"
)


def _command(sweep, out, *extra):
    return [
        sys.executable,
        "-m",
        "jaxicl",
        "sweep",
        str(sweep),
        "--out",
        str(out),
        "--quiet",
        *extra,
    ]


def _env(devices):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    here = str(pathlib.Path(__file__).parent)
    return {**env, "JAX_NUM_CPU_DEVICES": str(devices), "PYTHONPATH": here}


def _arrays(path):
    data = xr.open_zarr(str(path), consolidated=False).load()
    return {name: np.asarray(data[name]) for name in ("loss", "w0", "final_w0", "converged")}


@pytest.mark.slow  # subprocesses
def test_four_devices_give_the_store_of_one(tmp_path):
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(SWEEP)
    for devices in (1, 4):
        out = tmp_path / f"d{devices}"
        subprocess.run(_command(sweep, out), env=_env(devices), check=True, timeout=600)
    one, four = _arrays(tmp_path / "d1"), _arrays(tmp_path / "d4")
    assert np.isfinite(one["loss"]).all()
    for name in one:
        np.testing.assert_allclose(four[name], one[name], rtol=1e-6)


@pytest.mark.slow  # subprocesses
def test_two_processes_write_the_store_of_one(tmp_path):
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(SWEEP)
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    shared = tmp_path / "two"
    workers = [
        subprocess.Popen(
            _command(
                sweep,
                shared,
                "--coordinator",
                f"localhost:{port}",
                "--num-processes",
                "2",
                "--process-id",
                str(i),
            ),
            env=_env(1),
        )
        for i in range(2)
    ]
    assert [w.wait(timeout=600) for w in workers] == [0, 0]
    subprocess.run(_command(sweep, tmp_path / "one"), env=_env(1), check=True, timeout=600)
    assert np.asarray(zarr.open_group(str(shared), mode="r")["chunk_done"][:]).all()
    two, one = _arrays(shared), _arrays(tmp_path / "one")
    for name in one:
        np.testing.assert_array_equal(two[name], one[name])


@pytest.mark.slow  # a subprocess that waits for a peer
def test_a_missing_peer_ends_the_wait_with_one_line(tmp_path):
    """One of two processes started: it says what it waits for, then gives up cleanly at the
    timeout (exit 2, no traceback or C++ abort), and leaves no store behind."""
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(SWEEP)
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    command = _command(sweep, tmp_path / "store", "--coordinator", f"localhost:{port}")
    command += ["--num-processes", "2", "--process-id", "0", "--connect-timeout", "5"]
    done = subprocess.run(command, env=_env(1), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "waiting up to 5 s for all 2 processes" in done.stderr
    assert "not all 2 processes connected" in done.stderr and "--connect-timeout" in done.stderr
    assert "Traceback" not in done.stderr and "Check failed" not in done.stderr
    assert not (tmp_path / "store").exists()


def test_a_process_id_out_of_range_is_refused(tmp_path, capsys):
    from jaxicl import _cli

    sweep = tmp_path / "sweep.toml"
    sweep.write_text(SWEEP)
    args = ["sweep", str(sweep), "--out", str(tmp_path / "s"), "--coordinator", "localhost:1"]
    assert _cli.main([*args, "--num-processes", "2", "--process-id", "2"]) == 2
    assert "`process_id` must be below `num_processes` (2), got 2" in capsys.readouterr().err
