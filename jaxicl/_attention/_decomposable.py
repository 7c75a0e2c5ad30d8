"""Full attention models on the decomposable ansatz, and the learning rates that make their
training time the reduced flow's time.

On the ansatz, head h reads ω_{h,i} on every diagonal entry of W_h over the block S_i and
μ_{h,i} at U_h[i, d + i]. Plain gradient descent on the full weights does not move (Ω, M) at
the reduced flow's speed: each ω is shared by r_i diagonal entries (so it moves r_i times
slower), the ICL loss averages the n outputs where ℓ sums them (n times slower), and in the
factorized model W = KᵀQ/√D adds a 1/√D. `reduced_time_scales` returns per-entry factors that
undo exactly these, so SGD with step dt on the full model is, on the ansatz and for large L,
the explicit Euler step dt of the reduced flow (merged flow for `MergedAttention`, balanced
factorized flow for `FactorizedAttention`). Off-ansatz entries get the same factors; they are
free to grow, and how little they do is what the comparison measures.
"""

import math

import jax.numpy as jnp
from jaxtyping import Array, Float

from .._custom_types import Blocks
from .._tasks._regression import block_mask
from ._models import AbstractAttention, FactorizedAttention, MergedAttention


def decomposable_attention(
    omega: Float[Array, "H n"],
    mu: Float[Array, "H n"],
    blocks: Blocks,
    d: int,
    *,
    kind: str = "softmax",
    factorized: bool = False,
) -> AbstractAttention:
    """The attention model of the decomposable ansatz for (Ω, M) over disjoint `blocks`.

    `factorized=False`: a `MergedAttention` with exactly those W, U. `factorized=True`: the
    balanced `FactorizedAttention` with the same merged weights: Q_h = diagonal √(√D|ω|) on
    the x-coordinates, K_h = sign(ω) Q_h, V_h = diagonal √|μ| on the label coordinates,
    O_h[i, d + i] = sign(μ_{h,i}) √|μ_{h,i}|; every other entry is zero.
    """
    n_heads, n_tasks = omega.shape
    width = d + n_tasks
    coords, tasks = jnp.arange(d), jnp.arange(n_tasks)
    diagonal = omega @ block_mask(blocks, d, omega.dtype)  # (H, d)
    if not factorized:
        W = jnp.zeros((n_heads, width, width), omega.dtype).at[:, coords, coords].set(diagonal)
        U = jnp.zeros((n_heads, n_tasks, width), mu.dtype).at[:, tasks, d + tasks].set(mu)
        return MergedAttention(W=W, U=U, kind=kind)
    root = jnp.sqrt(math.sqrt(width) * jnp.abs(diagonal))
    Q = jnp.zeros((n_heads, width, width), omega.dtype).at[:, coords, coords].set(root)
    K = Q.at[:, coords, coords].multiply(jnp.sign(diagonal))
    label = jnp.sqrt(jnp.abs(mu))
    V = jnp.zeros((n_heads, width, width), mu.dtype).at[:, d + tasks, d + tasks].set(label)
    O = (
        jnp.zeros((n_heads, n_tasks, width), mu.dtype)
        .at[:, tasks, d + tasks]
        .set(jnp.sign(mu) * label)
    )
    return FactorizedAttention(Q=Q, K=K, V=V, O=O, kind=kind)


def reduced_time_scales(model: AbstractAttention, blocks: Blocks) -> AbstractAttention:
    """Per-entry learning-rate factors (a pytree shaped like `model`) under which SGD on the
    full model runs on the reduced flow's clock (see the module docstring).

    The ansatz entries that carry ω for a coordinate of block S_i (the x-diagonal of W, or of
    Q and K when factorized) get n·r_i (times √D when factorized); every other entry, the label
    entries that carry μ included, gets n: the ICL loss's own clock. Off-ansatz entries have no
    population gradient on the ansatz and grow only from sampling noise, so keeping them on the
    plain clock keeps that noise at the level of ordinary SGD on the ICL loss.
    """
    if not isinstance(model, (MergedAttention, FactorizedAttention)):
        raise ValueError(
            f"`model` must be a MergedAttention or FactorizedAttention, got {type(model).__name__}."
        )
    factorized = isinstance(model, FactorizedAttention)
    score = model.Q if factorized else model.W  # (H, r, D) or (H, D, D): the entries that carry ω
    width, dtype, n_tasks = score.shape[-1], score.dtype, len(blocks)
    if score.shape[1] != width:
        raise ValueError(f"`model` must have square Q and K (r = D = {width}), got {score.shape}.")
    d = width - n_tasks
    sizes = jnp.asarray([stop - start for start, stop in blocks], dtype)
    root_width = math.sqrt(width) if factorized else 1.0
    omega_scale = n_tasks * root_width * (sizes @ block_mask(blocks, d, dtype))
    coords = jnp.arange(d)
    diagonal = jnp.full(score.shape, n_tasks, dtype).at[:, coords, coords].set(omega_scale)
    plain = lambda array: jnp.full(array.shape, n_tasks, dtype)  # noqa: E731
    if factorized:
        return FactorizedAttention(
            Q=diagonal, K=diagonal, V=plain(model.V), O=plain(model.O), kind=model.kind
        )
    return MergedAttention(W=diagonal, U=plain(model.U), kind=model.kind)
