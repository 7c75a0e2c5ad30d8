"""Sweeps: validation before compiling, the labelled store, equality with direct training,
chunking, resume after SIGKILL, refusal of another sweep's store, the stored layout."""

import json
import os
import subprocess
import sys

import jax
import jax.random as jr
import numpy as np
import pytest
import xarray as xr
import zarr
from helpers import kill_when_flagged

from jaxicl import (
    RandomPositive,
    Record,
    ReducedAllocation,
    WeightFlow,
    _cli,
    run_plan,
    sgd,
    sweep,
    train,
)
from jaxicl._registry import load_sweep
from jaxicl._sweeps import _group as group_module, _store as sweep_store


STUDY = ReducedAllocation(d=9, horizon=2.0, n_records=4)
GRID = {"heads": [2, 3], "init_scale": [1e-3, 3e-3]}


def _run(store, *, study=STUDY, **changes):
    kwargs = dict(seeds=5, grid=GRID, members_per_call=2, progress=False)
    kwargs.update(changes)
    return sweep(study, store=store, **kwargs)


def _arrays(path):
    data = xr.open_zarr(str(path), consolidated=False).load()
    return {name: np.asarray(data[name]) for name in ("loss", "success", "warmup_end")}


def _file(tmp_path, text: str):
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    return path


BASE = 'study = "reduced-allocation"\nseeds = 5\n'


@pytest.mark.parametrize(
    "text, message",
    [
        ('study = "everything"\nseeds = 1\n', "`study` must be one of"),
        ('study = "reduced-allocation"\nseeds = 0\n', "seeds"),
        (BASE + "[grid]\ncolour = [1]\n", "`grid` must be one of"),
        (BASE + "[grid]\nheads = [2, 0]\n", r"`grid.heads` = 0: `heads` must be a positive"),
        (BASE + "[grid]\nheads = []\n", "non-empty list"),
        (BASE + "[fixed]\ndt = -1.0\n", r"in \[fixed\]: `dt` must be a finite number > 0"),
        (BASE + '[fixed]\nscheme = "sideways"\n', "`fixed.scheme` must be one of"),
        (BASE + '[grid]\nscheme = ["balanced", "up"]\n', "`grid.scheme` must be one of"),
        (BASE + "[fixed]\nheads = 2\n[grid]\nheads = [2, 3]\n", "both in"),
        (BASE + "members_per_call = 0\n", "members_per_call"),
        ('workload = "reduced-allocation"\nseeds = 1\n', "`workload` is now `study`"),
        # A repeated grid value would share one store slot with its twin.
        (BASE + "[grid]\nheads = [2, 2]\n", "grid.heads` repeats 2"),
        (BASE + "[grid]\ninit_scale = [1e-3, 1e-3]\n", "grid.init_scale` repeats"),
        (BASE + '[grid]\nscheme = ["balanced", "balanced"]\n', "grid.scheme` repeats"),
        # Schedules that do not divide are refused, never silently rounded.
        (BASE + "[fixed]\nhorizon = 0.04\ndt = 0.01\nn_records = 10\n", "`horizon` / `dt`"),
        (BASE + "[fixed]\nhorizon = 0.01\ndt = 0.5\nn_records = 1\n", "`horizon` / `dt`"),
        (BASE + "[fixed]\nhorizon = 0.035\ndt = 0.01\nn_records = 1\n", "`horizon` / `dt`"),
        (BASE + "[grid]\nhorizon = [100.0, 0.035]\n", r"`grid.horizon` = 0.035: `horizon` / `dt`"),
        (
            'study = "full-allocation"\nseeds = 1\n[fixed]\nsteps = 10\nn_records = 4\n',
            "`steps` must be a whole number",
        ),
        (
            'study = "feature-learning"\nseeds = 1\n[fixed]\nsteps = 10\nn_records = 4\n',
            "`steps` must be a whole number",
        ),
        (BASE + 'matmul_precision = "tf32"\n', "`matmul_precision` must be one of"),
        (BASE + "root_seed = -1\n", "root_seed"),
        (BASE + "root_seed = 9223372036854775808\n", "root_seed"),
        (
            'study = "feature-learning"\nseeds = 1\n[fixed]\nd = 3\nk = 5\n',
            r"in \[fixed\]: `k` \(5\) must be at most `d` \(3\)",
        ),
        (
            'study = "feature-learning"\nseeds = 1\n[grid]\nk = [2, 5]\n[fixed]\nd = 3\n',
            r"`grid.k` = 5: `k` \(5\) must be at most `d` \(3\)",
        ),
        (
            'study = "feature-learning"\nseeds = 1\n[fixed]\nattention = "attention"\n'
            "[grid]\nlearning_rate = [0.01, 0.02]\n",
            "grid.learning_rate",
        ),
    ],
)
def test_bad_sweeps_are_refused_naming_the_field(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        load_sweep(_file(tmp_path, text))


def test_sweep_file_is_read_and_checked(tmp_path):
    path = _file(tmp_path, BASE + '[grid]\nheads = [2, 3]\nscheme = ["balanced", "random-sign"]\n')
    plan = load_sweep(path)
    assert plan.total_members == 20 and [g["heads"] for g in plan.group_points()][:2] == [2, 2]
    assert type(plan.group_studies()[1].scheme).__name__ == "RandomSign"
    path.write_text('study = "reduced-allocation"\nseed = 4\n')
    with pytest.raises(ValueError, match="top-level key"):
        load_sweep(path)
    for key in ("fixed", "grid"):
        path.write_text(f'study = "reduced-allocation"\nseeds = 4\n{key} = 3\n')
        with pytest.raises(ValueError, match=f"`{key}` in .* must be a table"):
            load_sweep(path)
    with pytest.raises(ValueError, match="is not a file"):
        load_sweep(tmp_path)


def test_store_is_labelled_and_equals_direct_training(tmp_path):
    data = _run(tmp_path / "store")
    assert dict(data["loss"].sizes) == {"heads": 2, "init_scale": 2, "seed": 5, "time": 4}
    assert list(data["init_scale"].values) == [1e-3, 3e-3]
    assert data.attrs["study"] == "reduced-allocation"
    # member (H = 3, scale 3e-3, seed 4), trained alone from the runner's init key
    steps = round(STUDY.horizon / STUDY.dt)
    key = jr.fold_in(jr.fold_in(jr.key(0), 0), 4)
    state = WeightFlow().state(RandomPositive()(3, 3, 3e-3, key=key), (3, 3, 3))
    _, traj = train(
        state,
        WeightFlow().objective((3, 3, 3), 100),
        sgd(STUDY.dt),
        steps=steps,
        record=Record(every=steps // 4),
        key=jr.fold_in(jr.key(0), 1),
    )
    stored = data["loss"].sel(heads=3, init_scale=3e-3, seed=4).values
    np.testing.assert_allclose(stored, np.asarray(traj.loss, np.float32), rtol=1e-6)


def test_results_do_not_depend_on_member_or_step_chunks(tmp_path):
    _run(tmp_path / "a", members_per_call=2, chunk_records=1)
    _run(tmp_path / "b", members_per_call=10, chunk_records=3)
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
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "store", chunk_records=1, on_chunk=_interrupt_at(3, 1))
    flags = np.asarray(zarr.open_group(str(tmp_path / "store"), mode="r")["chunk_done"][:])
    assert flags[:3].all() and flags[3, :2].all() and not flags[3, 2:].any()
    assert (tmp_path / "store" / "resume" / "unit-000003.npz").exists()
    _run(tmp_path / "store", chunk_records=1)
    _run(tmp_path / "whole", chunk_records=1)
    resumed, whole = _arrays(tmp_path / "store"), _arrays(tmp_path / "whole")
    for name in whole:
        np.testing.assert_array_equal(resumed[name], whole[name])
    assert list((tmp_path / "store" / "resume").glob("*.npz")) == []


def test_a_signal_dropped_inside_a_finalizer_still_stops_after_the_chunk(tmp_path, capsys):
    """A signal whose handler runs inside a weakref finalizer raises where Python can only print
    "Exception ignored" and go on; the sweep must still stop, after the step chunk in which it
    arrived, with nothing printed about the dropped exception. (Before, such a SIGTERM was lost
    and the sweep ran to its end with exit status 0.)"""
    import signal
    import weakref

    from jaxicl._host._stop_requests import install_stop_handlers, restore_handlers

    class Anything:
        pass

    def signal_inside_a_finalizer(u, c):
        if (u, c) == (1, 0):
            target = Anything()
            weakref.finalize(target, os.kill, os.getpid(), signal.SIGTERM)
            del target  # the finalizer sends SIGTERM; its handler runs inside the finalizer

    previous = install_stop_handlers(_cli._Terminated)
    try:
        with pytest.raises(_cli._Terminated):
            _run(tmp_path / "store", chunk_records=1, on_chunk=signal_inside_a_finalizer)
    finally:
        restore_handlers(previous)
    assert "Exception ignored" not in capsys.readouterr().err
    flags = np.asarray(zarr.open_group(str(tmp_path / "store"), mode="r")["chunk_done"][:])
    assert flags[0].all() and flags[1, 0] and not flags[1, 1:].any() and not flags[2:].any()


def test_killed_between_checkpoint_and_records_stores_them_from_the_checkpoint(
    tmp_path, monkeypatch
):
    from jaxicl._sweeps import _runner as runner

    real_write = runner.store_io.write_chunk

    def dies_at_unit_1_chunk_2(root, unit, step_chunk, writes):
        if (unit, step_chunk) == (1, 2):
            raise KeyboardInterrupt  # the checkpoint after chunk 2 is already saved
        real_write(root, unit, step_chunk, writes)

    monkeypatch.setattr(runner.store_io, "write_chunk", dies_at_unit_1_chunk_2)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "store", chunk_records=1)
    monkeypatch.setattr(runner.store_io, "write_chunk", real_write)
    advances = []
    real_advance = group_module.Group.advance

    def counting_advance(self, states, n, frozen=None):
        advances.append(n)
        return real_advance(self, states, n, frozen)

    monkeypatch.setattr(group_module.Group, "advance", counting_advance)
    _run(tmp_path / "store", chunk_records=1)
    # unit 1's chunk 2 came from the checkpoint: one step chunk left there, 4 in units 2…9
    assert len(advances) == 1 + 8 * 4
    monkeypatch.setattr(group_module.Group, "advance", real_advance)
    _run(tmp_path / "whole", chunk_records=1)
    resumed, whole = _arrays(tmp_path / "store"), _arrays(tmp_path / "whole")
    for name in whole:
        np.testing.assert_array_equal(resumed[name], whole[name])


def test_another_sweep_is_refused_never_overwritten(tmp_path, monkeypatch):
    _run(tmp_path / "store")
    with pytest.raises(ValueError, match="different sweep .seeds: stored 5, asked 6.;"):
        _run(tmp_path / "store", seeds=6)
    # each differing setting named with both values, in one line
    with pytest.raises(ValueError, match=r"settings.dt: stored .*, asked 0.01\)") as refused:
        _run(tmp_path / "store", study=ReducedAllocation(d=9, horizon=2.0, n_records=4, dt=0.01))
    assert "\n" not in str(refused.value)
    with pytest.raises(ValueError, match="different sweep"):
        _run(tmp_path / "store", root_seed=1)
    # the float32 products' precision is part of the sweep: a faster one on request, recorded
    with pytest.raises(ValueError, match="matmul_precision: stored 'highest', asked 'default'"):
        _run(tmp_path / "store", matmul_precision="default")
    stored = json.loads(zarr.open_group(str(tmp_path / "store"), mode="r").attrs["sweep"])
    assert stored["matmul_precision"] == "highest"
    monkeypatch.setattr(sweep_store, "float64", lambda: False)  # as if x64 were off
    with pytest.raises(ValueError, match="different sweep"):
        _run(tmp_path / "store")
    assert xr.open_zarr(str(tmp_path / "store"), consolidated=False).sizes["seed"] == 5


def test_a_faster_matmul_precision_is_taken_and_recorded(tmp_path):
    """`matmul_precision = "default"` (the device's fastest) from a sweep file reaches the
    store's description; on CPU float32 products are exact whatever is asked, so the numbers
    equal the highest precision's."""
    fixed = "[fixed]\nd = 9\nhorizon = 2.0\nn_records = 4\n"
    path = _file(tmp_path, BASE + 'matmul_precision = "default"\n' + fixed)
    plan = load_sweep(path)
    assert plan.matmul_precision == "default"
    fast = run_plan(plan, tmp_path / "fast", progress=False)
    stored = json.loads(zarr.open_group(str(tmp_path / "fast"), mode="r").attrs["sweep"])
    assert stored["matmul_precision"] == "default"
    exact = sweep(plan.study, seeds=plan.seeds, progress=False)
    if jax.default_backend() == "cpu":
        np.testing.assert_array_equal(fast["loss"].values, exact["loss"].values)


def test_a_number_written_another_way_is_the_same_sweep():
    stored = {"settings": {"horizon": 8.0, "heads": [2, 3]}, "seeds": 4}
    assert (
        sweep_store.sweep_differences(
            stored, {**stored, "settings": {"horizon": 8, "heads": [2.0, 3]}}
        )
        == []
    )
    assert sweep_store.sweep_differences(stored, {**stored, "seeds": 5}) == [
        "seeds: stored 4, asked 5"
    ]


def _subprocess_sweep(tmp_path, store, *, members_per_call: str):
    """The `jaxicl sweep` command (and its float32 environment) of a 600-seed reduced sweep
    into `store`, long enough for a signal to land mid-sweep."""
    sweep = _file(
        tmp_path,
        f'study = "reduced-allocation"\nseeds = 600\nmembers_per_call = {members_per_call}\n'
        "[fixed]\nd = 9\nhorizon = 24.0\nn_records = 8\n"
        "[grid]\nheads = [2, 3]\ninit_scale = [1e-3, 3e-2]\n",
    )
    command = [sys.executable, "-m", "jaxicl", "sweep", str(sweep), "--out", str(store), "--quiet"]
    return command, {**os.environ, "JAX_ENABLE_X64": "0"}


@pytest.mark.slow  # SIGKILL of a subprocess, three times
def test_a_kill_loop_with_auto_members_per_call_gives_the_uninterrupted_store(tmp_path):
    """SIGKILL an "auto"-sized sweep three times at growing progress, then let it finish: the
    store equals one uninterrupted run bitwise (the resumed and the uninterrupted runs in fresh
    processes, in the same float32 precision)."""
    killed = tmp_path / "killed"
    command, env = _subprocess_sweep(tmp_path, killed, members_per_call='"auto"')
    counts = []
    for at_least in (1, 3, 5):
        kill_when_flagged(command, env, killed, at_least)
        counts.append(
            int(np.asarray(zarr.open_group(str(killed), mode="r")["chunk_done"][:]).sum())
        )
    total = zarr.open_group(str(killed), mode="r")["chunk_done"].size
    assert 0 < counts[0] and counts[-1] < total, f"kills must land mid-sweep: {counts} of {total}"
    subprocess.run(command, env=env, check=True, capture_output=True)
    whole = [*command[:-3], "--out", str(tmp_path / "whole"), "--quiet"]
    subprocess.run(whole, env=env, check=True, capture_output=True)
    resumed, uninterrupted = _arrays(killed), _arrays(tmp_path / "whole")
    for name in uninterrupted:
        np.testing.assert_array_equal(resumed[name], uninterrupted[name])


@pytest.mark.slow  # SIGTERM of a subprocess
def test_sigterm_stops_with_a_resume_hint_and_the_rerun_completes(tmp_path):
    """SIGTERM (a batch scheduler's warning before it kills a job) stops a sweep as an interrupt
    does: exit status 143, one line saying the stored chunks are kept, no traceback; rerunning
    the same command completes the store. (Before, Python's default handler ended the process
    silently.)"""
    import signal

    store = tmp_path / "store"
    command, env = _subprocess_sweep(tmp_path, store, members_per_call="100")
    with open(tmp_path / "stderr", "wb") as stderr:
        process = kill_when_flagged(command, env, store, 1, sig=signal.SIGTERM, stderr=stderr)
    text = (tmp_path / "stderr").read_text()
    assert process.returncode == 143, text
    assert "terminated (SIGTERM)" in text and "Traceback" not in text
    flags = np.asarray(zarr.open_group(str(store), mode="r")["chunk_done"][:])
    assert 0 < flags.sum() < flags.size
    subprocess.run(command, env=env, check=True, capture_output=True)
    assert np.asarray(zarr.open_group(str(store), mode="r")["chunk_done"][:]).all()


def test_inspect_reports_completeness(tmp_path, capsys):
    _run(tmp_path / "store")
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
        _run(tmp_path / "store")


def test_processes_without_a_coordinator_are_refused(tmp_path, capsys):
    """D5: `--num-processes 2 --process-id 1` alone would run every unit in this process."""
    path = _file(tmp_path, BASE)
    command = ["sweep", str(path), "--out", str(tmp_path / "store"), "--quiet"]
    assert _cli.main([*command, "--num-processes", "2", "--process-id", "1"]) == 2
    assert "only with `--coordinator`" in capsys.readouterr().err
    assert not (tmp_path / "store").exists()


def test_a_deleted_or_truncated_chunk_is_found_and_recomputed(tmp_path, capsys):
    """D6: inspect does not call a store with a lost chunk file complete, and a rerun repairs it
    to the uninterrupted store."""
    _run(tmp_path / "store", chunk_records=2)
    _run(tmp_path / "whole", chunk_records=2)
    loss_chunks = sorted(p for p in (tmp_path / "store" / "loss" / "c").rglob("*") if p.is_file())
    summary_chunks = sorted(
        p for p in (tmp_path / "store" / "diverged" / "c").rglob("*") if p.is_file()
    )
    loss_chunks[3].unlink()  # a lost file: reads back as missing values
    summary_chunks[-1].write_bytes(summary_chunks[-1].read_bytes()[:5])  # a truncated one
    assert _cli.main(["inspect", str(tmp_path / "store")]) == 0
    out = capsys.readouterr().out
    assert "complete: 8 of 10 units" in out and "damaged: units" in out
    _run(tmp_path / "store", chunk_records=2)
    assert "running them again" in capsys.readouterr().err
    assert _cli.main(["inspect", str(tmp_path / "store")]) == 0
    out = capsys.readouterr().out
    assert "complete: 10 of 10 units" in out and "damaged" not in out
    resumed, whole = _arrays(tmp_path / "store"), _arrays(tmp_path / "whole")
    for name in whole:
        np.testing.assert_array_equal(resumed[name], whole[name])


def test_a_second_sweep_into_a_running_store_is_refused(tmp_path):
    """D5: while one process runs a sweep into a store (it holds the writer lock), another is
    refused with what to do, instead of racing it; once the lock is free, the same sweep
    resumes."""
    import fcntl

    _run(tmp_path / "store", seeds=1)
    with open(tmp_path / "store" / "resume" / "writer.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running sweep would
        with pytest.raises(ValueError, match="another process is running a sweep into"):
            _run(tmp_path / "store", seeds=1)
    _run(tmp_path / "store", seeds=1)


def test_a_store_path_holding_something_else_is_refused(tmp_path):
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="exists and is not a sweep store"):
        _run(tmp_path / "store", seeds=1)
    assert (tmp_path / "store" / "notes.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["store"]  # no building directory left


@pytest.mark.slow
def test_two_processes_creating_one_store_at_once_leave_one_whole_store(tmp_path):
    """D5: two `jaxicl sweep` commands started together on a new store: one store is created
    whole; each command either runs (the second resumes what is there) or is refused in one
    line because the other is running; the store ends complete and equal to one run."""
    sweep = _file(
        tmp_path,
        BASE + "members_per_call = 2\n[fixed]\nd = 9\nhorizon = 2.0\n"
        "n_records = 4\n[grid]\nheads = [2, 3]\n",
    )
    command = [sys.executable, "-m", "jaxicl", "sweep", str(sweep), "--quiet", "--out"]
    env = {**os.environ, "JAX_ENABLE_X64": "0"}
    both = [
        subprocess.Popen(
            [*command, str(tmp_path / "store")],
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    results = [(p.communicate(timeout=600)[1], p.returncode)[::-1] for p in both]
    assert {rc for rc, _ in results} <= {0, 2} and 0 in {rc for rc, _ in results}, results
    for rc, err in results:
        assert "Traceback" not in err
        if rc == 2:
            assert "another process is running a sweep into" in err
    subprocess.run([*command, str(tmp_path / "whole")], env=env, check=True, capture_output=True)
    subprocess.run([*command, str(tmp_path / "store")], env=env, check=True, capture_output=True)
    assert not list(tmp_path.glob(".store.building-*"))
    resumed, whole = _arrays(tmp_path / "store"), _arrays(tmp_path / "whole")
    for name in whole:
        np.testing.assert_array_equal(resumed[name], whole[name])


def test_a_process_runs_every_process_count_th_unit(tmp_path, monkeypatch):
    import jax

    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(jax, "process_index", lambda: 0)
    _run(tmp_path / "store")
    flags = np.asarray(zarr.open_group(str(tmp_path / "store"), mode="r")["chunk_done"][:])
    assert flags[0::2].all() and not flags[1::2].any()


def test_auto_members_per_call_follow_the_memory_analysis(tmp_path, monkeypatch):
    from jaxicl._sweeps import _runner as runner
    from jaxicl._sweeps._plan import SweepPlan

    plan = SweepPlan(study=STUDY, grid=GRID, seeds=40)
    keys = dict(init_key=jr.key(0), data_key=jr.key(1))
    groups = [group_module.Group(s, **keys) for s in plan.group_studies()]
    values = {"init_scale": np.asarray([1e-3])}
    small, large = groups[0].memory(values, 64, 1), groups[0].memory(values, 256, 1)
    assert 3.0 < large / small < 5.0  # the compiled call's bytes grow with the members
    # every group fits: the members per call follow the hungriest group (here H = 3)
    probe = runner.PROBE_MEMBERS
    per_member = max(g.memory(values, probe, 1) for g in groups) // probe
    assert per_member > groups[0].memory(values, probe, 1) // probe
    assert runner.auto_members_per_call(plan, groups, 10 * per_member, 1) == 10
    # room for ~16 members per call: 2 member points × 8 seeds
    monkeypatch.setattr(runner, "device_memory_bytes", lambda: 4 * 16 * per_member)
    _run(tmp_path / "store", members_per_call="auto", seeds=40)
    flags = zarr.open_group(str(tmp_path / "store"), mode="r")["chunk_done"]
    assert flags.shape == (2 * 5, 4)  # groups × ceil(40 / 8), step chunks


def test_a_resume_keeps_the_stored_layout_when_memory_differs(tmp_path, monkeypatch):
    """D3: an "auto" sweep interrupted where memory gave one layout and resumed where it gives
    another finishes with the first layout and equals an uninterrupted run."""
    from jaxicl._sweeps import _runner as runner

    monkeypatch.setattr(runner, "auto_members_per_call", lambda *a: 8)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "store", members_per_call="auto", seeds=8, on_chunk=_interrupt_at(1, 1))
    monkeypatch.setattr(runner, "auto_members_per_call", lambda *a: 4)  # "another machine"
    _run(tmp_path / "store", members_per_call="auto", seeds=8)
    root = zarr.open_group(str(tmp_path / "store"), mode="r")
    assert root.attrs["layout"]["seed_block"] == 4 and np.asarray(root["chunk_done"]).all()
    _run(tmp_path / "whole", members_per_call=8, seeds=8)
    resumed, whole = _arrays(tmp_path / "store"), _arrays(tmp_path / "whole")
    for name in whole:
        np.testing.assert_array_equal(resumed[name], whole[name])
    # an explicit size that would cut the store differently is refused, naming the stored one
    with pytest.raises(ValueError, match="cut with members_per_call = 8"):
        _run(tmp_path / "store", members_per_call=2, seeds=8)


def test_members_not_run_read_as_missing_not_as_failures(tmp_path):
    """An interrupted store: the flags of members not run yet are NaN (missing), not False, so
    rates are over the seeds that ran and the figure says "not run" instead of 0%."""
    from jaxicl._sweeps._store import FLAG_MEANING, plot_sweep

    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "store", chunk_records=1, on_chunk=_interrupt_at(3, 1))
    data = xr.open_zarr(str(tmp_path / "store"), consolidated=False).load()
    diverged = np.asarray(data["diverged"])
    # units 0-2 of 10 finished: 3 of 10 blocks of members have flags, the rest are missing
    assert np.isfinite(diverged).sum() == 0.3 * diverged.size
    assert np.isnan(diverged).sum() == 0.7 * diverged.size
    assert data["diverged"].attrs["meaning"] == FLAG_MEANING
    # members not run have no allocation outcome either
    assert np.isnan(np.asarray(data["success"])).sum() >= 0.7 * diverged.size
    plot_sweep(tmp_path / "store", tmp_path / "partial.png")
    assert (tmp_path / "partial.png").stat().st_size > 10_000


def test_a_unit_whose_members_all_diverge_completes_and_is_not_damaged(tmp_path):
    """Every member diverges (init scale 100): some chunks hold only NaN, which Zarr does not
    write and reads back as its canonical NaN, whatever bits the computation produced. The
    checksum compares what a reader reads back, so the store is complete, not "damaged", and a
    rerun recomputes nothing."""
    import jax

    study = ReducedAllocation(d=9, horizon=2.0, n_records=4, init_scale=100.0)
    with jax.enable_x64(False):  # float32: its NaN from the diverging arithmetic is not canonical
        data = _run(tmp_path / "store", study=study, grid={"heads": [3]}, seeds=4)
    assert (data["diverged"].values == 1).all()
    root = zarr.open_group(str(tmp_path / "store"), mode="r")
    assert sweep_store.damaged_units(root) == []
    assert sweep_store.done_chunks(root).all()
