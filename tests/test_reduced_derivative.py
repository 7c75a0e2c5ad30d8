"""The reduced loss's closed-form derivative against autodiff of its plain expression (float64),
and the members-minor evaluation against member-by-member evaluation."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import pytest

from jaxicl._attention._init_schemes import INIT_SCHEMES
from jaxicl._attention._reduced import expanded_reduced_loss
from jaxicl._attention._reduced_derivative import derived_reduced_loss
from jaxicl._attention._reduced_flows import REDUCED_FLOWS


SIZES, L = (4, 5, 6), 40


def _point(getkey, members=()):
    # mixed signs, some ω near the expansion's edge (2ω² up to 0.72) where t and K are large
    omega = jr.uniform(getkey(), (3, 3, *members), minval=-0.6, maxval=0.6)
    mu = jr.normal(getkey(), (3, 3, *members))
    return omega, mu


def _both(omega, mu, sigma, sigma_q):
    derived = derived_reduced_loss(omega, mu, SIZES, L, sigma, sigma_q)
    plain = expanded_reduced_loss(omega, mu, SIZES, L, sigma, sigma_q)
    return derived, plain


@pytest.mark.parametrize("members", [(), (5,), (2, 3)])
def test_value_and_gradient_equal_autodiff_of_the_expression(members, getkey):
    omega, mu = _point(getkey, members)
    derived, plain = _both(omega, mu, 0.3, 0.2)
    assert derived.shape == members
    assert jnp.allclose(derived, plain, rtol=1e-13, atol=0)

    def total(which):
        return lambda o, m, s, q: jnp.sum(_both(o, m, s, q)[which])

    args = (omega, mu, 0.3, 0.2)
    got = jax.grad(total(0), argnums=(0, 1, 2, 3))(*args)
    want = jax.grad(total(1), argnums=(0, 1, 2, 3))(*args)
    for name, g, w in zip(("omega", "mu", "context_noise", "query_noise"), got, want):
        scale = float(jnp.max(jnp.abs(w)))
        assert scale > 0, name
        assert float(jnp.max(jnp.abs(g - w))) <= 1e-12 * scale, name


def test_second_derivatives_and_forward_mode_equal_the_expression(getkey):
    omega, mu = _point(getkey)
    derived = lambda o, m: derived_reduced_loss(o, m, SIZES, L, 0.1, 0.0)  # noqa: E731
    plain = lambda o, m: expanded_reduced_loss(o, m, SIZES, L, 0.1, 0.0)  # noqa: E731
    for argnums in ((0, 0), (0, 1), (1, 1)):
        i, j = argnums
        got = jax.jacfwd(jax.grad(derived, argnums=i), argnums=j)(omega, mu)
        want = jax.jacfwd(jax.grad(plain, argnums=i), argnums=j)(omega, mu)
        assert float(jnp.max(jnp.abs(got - want))) <= 1e-11 * float(jnp.max(jnp.abs(want)))


def test_derivative_is_nan_where_the_expansion_fails(getkey):
    omega = jnp.full((2, 3), 0.8)  # 2ω² > 1
    grad = jax.grad(lambda o: derived_reduced_loss(o, jnp.ones((2, 3)), SIZES, L, 0.0, 0.0))(omega)
    assert not bool(jnp.all(jnp.isfinite(grad)))


@pytest.mark.parametrize("flow", ["weights", "euclidean"])
@pytest.mark.parametrize("scheme", ["random-positive", "random-sign"])
def test_members_minor_evaluation_equals_member_by_member(flow, scheme, getkey):
    """The built-in states move their leaves members-minor (`trailing_members`); each member's
    loss and gradient equal evaluating it alone."""
    sizes = (5, 5, 6)
    flow, init = REDUCED_FLOWS[flow], INIT_SCHEMES[scheme]
    keys = jr.split(getkey(), 7)
    states = eqx.filter_vmap(lambda k: flow.state(init(3, 3, 0.1, width=19, key=k), sizes))(keys)
    assert type(states).trailing_members
    assert bool(jnp.all(jnp.isfinite(eqx.filter_vmap(lambda m: m.spectral()[0])(states))))
    objective = flow.objective(sizes, L, context_noise=0.2)
    joint = lambda s: jnp.sum(objective.evaluate_members(s, None))  # noqa: E731
    alone = lambda s: jnp.sum(eqx.filter_vmap(lambda m: objective.evaluate(m, None))(s))  # noqa: E731
    assert jnp.allclose(
        objective.evaluate_members(states, None),
        eqx.filter_vmap(lambda m: objective.evaluate(m, None))(states),
        rtol=1e-13,
    )
    got, want = jax.grad(joint)(states), jax.grad(alone)(states)
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        assert jnp.allclose(g, w, rtol=1e-12, atol=1e-14)
