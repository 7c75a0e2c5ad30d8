"""Per-member outcomes that exist only for some members: NaN (no outcome) for the others, so a
member that diverged or is still in warm-up is counted, never given a number."""

import jax.numpy as jnp


def outcome(value, known):
    """`value` where `known`, NaN elsewhere (flags become 1.0 / 0.0)."""
    value = jnp.asarray(value)
    if not jnp.issubdtype(value.dtype, jnp.floating):
        value = value.astype(jnp.float32)
    return jnp.where(known, value, jnp.nan)
