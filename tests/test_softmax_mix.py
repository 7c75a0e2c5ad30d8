"""The softmax mix with its derivative written out is the same function as softmax then a
weighted sum, to every order autodiff takes: values, forward mode, reverse mode and second
derivatives in float64, on any context axis, and at scores large enough to overflow an
unshifted exponential."""

import jax
import jax.numpy as jnp
import jax.random as jr
import pytest

from jaxicl._attention._softmax_mix import softmax_mix


def plain(scores, values, axis):
    return jnp.sum(jax.nn.softmax(scores, axis=axis) * values, axis=axis)


@pytest.mark.parametrize("shape, axis", [((5, 7, 3), 1), ((4, 6), -1), ((6, 2, 3), 0)])
def test_values_and_derivatives_equal_the_plain_expression(shape, axis, getkey):
    scores = 2.0 * jr.normal(getkey(), shape)
    values = jr.normal(getkey(), shape)
    weights = jr.normal(getkey(), jnp.sum(scores, axis=axis).shape)
    assert scores.dtype == jnp.float64
    loss = lambda f: lambda s, v: jnp.sum(weights * f(s, v, axis) ** 2)  # noqa: E731
    fused, reference = loss(softmax_mix), loss(plain)
    assert jnp.allclose(fused(scores, values), reference(scores, values), rtol=1e-13)
    tangents = (jr.normal(getkey(), shape), jr.normal(getkey(), shape))
    jvp = jax.jvp(fused, (scores, values), tangents)[1]
    assert jnp.allclose(jvp, jax.jvp(reference, (scores, values), tangents)[1], rtol=1e-12)
    for argnum in (0, 1):
        got = jax.grad(fused, argnums=argnum)(scores, values)
        want = jax.grad(reference, argnums=argnum)(scores, values)
        assert jnp.allclose(got, want, rtol=1e-11, atol=1e-14)
        got = jax.hessian(fused, argnums=argnum)(scores, values)
        want = jax.hessian(reference, argnums=argnum)(scores, values)
        assert jnp.allclose(got, want, rtol=1e-10, atol=1e-13)


def test_large_scores_stay_finite_and_exact(getkey):
    scores = jnp.array([[800.0, 799.0, -900.0], [1e4, 1e4, 0.0]])
    values = jr.normal(getkey(), scores.shape)
    out, grads = jax.value_and_grad(lambda s: jnp.sum(softmax_mix(s, values, 1)))(scores)
    ref, ref_grads = jax.value_and_grad(lambda s: jnp.sum(plain(s, values, 1)))(scores)
    assert jnp.isfinite(out) and jnp.all(jnp.isfinite(grads))
    assert jnp.allclose(out, ref, rtol=1e-13) and jnp.allclose(grads, ref_grads, atol=1e-13)
