"""Exploring costs compiles once: a second sweep of the same study in one process compiles
nothing, and a new process finds the programs in jaxicl's persistent cache."""

import os
import subprocess
import sys

import jax.monitoring

from jaxicl import ReducedAllocation, sweep


_COMPILES = []
jax.monitoring.register_event_duration_secs_listener(
    lambda name, seconds, **kwargs: _COMPILES.append(name) if "backend_compile" in name else None
)


def test_a_second_sweep_of_the_same_study_compiles_nothing():
    study = ReducedAllocation(d=9, horizon=2.0, n_records=4, context_len=77)
    grid = {"heads": [2, 3]}
    first = sweep(study, grid=grid, seeds=4, progress=False)
    before = len(_COMPILES)
    again = sweep(study, grid=grid, seeds=4, progress=False)
    assert len(_COMPILES) == before  # no XLA compilation at all
    assert (again["loss"].values == first["loss"].values).all()


def test_the_command_line_and_sweeps_keep_compiled_programs_in_a_user_cache(tmp_path):
    script = (
        "import jax; from jaxicl import ReducedAllocation, sweep;"
        "sweep(ReducedAllocation(d=9, horizon=2.0, n_records=4), seeds=2, progress=False);"
        "print(jax.config.jax_compilation_cache_dir)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env["JAXICL_COMPILATION_CACHE"] = str(tmp_path / "cache")
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"  # however fast this machine compiles
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / "cache")
    assert any((tmp_path / "cache").iterdir())  # programs were written
    env["JAXICL_COMPILATION_CACHE"] = "off"
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.stdout.strip() in ("None", "")
