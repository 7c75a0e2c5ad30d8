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
from ._kinds import AbstractAttentionKind
from ._models import AbstractAttention, FactorizedAttention, MergedAttention
from ._reduced import AbstractSpectral, FactorizedSpectral


def decomposable_attention(
    omega: Float[Array, "H n"],
    mu: Float[Array, "H n"],
    blocks: Blocks,
    d: int,
    *,
    kind: AbstractAttentionKind | str = "softmax",
    factorized: bool = False,
) -> AbstractAttention:
    """The attention model of the decomposable ansatz for (Ω, M) over disjoint `blocks`.

    `factorized=False`: a `MergedAttention` with exactly those W, U. `factorized=True`: the
    balanced `FactorizedAttention` with the same merged weights (`factorized_attention` of the
    factors q = √|ω|, k = sign(ω)√|ω|, o = sign(μ)√|μ|, v = √|μ|).
    """
    n_heads, n_tasks = omega.shape
    width = d + n_tasks
    coords, tasks = jnp.arange(d), jnp.arange(n_tasks)
    diagonal = omega @ block_mask(blocks, d, omega.dtype)  # (H, d)
    if not factorized:
        W = jnp.zeros((n_heads, width, width), omega.dtype).at[:, coords, coords].set(diagonal)
        U = jnp.zeros((n_heads, n_tasks, width), mu.dtype).at[:, tasks, d + tasks].set(mu)
        return MergedAttention(W=W, U=U, kind=kind)
    root = jnp.sqrt(jnp.abs(omega))
    label = jnp.sqrt(jnp.abs(mu))
    factors = FactorizedSpectral(q=root, k=jnp.sign(omega) * root, o=jnp.sign(mu) * label, v=label)
    return factorized_attention(factors, blocks, d, kind=kind)


def factorized_attention(
    factors: FactorizedSpectral,
    blocks: Blocks,
    d: int,
    *,
    kind: AbstractAttentionKind | str = "softmax",
) -> FactorizedAttention:
    """The `FactorizedAttention` of factors ω = q k, μ = o v on the ansatz, balanced or not:
    Q_h, K_h diagonal on the x-coordinates of block S_i with D^(1/4) q_{h,i}, D^(1/4) k_{h,i}
    (so W = KᵀQ/√D carries ω), V_h[d + i, d + i] = v_{h,i}, O_h[i, d + i] = o_{h,i}; every
    other entry is zero. An unbalanced start (|q| ≠ |k|, e.g. `ChenCode`) stays unbalanced."""
    n_heads, n_tasks = factors.q.shape
    width = d + n_tasks
    coords, tasks = jnp.arange(d), jnp.arange(n_tasks)
    mask = block_mask(blocks, d, factors.q.dtype)
    per_coordinate = lambda x: math.sqrt(math.sqrt(width)) * (x @ mask)  # noqa: E731  (H, d)
    zeros = jnp.zeros((n_heads, width, width), factors.q.dtype)
    Q = zeros.at[:, coords, coords].set(per_coordinate(factors.q))
    K = zeros.at[:, coords, coords].set(per_coordinate(factors.k))
    V = zeros.at[:, d + tasks, d + tasks].set(factors.v)
    O = jnp.zeros((n_heads, n_tasks, width), factors.o.dtype).at[:, tasks, d + tasks].set(factors.o)
    return FactorizedAttention(Q=Q, K=K, V=V, O=O, kind=kind)


def attention_from_start(
    start: AbstractSpectral, blocks: Blocks, d: int, *, factorized: bool = False
) -> AbstractAttention:
    """The full model of a reduced start on the decomposable ansatz: a factorized start with
    its own factors (balanced or not); a merged start as the merged model, or with
    `factorized` as its balanced factors."""
    if isinstance(start, FactorizedSpectral):
        return factorized_attention(start, blocks, d)
    return decomposable_attention(*start.spectral(), blocks, d, factorized=factorized)
