"""Shared type aliases and the dtype rule used across jaxicl."""

import jax
import jax.numpy as jnp


# Coordinate blocks of a multi-task layout: one half-open (start, stop) pair per task.
Blocks = tuple[tuple[int, int], ...]


def default_float_dtype(dtype=None):
    """Resolve `dtype=None` to float64 under `jax_enable_x64`, else float32."""
    if dtype is not None:
        return jnp.dtype(dtype)
    return jnp.dtype(jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
