"""Shared jaxtyping aliases and the dtype rule used across jaxicl."""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray


Scalar = Float[Array, ""]
IntScalar = Int[Array, ""]
BoolScalar = Bool[Array, ""]
Key = PRNGKeyArray
Blocks = tuple[tuple[int, int], ...]


def default_float_dtype(dtype=None):
    """Resolve `dtype=None` to float64 under `jax_enable_x64`, else float32."""
    if dtype is not None:
        return jnp.dtype(dtype)
    return jnp.dtype(jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
