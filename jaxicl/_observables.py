"""Semi-singular values: the per-head, per-task summary of an attention model.

For head h and task i (definitions of the reference code of Chen et al. 2024):
ω_{h,i} = mean of the diagonal of the x–x block of W_h over the coordinates S_i, and
μ_{h,i} = U_h[i, d + i], the output-value entry that reads label y_i into output i.
Under the decomposable ansatz these two H×n matrices are the whole state of the dynamics.
"""

import jax.numpy as jnp
from jaxtyping import Array, Float

from ._attention import AbstractAttention
from ._custom_types import Blocks


def semi_singular_values(
    model: AbstractAttention, blocks: Blocks
) -> tuple[Float[Array, "H n"], Float[Array, "H n"]]:
    """Return (ω, μ), each of shape `(H, n_tasks)`, from either parametrization.

    **Arguments:**

    - `model`: one (unbatched) attention model with `n_out == len(blocks)` outputs.
    - `blocks`: the tasks' coordinate blocks, e.g. `task.blocks`, or `((0, d),)` for one task.
    """
    merged = model.merged()
    n_out = merged.U.shape[1]
    if n_out != len(blocks):
        raise ValueError(
            f"`blocks` must have one block per model output ({n_out}), got {len(blocks)}."
        )
    d = merged.W.shape[-1] - n_out
    diagonal = jnp.diagonal(merged.W[:, :d, :d], axis1=1, axis2=2)
    omega = jnp.stack([diagonal[:, start:stop].mean(axis=1) for start, stop in blocks], axis=1)
    tasks = jnp.arange(n_out)
    mu = merged.U[:, tasks, d + tasks]
    return omega, mu
