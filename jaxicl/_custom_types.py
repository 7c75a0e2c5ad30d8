"""Shared type aliases and the dtype rule used across jaxicl."""

import jax
import jax.numpy as jnp


# Coordinate blocks of a multi-task layout: one half-open (start, stop) pair per task.
Blocks = tuple[tuple[int, int], ...]


def default_float_dtype(dtype=None):
    """Resolve `dtype=None` to float64 under `jax_enable_x64`, else float32; refuse a 64-bit
    dtype without x64 (JAX would silently give float32 arrays)."""
    if dtype is not None:
        dtype = jnp.dtype(dtype)
        if jax.dtypes.canonicalize_dtype(dtype) != dtype:
            raise ValueError(
                f"`dtype` {dtype} needs 64-bit JAX: set jax.config.update('jax_enable_x64', "
                "True) first (otherwise the arrays would silently be 32-bit)."
            )
        return dtype
    return jnp.dtype(jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
