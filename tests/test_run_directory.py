"""The run directory an experiment claims: never another's files, one clear line on bad paths."""

import errno
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import pytest

from jaxicl import _cli
from jaxicl._host._checkpoint import claim_run_directory


CONFIG = {"d": 5, "seed": 0}


def test_a_directory_with_other_files_is_refused_and_left_alone(tmp_path):
    (tmp_path / "summary.json").write_text("mine")
    with pytest.raises(ValueError, match="not empty and holds no jaxicl run"):
        claim_run_directory(tmp_path, CONFIG)
    assert (tmp_path / "summary.json").read_text() == "mine"
    assert not (tmp_path / "config.json").exists()


def test_a_new_an_empty_or_the_same_runs_directory_is_claimed(tmp_path):
    claim_run_directory(tmp_path / "new", CONFIG)
    claim_run_directory(tmp_path / "new", CONFIG)  # the same run: resume
    (tmp_path / "empty").mkdir()
    claim_run_directory(tmp_path / "empty", CONFIG)
    assert json.loads((tmp_path / "empty" / "config.json").read_text()) == CONFIG
    with pytest.raises(ValueError, match="different configuration"):
        claim_run_directory(tmp_path / "new", {**CONFIG, "seed": 1})


def test_dot_and_parent_paths_name_a_real_directory(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    claim_run_directory(type(tmp_path)("."), CONFIG)
    assert (tmp_path / "sub" / "config.json").exists()
    claim_run_directory(type(tmp_path)("../fresh/sub/.."), CONFIG)
    assert (tmp_path / "fresh" / "config.json").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through read-only permissions")
def test_an_unwritable_location_is_one_clear_error(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    with pytest.raises(ValueError, match="cannot write the run directory"):
        claim_run_directory(locked / "run", CONFIG)


def test_the_command_line_refuses_a_file_as_out_in_one_line(tmp_path, capsys):
    target = tmp_path / "results.txt"
    target.write_text("mine")
    code = _cli.main(["run", "paired-heads", "--out", str(target), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "is a file" in err and "Traceback" not in err
    assert target.read_text() == "mine"


def test_results_files_follow_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        claim_run_directory(tmp_path / "run", CONFIG)
    finally:
        os.umask(previous)
    assert (tmp_path / "run" / "config.json").stat().st_mode & 0o777 == 0o644


def test_an_interrupt_prints_how_to_resume_not_a_traceback(monkeypatch, capsys):
    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(_cli, "_main", interrupted)
    assert _cli.main(["run", "paired-heads"]) == 130
    err = capsys.readouterr().err
    assert "rerun the same command to resume" in err and "Traceback" not in err


def test_a_reader_that_closed_the_pipe_ends_the_command_quietly():
    """`jaxicl inspect STORE | head`: once the reader has stopped, no traceback (the command
    printed a BrokenPipeError traceback)."""
    command = [sys.executable, "-m", "jaxicl"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        process.stdout.close()  # long before the command prints its usage
        err = process.stderr.read().decode()
    assert process.returncode == 1 and err == "", err


def _wait_until_it_catches(pid: int, signum: int, timeout: float = 120.0) -> None:
    """Wait until process `pid` has a handler for `signum` (Linux: /proc; elsewhere no wait)."""
    status = pathlib.Path(f"/proc/{pid}/status")
    deadline = time.monotonic() + timeout
    while status.exists() and time.monotonic() < deadline:
        try:
            lines = status.read_text().splitlines()
        except OSError:  # the process ended
            return
        caught = [int(line.split()[1], 16) for line in lines if line.startswith("SigCgt:")]
        if not caught or caught[0] & (1 << (signum - 1)):
            return
        time.sleep(0.002)


@pytest.mark.parametrize("delay", [0.05, 0.3])
def test_an_interrupt_while_the_command_starts_is_one_line(delay):
    """Ctrl-C while JAX loads (seconds): one line, no traceback (it surfaced as an ImportError
    from an extension's initialisation, or in a garbage-collection callback)."""
    command = [sys.executable, "-c", "import jaxicl_entry, sys; sys.exit(jaxicl_entry.main())"]
    # The child starts with SIGINT ignored, so a signal sent while the interpreter itself starts
    # (before any code of ours runs: it killed the child on a loaded machine) is not the case
    # tested; the entry point installs its own SIGINT handler whatever the child inherited, and
    # the delay counts from then (seen on Linux as the caught-signals mask).
    # (an ignored signal is inherited through exec; `preexec_fn` would fork a process that
    # runs JAX's threads, which JAX warns of)
    ours = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        process = subprocess.Popen(
            [*command, "inspect", "nowhere"], stderr=subprocess.PIPE, text=True
        )
    finally:
        signal.signal(signal.SIGINT, ours)
    with process:
        _wait_until_it_catches(process.pid, signal.SIGINT)
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        err = process.stderr.read()
    assert process.returncode == 130, err
    assert err == "jaxicl: interrupted while starting; nothing was run.\n"


def test_a_truncated_checkpoint_names_the_file_and_the_fix(tmp_path):
    import numpy as np

    from jaxicl._host._checkpoint import load_checkpoint, save_checkpoint

    path = tmp_path / "unit"
    save_checkpoint(path, np.arange(1000.0), {"x": np.arange(1000.0)})
    (stored,) = tmp_path.glob("unit*")
    stored.write_bytes(stored.read_bytes()[:100])
    with pytest.raises(ValueError, match=f"{stored.name} is damaged .* delete it and rerun"):
        load_checkpoint(path, like=np.zeros(1000))


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_prints_how_to_resume_not_a_traceback(monkeypatch, capsys, code):
    def full(argv):
        raise OSError(code, os.strerror(code), "results/sweeps/H1/loss/c/0/0/0")

    monkeypatch.setattr(_cli, "_main", full)
    assert _cli.main(["run", "paired-heads"]) == 1
    err = capsys.readouterr().err
    assert "no space left on the device writing results/sweeps/H1/loss/c/0/0/0" in err
    assert "rerun the same command to resume" in err and "Traceback" not in err


def test_other_os_errors_are_not_disguised_as_a_full_disk(monkeypatch):
    def broken(argv):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(_cli, "_main", broken)
    with pytest.raises(OSError, match="I/O error"):
        _cli.main(["run", "paired-heads"])


def test_memory_exhausted_inside_xla_is_one_line(monkeypatch, capsys):
    """Sizes just under the pre-compile estimate (a lower bound) can still run out inside XLA."""

    def exhausted(argv):
        raise jax.errors.JaxRuntimeError(
            "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 17.50GiB.\nmore detail"
        )

    monkeypatch.setattr(_cli, "_main", exhausted)
    assert _cli.main(["run", "paired-heads", "--heads", "100000"]) == 1
    err = capsys.readouterr().err
    assert "out of memory while running (RESOURCE_EXHAUSTED: Out of memory" in err
    assert "fewer members, heads" in err and "Traceback" not in err and "more detail" not in err

    def other(argv):
        raise jax.errors.JaxRuntimeError("INTERNAL: something else")

    monkeypatch.setattr(_cli, "_main", other)
    with pytest.raises(jax.errors.JaxRuntimeError, match="INTERNAL"):
        _cli.main(["run", "paired-heads"])


TRAINING = "more than this device's"
EVALUATION = "evaluating one member"  # the final losses' scores, sized before training


@pytest.mark.parametrize(
    "flags, refusal",
    [
        (["--heads", "1000000"], EVALUATION),
        (["--batch-size", "1000000000"], TRAINING),
        (["--n-members", "1000000000"], TRAINING),
    ],
)
def test_sizes_that_cannot_fit_are_refused_with_the_estimate(tmp_path, capsys, flags, refusal):
    """Before anything compiles or allocates: one line with the memory a call needs."""
    args = ["run", "paired-heads", "--out", str(tmp_path / "run"), "--quiet", "--heads", "2"]
    assert _cli.main([*args, *flags]) == 2
    err = capsys.readouterr().err
    assert "GiB" in err and refusal in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err and "RESOURCE_EXHAUSTED" not in err


def test_near_the_bound_one_members_temporaries_join_the_estimate(tmp_path, capsys, monkeypatch):
    """When states and data alone just fit, XLA's temporaries of a compiled member decide: a
    call that was killed for memory (15,000 heads under a 6 GiB cgroup) is refused
    with the estimate instead."""
    from jaxicl._sweeps import _group, _runner

    bounds = []
    minimum_bytes = _group.Group.minimum_bytes

    def recorded(self, *args):
        bounds.append(minimum_bytes(self, *args))
        return bounds[-1]

    monkeypatch.setattr(_group.Group, "minimum_bytes", recorded)
    monkeypatch.setattr(_runner, "device_memory_bytes", lambda: max(bounds) + 1)
    args = ["run", "paired-heads", "--out", str(tmp_path / "run"), "--quiet", "--heads", "2"]
    assert _cli.main(args) == 2
    err = capsys.readouterr().err
    assert "needs at least" in err and "temporaries by XLA's analysis" in err
    assert "Traceback" not in err


def test_a_config_json_that_is_not_json_is_named(tmp_path):
    (tmp_path / "config.json").write_text("not json")
    with pytest.raises(ValueError, match=r"config.json is not a jaxicl run's configuration"):
        claim_run_directory(tmp_path, CONFIG)
    assert (tmp_path / "config.json").read_text() == "not json"


def test_an_out_path_inside_a_regular_file_is_one_line(tmp_path, capsys):
    """`--out FILE/run`: the file system refuses the directory (not a directory); the command
    says so in one line naming the path, not with a traceback."""
    target = tmp_path / "results.txt"
    target.write_text("mine")
    code = _cli.main(["run", "paired-heads", "--out", str(target / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert code in (1, 2) and "results.txt" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert target.read_text() == "mine"


def test_a_path_error_from_deep_inside_is_one_line_naming_the_path(monkeypatch, capsys):
    def denied(argv):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), "results/sweeps/H1")

    monkeypatch.setattr(_cli, "_main", denied)
    assert _cli.main(["run", "paired-heads"]) == 1
    err = capsys.readouterr().err
    assert "cannot write results/sweeps/H1" in err and "Traceback" not in err


def test_off_a_terminal_the_command_line_logs_each_stored_chunk(tmp_path, capsys):
    """A batch job's log gets one line at the start (new or resuming, what is done) and one per
    stored step chunk (it got nothing, and never heard that a run resumed)."""
    from jaxicl import _cli

    sweep_file = tmp_path / "sweep.toml"
    sweep_file.write_text(
        'study = "reduced-allocation"\nseeds = 2\nchunk_records = 2\n'
        "[fixed]\nd = 9\nhorizon = 2.0\nn_records = 4\n[grid]\nheads = [2, 3]\n"
    )
    command = ["sweep", str(sweep_file), "--out", str(tmp_path / "store")]
    assert _cli.main(command) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0].endswith("store: new; 4 step chunk(s) to run")
    assert [line.split(": ", 2)[2].split(" (")[0] for line in err[1:]] == [
        f"unit {u} step chunk {c} stored" for u in (0, 1) for c in (0, 1)
    ]
    assert _cli.main(command) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"jaxicl: {tmp_path / 'store'}: resuming: 4 of 4 step chunks done; 0 step chunk(s) to run"
    ]
