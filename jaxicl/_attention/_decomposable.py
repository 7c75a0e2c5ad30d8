"""Full attention models on the decomposable ansatz.

On the ansatz, head h reads ω_{h,i} on every diagonal entry of W_h over the block S_i and
μ_{h,i} at U_h[i, d + i]. Plain SGD on these weights moves (Ω, M) as the reduced flow of the
weights' gradient flow (`WeightFlow`, where the rates are derived), on the same clock.
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
