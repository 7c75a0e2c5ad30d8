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

from ._attention import AbstractAttention, FactorizedAttention, MergedAttention
from ._custom_types import Blocks
from ._tasks import block_mask


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
    n_tasks = len(blocks)
    merged = model.merged()
    width = merged.W.shape[-1]
    d = width - n_tasks
    dtype = merged.W.dtype
    sizes = jnp.asarray([stop - start for start, stop in blocks], dtype)
    coords = jnp.arange(d)
    if isinstance(model, MergedAttention):
        omega_scale, shape = n_tasks * (sizes @ block_mask(blocks, d, dtype)), model.W.shape
    elif isinstance(model, FactorizedAttention):
        omega_scale = n_tasks * math.sqrt(width) * (sizes @ block_mask(blocks, d, dtype))
        shape = model.Q.shape
        if shape[1] != width:
            raise ValueError(f"`model` must have square Q and K (r = D = {width}), got {shape}.")
    else:
        raise ValueError(
            f"`model` must be a MergedAttention or FactorizedAttention, got {type(model).__name__}."
        )
    diagonal = jnp.full(shape, n_tasks, dtype).at[:, coords, coords].set(omega_scale)
    plain = lambda array: jnp.full(array.shape, n_tasks, dtype)  # noqa: E731
    if isinstance(model, MergedAttention):
        return MergedAttention(W=diagonal, U=plain(model.U), kind=model.kind)
    return FactorizedAttention(
        Q=diagonal, K=diagonal, V=plain(model.V), O=plain(model.O), kind=model.kind
    )
