"""`reduced_time_scales`: SGD on the full model moves (Ω, M) exactly as the reduced flow of the
full model's own loss f(Ω, M) = ICL loss of the ansatz, with ℓ = n f (merged: −n ∇f;
factorized: −2n|ω| ∂f/∂ω, −2n|μ| ∂f/∂μ). Checked in float64 on fixed prompts, where it is an
identity of the chain rule, not an approximation."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import pytest

import jaxicl as ji


D_X, N_TASKS, L = 7, 2, 12
BLOCKS = ji.disjoint_blocks(D_X, N_TASKS)  # sizes 3 and 4: unequal on purpose


@pytest.mark.parametrize("factorized", [False, True])
def test_scaled_gradient_is_the_reduced_velocity(factorized, getkey):
    omega = 0.1 + 0.2 * jr.uniform(getkey(), (3, N_TASKS))
    mu = 0.5 * jr.normal(getkey(), (3, N_TASKS))
    task = ji.MultiTaskRegression(D_X, L, BLOCKS)
    prompts = ji.sample_prompts(task, 64, key=getkey())
    loss = ji.ICLLoss(task, 64)

    def f(om, m):
        model = ji.decomposable_attention(om, m, BLOCKS, D_X, factorized=factorized)
        return loss.evaluate(model, prompts)

    model = ji.decomposable_attention(omega, mu, BLOCKS, D_X, factorized=factorized)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    grads = jax.grad(lambda p: loss.evaluate(eqx.combine(p, static), prompts))(params)
    scales = eqx.filter(ji.reduced_time_scales(model, BLOCKS), eqx.is_inexact_array)
    velocity = jax.tree.map(lambda g, s: -g * s, grads, scales)
    # d(Ω, M)/dt along the update, by forward-mode differentiation of the observables
    _, (d_omega, d_mu) = jax.jvp(
        lambda p: ji.semi_singular_values(eqx.combine(p, static), BLOCKS), (params,), (velocity,)
    )
    g_omega, g_mu = jax.grad(f, argnums=(0, 1))(omega, mu)
    if factorized:
        want_omega, want_mu = (
            -2 * N_TASKS * jnp.abs(omega) * g_omega,
            -2 * N_TASKS * jnp.abs(mu) * g_mu,
        )
    else:
        want_omega, want_mu = -N_TASKS * g_omega, -N_TASKS * g_mu
    assert jnp.allclose(d_omega, want_omega, rtol=1e-9, atol=1e-12)
    assert jnp.allclose(d_mu, want_mu, rtol=1e-9, atol=1e-12)


def test_factorized_decomposable_model_has_the_merged_weights(getkey):
    omega = jr.normal(getkey(), (2, N_TASKS))  # both signs
    mu = jr.normal(getkey(), (2, N_TASKS))
    merged = ji.decomposable_attention(omega, mu, BLOCKS, D_X)
    factorized = ji.decomposable_attention(omega, mu, BLOCKS, D_X, factorized=True).merged()
    assert jnp.allclose(factorized.W, merged.W, atol=1e-12)
    assert jnp.allclose(factorized.U, merged.U, atol=1e-12)


def test_preconditioned_sgd_records_the_base_step_as_time(getkey):
    omega, mu = 0.1 * jnp.ones((2, N_TASKS)), 0.3 * jnp.ones((2, N_TASKS))
    model = ji.decomposable_attention(omega, mu, BLOCKS, D_X)
    optimizer = ji.preconditioned_sgd(0.01, ji.reduced_time_scales(model, BLOCKS))
    task = ji.MultiTaskRegression(D_X, L, BLOCKS)
    _, traj = ji.train(
        model, ji.ICLLoss(task, 8), optimizer, steps=10, record_every=5, key=getkey()
    )
    assert jnp.allclose(traj.time, jnp.asarray([0.0, 0.05]))
