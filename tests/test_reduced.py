import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax
import pytest

import jaxicl as ji


MergedSpectral, ReducedLoss, reduced_loss = ji.MergedSpectral, ji.ReducedLoss, ji.reduced_loss
balanced_factorization, decomposable_attention = (
    ji.balanced_factorization,
    ji.decomposable_attention,
)

N_TASKS, R, L = 3, 5, 100
D = N_TASKS * R
BLOCKS = ji.disjoint_blocks(D, N_TASKS)
SIZES = (R,) * N_TASKS


def test_paired_heads_at_zero_omega_predict_zero_and_lose_the_target_energy(getkey):
    mu = jnp.array([[0.7, 0.2, 0.4], [-0.7, -0.2, -0.4]])
    omega = jnp.zeros_like(mu)
    sigma_q = 0.3
    expected = N_TASKS * sigma_q**2 + sum(SIZES)  # E‖y_q‖²
    loss = reduced_loss(omega, mu, block_sizes=SIZES, context_len=L, query_noise=sigma_q)
    assert jnp.allclose(loss, expected, rtol=1e-12)
    prompt = ji.MultiTaskRegression(D, L, BLOCKS).sample(key=getkey())
    assert float(jnp.abs(decomposable_attention(omega, mu, BLOCKS, D)(prompt)).max()) < 1e-12


def test_gradient_matches_finite_differences(getkey):
    omega, mu = 0.2 * jr.normal(getkey(), (3, 3)), jr.normal(getkey(), (3, 3))
    direction = jr.normal(getkey(), (2, 3, 3))

    def along(t):
        return reduced_loss(
            omega + t * direction[0],
            mu + t * direction[1],
            block_sizes=SIZES,
            context_len=L,
            context_noise=0.2,
        )

    h = 1e-6
    fd = (along(h) - along(-h)) / (2 * h)
    assert jnp.allclose(jax.grad(along)(0.0), fd, rtol=1e-7)


def test_reduced_loss_is_its_documented_formula_and_bounded_below(getkey):
    """ℓ written out entry by entry (loops, not einsum) for random Ω, M with noise; and
    ℓ ≥ σ_q² even where the bare first-order sum would run off to −∞ in μ (ω² > 1/3, small L)."""
    omega = 0.25 * jr.normal(getkey(), (3, 3))
    mu = jr.normal(getkey(), (3, 3))
    sigma, sigma_q, length = 0.3, 0.2, 50
    expected = 0.0
    for i in range(3):
        slope, fluctuation = 0.0, 0.0
        for h in range(3):
            k_hh = jnp.prod((1 - 2 * omega[h] ** 2) ** (-R / 2))
            slope += mu[h, i] * omega[h, i] / (1 + k_hh / (length * (1 - 2 * omega[h, i] ** 2)))
            for g in range(3):
                k = jnp.prod((1 - 2 * omega[h] * omega[g]) ** (-R / 2))
                w = omega[h, i] * omega[g, i]
                v = R + sigma**2 + R * w / (1 - 2 * w)
                fluctuation += mu[h, i] * mu[g, i] * k * v / length
        expected += sigma_q**2 + R * (1 - slope) ** 2 + fluctuation
    got = reduced_loss(
        omega, mu, block_sizes=SIZES, context_len=length, context_noise=sigma, query_noise=sigma_q
    )
    assert jnp.allclose(got, expected, rtol=1e-12)
    big = jnp.full((1, 3), 0.65)  # 2ω² = 0.845 < 1, K_hh ≈ 1e4: K/L is not small at L = 10
    for scale in (1.0, 1e2, 1e4):
        value = reduced_loss(big, scale * jnp.ones((1, 3)), block_sizes=SIZES, context_len=10)
        assert float(value) >= 0.0


def test_factorized_flow_velocity_is_two_abs_omega_times_gradient(getkey):
    omega = 0.3 * jr.normal(getkey(), (3, 3))
    mu = jr.normal(getkey(), (3, 3))
    objective = ReducedLoss(SIZES, L)
    state = balanced_factorization(omega, mu)
    assert jnp.allclose(state.spectral()[0], omega) and jnp.allclose(state.spectral()[1], mu)
    grads = jax.grad(lambda s: objective(s, key=jr.key(0)))(state)
    velocity = jtu_neg(grads)
    _, (d_omega, d_mu) = jax.jvp(lambda s: s.spectral(), (state,), (velocity,))
    grad_omega, grad_mu = jax.grad(
        lambda om, m: reduced_loss(om, m, block_sizes=SIZES, context_len=L), argnums=(0, 1)
    )(omega, mu)
    assert jnp.allclose(d_omega, -2 * jnp.abs(omega) * grad_omega, rtol=1e-10)
    assert jnp.allclose(d_mu, -2 * jnp.abs(mu) * grad_mu, rtol=1e-10)


def jtu_neg(tree):
    return jax.tree_util.tree_map(lambda x: -x, tree)


def test_factorized_flow_keeps_balance_and_signs(getkey):
    omega = 0.05 * jr.normal(getkey(), (3, 3))
    mu = 0.05 * jr.normal(getkey(), (3, 3))
    state, _ = ji.train(
        balanced_factorization(omega, mu),
        ReducedLoss(SIZES, L),
        ji.sgd(0.01),
        steps=2000,
        record=ji.Record(every=1000),
        key=jr.key(0),
    )
    assert jnp.allclose(state.q**2, state.k**2, atol=1e-3) and jnp.allclose(
        state.o**2, state.v**2, atol=1e-3
    )
    new_omega, new_mu = state.spectral()
    assert jnp.all(jnp.sign(new_omega) == jnp.sign(omega)) and jnp.all(
        jnp.sign(new_mu) == jnp.sign(mu)
    )


@pytest.mark.parametrize("make_state", [MergedSpectral, balanced_factorization])
def test_euler_integration_is_first_order(make_state, getkey):
    """Explicit Euler (SGD with step dt) over gradient-flow time 60, through warm-up and emergence,
    with dt = 0.01, 0.005, 0.0025. First order: halving dt halves the change (ratio within
    [1.6, 2.5]), and the dt = 0.005 curve is within 2% of the dt → 0 limit (Richardson estimate
    |ℓ_dt/2 − ℓ_dt/4| ≈ its own error, relative to the loss, at every shared time)."""
    scale = 1e-2 * (1 + 0.1 * jr.uniform(getkey(), (3, 3)))
    state = make_state(scale, scale)
    objective = ReducedLoss(SIZES, L)
    curves = []
    for dt in (0.01, 0.005, 0.0025):
        steps = round(60 / dt)
        _, traj = ji.train(
            state,
            objective,
            ji.sgd(dt),
            steps=steps,
            record=ji.Record(every=steps // 60),
            key=jr.key(0),
        )
        assert not bool(traj.diverged[-1])
        curves.append(traj.loss)
    change_coarse = jnp.max(jnp.abs(curves[0] - curves[1]))
    change_fine = jnp.max(jnp.abs(curves[1] - curves[2]))
    assert 1.6 < float(change_coarse / change_fine) < 2.5
    assert float(jnp.max(jnp.abs(curves[1] - curves[2]) / curves[2])) < 0.02
    assert float(curves[2][-1]) < 0.5 * float(curves[2][0])  # the run did leave the plateau


def test_bad_reduced_loss_config():
    with pytest.raises(ValueError, match="`block_sizes`"):
        ReducedLoss((5, 0), L)
    with pytest.raises(ValueError, match="`context_len`"):
        ReducedLoss(SIZES, 0)


def test_ensemble_of_reduced_states_trains_in_one_call(getkey):
    states = eqx.filter_vmap(
        lambda k: MergedSpectral(
            0.1 * jr.normal(k, (3, 3)), 0.1 * jr.normal(jr.fold_in(k, 1), (3, 3))
        )
    )(jr.split(getkey(), 64))
    final, traj = ji.train_ensemble(
        states,
        ReducedLoss(SIZES, L),
        optax.sgd(0.005),
        steps=2000,
        record=ji.Record(every=500),
        members=ji.Members(chunk=None),
        key=getkey(),
    )
    assert traj.loss.shape == (64, 4) and not bool(jnp.any(traj.diverged))
    assert bool(jnp.all(traj.loss[:, -1] < traj.loss[:, 0]))


@pytest.mark.parametrize("context_len", [100, 400])
def test_allocation_optima_equal_trained_reduced_optima(context_len):
    """Gradient flow of one head on 3 tasks and of one head on one task (r = 5) converges to the
    optima `optimal_allocation_losses` finds with μ in closed form and ω on a grid."""
    kwargs = dict(steps=60_000, record=ji.Record(every=30_000), key=jr.key(0))
    single, single_traj = ji.train(
        MergedSpectral(jnp.full((1, 3), 0.2), jnp.full((1, 3), 0.5)),
        ReducedLoss(SIZES, context_len),
        ji.sgd(0.002),
        **kwargs,
    )
    one, one_traj = ji.train(
        MergedSpectral(jnp.full((1, 1), 0.3), jnp.full((1, 1), 0.8)),
        ReducedLoss((R,), context_len),
        ji.sgd(0.002),
        **kwargs,
    )
    optimum = ji.optimal_allocation_losses(SIZES, context_len)
    assert optimum.single_head == pytest.approx(float(single_traj.loss[-1]), rel=1e-6)
    assert optimum.one_head_per_task == pytest.approx(N_TASKS * float(one_traj.loss[-1]), rel=1e-6)
    assert jnp.allclose(single.omega, optimum.single_head_omega, atol=1e-4)
    assert jnp.allclose(single.mu[0], jnp.asarray(optimum.single_head_mu), rtol=1e-4)
    assert jnp.allclose(one.omega, optimum.one_head_per_task_omega[0], atol=1e-4)
    assert float(one.mu[0, 0]) == pytest.approx(optimum.one_head_per_task_mu[0], rel=1e-4)


def test_allocation_optima_tend_to_their_large_context_limits():
    """ω*² → the smaller root of (r + 2)u² − (r + 4)u + 1 (one head per task) and of
    (d + 2)u² − (d + 4)u + 1 (one head, ω shared), with the gap shrinking as L grows; L ℓ* →
    the O(1/L) coefficient K V / ω² at that root. (The earlier formula's 1/√(r + 2) is not it.)"""

    def root(size):
        return ((size + 4) - ((size + 4) ** 2 - 4 * (size + 2)) ** 0.5) / (2 * (size + 2))

    def coefficient(u, size, total):  # K V / ω² per task at μ = 1/ω, K over `total` coordinates
        return (1 - 2 * u) ** (-total / 2) * size * (1 - u) / (1 - 2 * u) / u

    u_strict, u_single = root(R), root(D)
    gaps = []
    for length in (400, 1600, 6400, 25_600):
        optimum = ji.optimal_allocation_losses(SIZES, length)
        strict_gap = abs(optimum.one_head_per_task_omega[0] ** 2 - u_strict) / u_strict
        single_gap = abs(optimum.single_head_omega**2 - u_single) / u_single
        strict_limit = N_TASKS * coefficient(u_strict, R, R) / length
        single_limit = N_TASKS * coefficient(u_single, R, D) / length
        gaps.append(
            (
                strict_gap,
                single_gap,
                abs(optimum.one_head_per_task / strict_limit - 1),
                abs(optimum.single_head / single_limit - 1),
            )
        )
    for earlier, later in zip(gaps, gaps[1:]):
        assert all(b < a for a, b in zip(earlier, later)), gaps
    assert max(gaps[-1]) < 0.02, gaps
    assert abs(u_strict - 1 / (R + 2)) > 0.01  # the two differ by more than the grid


@pytest.mark.parametrize("factorized", [False, True])
def test_members_minor_layout_is_the_same_loss_and_gradient(factorized, getkey):
    """`ReducedLoss.evaluate_members` (members as the minor axis) against vmap of `evaluate`,
    float64, values and gradients, including a member past the expansion's range (NaN)."""
    objective = ji.ReducedLoss((3, 4, 5), 30, context_noise=0.4, query_noise=0.2)
    omega = 0.3 * jr.normal(getkey(), (6, 2, 3))
    mu = jr.normal(getkey(), (6, 2, 3))
    omega = omega.at[5, 0, 0].set(0.9)  # 2ω² > 1: NaN for member 5 only
    states = eqx.filter_vmap(
        ji.balanced_factorization if factorized else lambda o, m: ji.MergedSpectral(o, m)
    )(omega, mu)
    params, static = eqx.partition(states, eqx.is_inexact_array)

    def gradients(evaluate_members):
        def total(params):
            losses = evaluate_members(eqx.combine(params, static), None)
            return jnp.nansum(losses), losses

        return jax.grad(total, has_aux=True)(params)

    plain = lambda models, data: eqx.filter_vmap(lambda m: objective.evaluate(m, data))(models)  # noqa: E731
    fast_grads, fast = gradients(objective.evaluate_members)
    plain_grads, reference = gradients(plain)
    assert jnp.isnan(fast[5]) and jnp.isnan(reference[5])
    assert jnp.allclose(fast[:5], reference[:5], rtol=1e-13, atol=0)
    keep = lambda g: jax.tree_util.tree_map(lambda x: x[:5], g)  # noqa: E731
    assert jax.tree_util.tree_all(
        jax.tree_util.tree_map(
            lambda a, b: jnp.allclose(a, b, rtol=1e-11, atol=1e-14),
            keep(fast_grads),
            keep(plain_grads),
        )
    )
