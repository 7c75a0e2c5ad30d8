"""Σ_l softmax(s)_l v_l with a derivative written out: one pass where autodiff takes several.

Differentiating `sum(softmax(s) * v)` as written makes XLA stream the (prompt × context ×
head·member) arrays once per primitive of the softmax's backward: g·v, the reduction
Σ_l a_l g v_l, the subtraction, the product with a. Written out, the derivative needs no
reduction at all, because Σ_l a_l v_l is the output itself:

    d out = Σ_l a_l (ds_l (v_l − out) + dv_l),

so reverse mode gives ds = ḡ a (v − out) and dv = ḡ a: two products of saved arrays. The rule
is a JVP (`jax.custom_jvp`), not a VJP, so forward mode and higher derivatives still work (JAX
transposes the linear rule for reverse mode).
"""

import functools

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def softmax_mix(
    scores: Float[Array, "..."], values: Float[Array, "..."], axis: int
) -> Float[Array, "..."]:
    """Σ over `axis` of softmax(scores, axis) · values (scores and values of one shape)."""
    return jnp.sum(jax.nn.softmax(scores, axis=axis) * values, axis=axis)


@softmax_mix.defjvp
def _softmax_mix_jvp(axis, primals, tangents):
    scores, values = primals
    d_scores, d_values = tangents
    weights = jax.nn.softmax(scores, axis=axis)
    out = jnp.sum(weights * values, axis=axis)
    centred = values - jnp.expand_dims(out, axis)
    return out, jnp.sum(weights * (d_scores * centred + d_values), axis=axis)
