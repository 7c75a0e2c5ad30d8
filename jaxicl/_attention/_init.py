"""Initialization schemes: plain functions of a key that return an attention model.

An ensemble of initializations is `eqx.filter_vmap(lambda k: init_x(..., key=k))(keys)`.
"""

import jax.numpy as jnp
import jax.random as jr
from jaxtyping import PRNGKeyArray

from .. import _validation as check
from .._custom_types import default_float_dtype
from ._kinds import AbstractAttentionKind, attention_kind
from ._models import FactorizedAttention, MergedAttention


# names at the edge: a parametrization is the model class whose weights are drawn
PARAMETRIZATIONS = {"factorized": FactorizedAttention, "merged": MergedAttention}


def init_normal(
    *,
    d: int,
    n_out: int,
    n_heads: int,
    scale: float,
    kind: AbstractAttentionKind | str = "softmax",
    parametrization: type[FactorizedAttention | MergedAttention] | str = "factorized",
    rank: int | None = None,
    dtype=None,
    key: PRNGKeyArray,
):
    """Every weight entry i.i.d. N(0, scale²).

    **Arguments:**

    - `d`, `n_out`, `n_heads`: input dimension, outputs (tasks), heads H; tokens have D = d + n_out.
    - `scale`: standard deviation of every entry, finite and >= 0.
    - `kind`: an attention kind, or its name `"softmax"` or `"linear"`.
    - `parametrization`: `FactorizedAttention` (Q, K, V, O) or `MergedAttention` (W, U), or
      their names `"factorized"`, `"merged"`.
    - `rank`: r of Q and K in the factorized form (default D).
    - `dtype`: floating dtype; `None` follows the x64 setting.

    **Returns:** a `FactorizedAttention` or `MergedAttention`.
    """
    width = _check_sizes(d, n_out, n_heads)
    scale = check.finite_nonnegative("scale", scale)
    kind = attention_kind(kind)
    if isinstance(parametrization, str):
        check.one_of("parametrization", parametrization, PARAMETRIZATIONS)
        parametrization = PARAMETRIZATIONS[parametrization]
    check.one_of("parametrization", parametrization, PARAMETRIZATIONS.values())
    rank = width if rank is None else check.positive_int("rank", rank)
    dtype = default_float_dtype(dtype)
    shapes = parametrization.weight_shapes(width, n_out, n_heads, rank)
    return parametrization(**_normal_leaves(shapes, scale, dtype, key), kind=kind)


def init_balanced(
    *,
    d: int,
    n_tasks: int,
    n_heads: int,
    context_len: int,
    scale: float | None = None,
    random_sign: bool = False,
    dtype=None,
    key: PRNGKeyArray,
) -> FactorizedAttention:
    """The balanced small init of Chen et al. (2024), with a favoured task per head.

    Q_h = K_h = s I_D with s = L^{-3/4} by default. V_h is zero on the x-part and diagonal on the
    y-part with value s, except 2s on head h's favoured task (h mod n); O_h's y-block is the
    transpose of V_h's, so head h starts with a 4× OV advantage on its task. With
    `random_sign=True`, each head's Q and K are multiplied by independent N(0, 1) scalars, which
    gives random-sign ω. Requires H >= n_tasks.
    """
    width = _check_sizes(d, n_tasks, n_heads, "n_tasks")
    context_len = check.positive_int("context_len", context_len)
    if n_heads < n_tasks:
        raise ValueError(
            f"`n_heads` must be >= n_tasks={n_tasks} for the balanced init, got {n_heads}."
        )
    s = context_len ** (-0.75) if scale is None else check.finite_positive("scale", scale)
    dtype = default_float_dtype(dtype)
    eye = jnp.broadcast_to(s * jnp.eye(width, dtype=dtype), (n_heads, width, width))
    q_signs = k_signs = jnp.ones((n_heads, 1, 1), dtype)
    if random_sign:
        q_key, k_key = jr.split(key)
        q_signs = jr.normal(q_key, (n_heads, 1, 1), dtype)
        k_signs = jr.normal(k_key, (n_heads, 1, 1), dtype)
    favoured = jnp.arange(n_heads) % n_tasks
    is_favoured = favoured[:, None] == jnp.arange(n_tasks)[None, :]
    y_diag = jnp.where(is_favoured, 2.0 * s, s).astype(dtype)
    y_block = y_diag[:, :, None] * jnp.eye(n_tasks, dtype=dtype)[None]
    V = jnp.zeros((n_heads, width, width), dtype).at[:, d:, d:].set(y_block)
    O = jnp.zeros((n_heads, n_tasks, width), dtype).at[:, :, d:].set(jnp.swapaxes(y_block, 1, 2))
    return FactorizedAttention(Q=q_signs * eye, K=k_signs * eye, V=V, O=O, kind="softmax")


def init_identity(
    *,
    d: int,
    n_out: int,
    n_heads: int,
    scale: float,
    opposite_halves: bool = False,
    kind: AbstractAttentionKind | str = "softmax",
    dtype=None,
    key: PRNGKeyArray,
) -> FactorizedAttention:
    """Small identity: Q_h = K_h = V_h = s I_D and O_h = s [0 | I_{n_out}] (reads the labels).

    With `opposite_halves=True` the second half of the heads gets -Q and -O, so head pairs start
    at (ω, μ) and (-ω, -μ), the ± structure of He et al.; H must then be even. `key` is unused
    (the scheme is deterministic) but kept so every scheme vmaps over keys the same way.
    """
    del key
    width = _check_sizes(d, n_out, n_heads)
    s = check.finite_nonnegative("scale", scale)
    kind = attention_kind(kind)
    if opposite_halves and n_heads % 2:
        raise ValueError(f"`n_heads` must be even when opposite_halves=True, got {n_heads}.")
    dtype = default_float_dtype(dtype)
    eye = jnp.broadcast_to(s * jnp.eye(width, dtype=dtype), (n_heads, width, width))
    read_labels = jnp.zeros((n_out, width), dtype).at[:, d:].set(s * jnp.eye(n_out, dtype=dtype))
    signs = jnp.ones((n_heads, 1, 1), dtype)
    if opposite_halves:
        signs = signs.at[n_heads // 2 :].set(-1.0)
    O = signs * jnp.broadcast_to(read_labels, (n_heads, n_out, width))
    return FactorizedAttention(Q=signs * eye, K=eye, V=eye, O=O, kind=kind)


def _check_sizes(d, n_out, n_heads, n_out_name="n_out") -> int:
    check.positive_int("d", d)
    check.positive_int(n_out_name, n_out)
    check.positive_int("n_heads", n_heads)
    return d + n_out


def _normal_leaves(shapes: dict, scale: float, dtype, key) -> dict:
    keys = jr.split(key, len(shapes))
    return {
        name: scale * jr.normal(k, shape, dtype) for (name, shape), k in zip(shapes.items(), keys)
    }
