"""Per-member outcomes that exist only for some members: NaN (no outcome) for the others, so a
member that diverged or is still in warm-up is counted, never given a number. `outcome`
encodes one for the store; `flag` reads a stored flag back."""

import jax.numpy as jnp
import numpy as np


def outcome(value, known):
    """`value` where `known`, NaN elsewhere (flags become 1.0 / 0.0)."""
    value = jnp.asarray(value)
    if not jnp.issubdtype(value.dtype, jnp.floating):
        value = value.astype(jnp.float32)
    return jnp.where(known, value, jnp.nan)


def flag(values) -> np.ndarray:
    """A stored flag (1 = true, 0 = false, NaN = no outcome or not run) as booleans: true only
    where it is 1, so a member without an outcome is neither a success nor a failure here."""
    return np.asarray(getattr(values, "values", values)) == 1
