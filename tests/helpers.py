import signal
import subprocess
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import zarr

import jaxicl as ji


def tree_allclose(x, y, *, rtol=1e-5, atol=1e-8):
    """Same tree structure, same dtypes, arrays allclose (NaN equals NaN), other leaves equal."""
    x_leaves, x_def = jax.tree_util.tree_flatten(x)
    y_leaves, y_def = jax.tree_util.tree_flatten(y)
    if x_def != y_def:
        return False
    for a, b in zip(x_leaves, y_leaves):
        if eqx.is_array(a) != eqx.is_array(b):
            return False
        if not eqx.is_array(a):
            if a != b:
                return False
        elif a.shape != b.shape or a.dtype != b.dtype:
            return False
        elif not bool(jnp.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True)):
            return False
    return True


def assert_within_error_bar(estimate, stderr, expected, *, n_sigma=4.0):
    """Monte Carlo check: |estimate - expected| <= n_sigma standard errors."""
    gap = abs(float(estimate) - float(expected))
    assert gap <= n_sigma * float(stderr), (
        f"{estimate} vs {expected}: gap {gap} > {n_sigma}×{stderr}"
    )


def make_prompt(d, n_out, context_len, *, key):
    x_key, y_key, qx_key, qy_key = jr.split(key, 4)
    return ji.Prompt(
        x=jr.normal(x_key, (context_len, d)),
        y=jr.normal(y_key, (context_len, n_out)),
        query_x=jr.normal(qx_key, (d,)),
        query_y=jr.normal(qy_key, (n_out,)),
    )


def all_model_cases(d=3, n_out=2, n_heads=2):
    """(name, maker) pairs covering both kinds and both parametrizations."""
    cases = []
    for kind in ("softmax", "linear"):
        for parametrization in ("factorized", "merged"):

            def make(key, kind=kind, parametrization=parametrization):
                return ji.init_normal(
                    d=d,
                    n_out=n_out,
                    n_heads=n_heads,
                    scale=0.5,
                    kind=kind,
                    parametrization=parametrization,
                    key=key,
                )

            cases.append((f"{kind}-{parametrization}", make))
    return cases


def _stamp(folder):
    """Names and modification times of the files under `folder` (one being replaced while it
    is listed shows as changed)."""
    stamp = []
    for path in folder.rglob("*"):
        try:
            stamp.append((str(path), path.stat().st_mtime_ns))
        except FileNotFoundError:
            stamp.append((str(path), None))
    return sorted(stamp)


def kill_when_flagged(command, env, store, at_least: int, *, sig=signal.SIGKILL, stderr=None):
    """Start a sweep command and send `sig` (SIGKILL) once its store flags `at_least` step
    chunks; return the finished process.
    The flags are read when a file under `chunk_done/` changed (and every half second, in case
    a change fell within one tick of the file clock): reading them takes about 7 ms, which
    every 20 ms would take a quarter of a core from the run being watched."""
    process = subprocess.Popen(command, env=env, stderr=stderr)
    deadline = time.monotonic() + 300
    seen, read_at = None, 0.0
    while time.monotonic() < deadline and process.poll() is None:
        flagged = store / "chunk_done"
        stamp = _stamp(flagged)
        stale = stamp != seen or time.monotonic() - read_at > 0.5
        if stale and (flagged / "zarr.json").exists():
            seen, read_at = stamp, time.monotonic()
            flags = np.asarray(zarr.open_group(str(store), mode="r")["chunk_done"][:])
            if flags.sum() >= at_least:
                break
        time.sleep(0.02)
    process.send_signal(sig)
    process.wait()
    return process
