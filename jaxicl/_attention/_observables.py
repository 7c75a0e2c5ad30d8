"""Semi-singular values: the per-head, per-task summary of an attention model.

For head h and task i (definitions of the reference code of Chen et al. 2024):
ω_{h,i} = mean of the diagonal of the x–x block of W_h over the coordinates S_i, and
μ_{h,i} = U_h[i, d + i], the output-value entry that reads label y_i into output i.
Under the decomposable ansatz these two H×n matrices are the whole state of the dynamics.
"""

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._custom_types import Blocks
from ._models import AbstractAttention


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


def own_semi_singular_values(
    model: AbstractAttention, blocks: Blocks
) -> tuple[Float[Array, "H n"], Float[Array, "H n"]]:
    """(ω, μ) as `semi_singular_values`, with ω_{h,i} over the coordinates only task i reads
    (its block minus every other): for overlapping blocks, where the shared coordinates would
    mix the tasks. Every task needs a coordinate of its own."""
    merged = model.merged()
    n_out = merged.U.shape[1]
    d = merged.W.shape[-1] - n_out
    mask = np.zeros((len(blocks), d))
    for i, (start, stop) in enumerate(blocks):
        mask[i, start:stop] = 1.0
    own = mask * (mask.sum(axis=0, keepdims=True) == 1)
    if not np.all(own.sum(axis=1) > 0):
        raise ValueError(f"every block must have a coordinate of its own, got {blocks}.")
    diagonal = jnp.diagonal(merged.W[:, :d, :d], axis1=1, axis2=2)
    omega = diagonal @ jnp.asarray(own.T / own.sum(axis=1)[None, :], diagonal.dtype)
    tasks = jnp.arange(n_out)
    return omega, merged.U[:, tasks, d + tasks]


class HeadStructure(eqx.Module):
    """The learned structure of each head of a single-output model (He et al. 2025), per head.

    - `kq_diagonal_ratio`: ‖diag W_xx‖ / ‖W_xx‖ (1: the x-block of KQ is diagonal).
    - `kq_diagonal_spread`: std / |mean| of that diagonal (0: homogeneous, ω I).
    - `kq_label_ratio`: weight of W outside its x-block (the label row and column) over ‖W‖.
    - `ov_last_entry_ratio`: |U[0, d]| / ‖U‖ (1: OV reads only the label, "last-entry-only").
    - `omega`, `mu`: the head's semi-singular values (diagonal mean, label entry).
    """

    kq_diagonal_ratio: Float[Array, " H"]
    kq_diagonal_spread: Float[Array, " H"]
    kq_label_ratio: Float[Array, " H"]
    ov_last_entry_ratio: Float[Array, " H"]
    omega: Float[Array, " H"]
    mu: Float[Array, " H"]


def head_structure(model: AbstractAttention) -> HeadStructure:
    """Structure statistics of every head of one single-output model (token (x, y))."""
    merged = model.merged()
    if merged.U.shape[1] != 1:
        raise ValueError(f"`model` must have one output, got {merged.U.shape[1]}.")
    d = merged.W.shape[-1] - 1
    x_block = merged.W[:, :d, :d]
    diagonal = jnp.diagonal(x_block, axis1=1, axis2=2)
    norm = lambda a, axes: jnp.sqrt(jnp.sum(a**2, axis=axes))  # noqa: E731
    w_norm = norm(merged.W, (1, 2))
    omega = diagonal.mean(axis=1)
    return HeadStructure(
        kq_diagonal_ratio=norm(diagonal, 1) / norm(x_block, (1, 2)),
        kq_diagonal_spread=diagonal.std(axis=1) / jnp.abs(omega),
        kq_label_ratio=jnp.sqrt(jnp.maximum(w_norm**2 - norm(x_block, (1, 2)) ** 2, 0)) / w_norm,
        ov_last_entry_ratio=jnp.abs(merged.U[:, 0, d]) / norm(merged.U[:, 0, :], 1),
        omega=omega,
        mu=merged.U[:, 0, d],
    )
