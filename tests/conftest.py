import os
import pathlib
import subprocess
import sys

import jax
import pytest
from equinox.internal import GetKey


jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")


def _xla_accepts(flag: str) -> bool:
    """Whether this jaxlib's XLA knows `flag`: an unknown flag in XLA_FLAGS aborts the process,
    so ask a child process (about 1.3 s, once: the workers inherit the answer)."""
    probe = [sys.executable, "-c", "import jax; jax.devices()"]
    env = {**os.environ, "XLA_FLAGS": flag, "JAX_PLATFORMS": "cpu"}
    return subprocess.run(probe, env=env, capture_output=True).returncode == 0


# Most of the suite's time is compiling small programs, so the tests compile them faster than
# XLA's defaults do (a flag the user sets wins; the package itself keeps XLA's defaults):
# - LLVM at -O1 rather than -O2: a small training program compiles in 1.4 s instead of 2.4 and
#   runs as fast; the full suite took 13.9 min instead of 18.7. (-O0, which
#   `jax_disable_most_optimizations` sets, crashed XLA's compiler in full runs.)
# - XLA's older fusion emitters rather than the MLIR ones of recent jaxlibs: compiling took 431 s
#   of CPU time instead of 695, running as long; the full suite took 11.3 min instead of 14.2.
#   Older jaxlibs lack the flag, and a later one may drop it: it is set only where XLA takes it.
_FASTER_COMPILE = ("--xla_backend_optimization_level=1", "--xla_cpu_use_fusion_emitters=false")
if not os.environ.get("JAXICL_TEST_XLA_FLAGS_SET"):
    _wanted = [f for f in _FASTER_COMPILE if f.split("=")[0] not in os.environ.get("XLA_FLAGS", "")]
    if _wanted and not _xla_accepts(" ".join(_wanted)):
        _wanted = [f for f in _wanted if _xla_accepts(f)]
    os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), *_wanted]).strip()
    os.environ["JAXICL_TEST_XLA_FLAGS_SET"] = "1"  # the workers and subprocesses inherit them

# Most of the suite's time is XLA compilation: keep compiled programs between runs (and for the
# subprocesses the tests start), so a second run of the edit-test loop compiles only what
# changed. JAXICL_TEST_COMPILATION_CACHE="" turns it off; a path moves it.
_CACHE = os.environ.get(
    "JAXICL_TEST_COMPILATION_CACHE",
    str(pathlib.Path(__file__).parents[1] / ".pytest_cache" / "jax-compilation"),
)
if not _CACHE:
    os.environ.setdefault("JAXICL_COMPILATION_CACHE", "off")  # nor jaxicl's own default cache
if _CACHE:
    # Every program, however quick to compile: the subprocesses the tests start compile the
    # same small programs again (the kill-and-resume tests took 90 s instead of 102).
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    jax.config.update("jax_compilation_cache_dir", _CACHE)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)


@pytest.fixture
def getkey():
    # Deterministic by default so CI is reproducible; set JAXICL_TEST_SEED to explore others.
    return GetKey(seed=int(os.environ.get("JAXICL_TEST_SEED", "0")))


# The two workers take whole files in collection order; a long file collected last keeps one
# worker busy while the other idles (about two minutes of a cold run went so). The longest
# files (cold-run times) go first; the rest keep their order.
_LONGEST_FIRST = (
    "test_full_vs_reduced.py",
    "test_sweeps.py",
    "test_task_allocation.py",
    "test_notebooks.py",
    "test_weight_flow.py",
    "test_meanfield_dynamics.py",
    "test_reduced_convergence.py",
    "test_builtin_studies.py",
    "test_trainer.py",
    "test_paired_heads.py",
    "test_study.py",
)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
