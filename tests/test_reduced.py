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


@pytest.mark.parametrize(
    "omega, mu",
    [
        (0.38 * jnp.eye(3), 0.8 * jnp.eye(3)),  # clean allocation near the optimum
        (
            jnp.array([[0.3, 0.1, 0.0], [0.0, 0.35, 0.05], [0.1, 0.0, 0.25]]),
            jnp.array([[0.9, 0.2, 0.0], [0.1, 0.8, 0.1], [0.0, 0.1, 1.0]]),
        ),
    ],
)
def test_reduced_loss_matches_monte_carlo_of_full_model(omega, mu, getkey):
    """Moment form vs the full softmax model under the ansatz, r = 5, L = 100: within 4 standard
    errors plus a 5% approximation gap (the large-L expansion; measured 1–3% here)."""
    task = ji.MultiTaskRegression(D, L, BLOCKS)
    model = decomposable_attention(omega, mu, BLOCKS, D)
    estimate, stderr = ji.monte_carlo_loss(model, task, 100_000, key=getkey())
    summed, summed_err = N_TASKS * estimate, N_TASKS * stderr  # ℓ sums over tasks
    predicted = reduced_loss(omega, mu, block_sizes=SIZES, context_len=L)
    assert abs(float(summed - predicted)) <= 4 * float(summed_err) + 0.05 * float(predicted)


def test_paired_heads_at_zero_omega_predict_zero_and_lose_the_target_energy(getkey):
    mu = jnp.array([[0.7, 0.2, 0.4], [-0.7, -0.2, -0.4]])
    omega = jnp.zeros_like(mu)
    sigma_q = 0.3
    expected = N_TASKS * sigma_q**2 + sum(SIZES)  # E‖y_q‖²
    loss = reduced_loss(omega, mu, block_sizes=SIZES, context_len=L, query_noise=sigma_q)
    assert jnp.allclose(loss, expected, rtol=1e-12)
    prompt = ji.MultiTaskRegression(D, L, BLOCKS).sample(key=getkey())
    assert float(jnp.abs(decomposable_attention(omega, mu, BLOCKS, D)(prompt)).max()) < 1e-12


def test_gradients_equal_reference_formulas_exp_form(getkey):
    omega = 0.3 * jr.normal(getkey(), (4, 3))
    mu = jr.normal(getkey(), (4, 3))
    sigma = 0.4
    c = (R + sigma**2) / L

    def loss(om, m):
        return reduced_loss(
            om, m, block_sizes=SIZES, context_len=L, context_noise=sigma, kernel="exp"
        )

    grad_omega, grad_mu = jax.grad(loss, argnums=(0, 1))(omega, mu)
    K = jnp.exp(R * omega @ omega.T)
    s = jnp.sum(mu * omega, axis=0)
    expect_mu = -2 * R * (1 - s)[None, :] * omega + 2 * c * K @ mu
    expect_omega = -2 * R * (1 - s)[None, :] * mu + 2 * c * R * ((mu @ mu.T) * K) @ omega
    assert jnp.allclose(grad_mu, expect_mu, rtol=1e-10)
    assert jnp.allclose(grad_omega, expect_omega, rtol=1e-10)


@pytest.mark.parametrize("kernel", ["moment", "exp"])
def test_gradient_matches_finite_differences(kernel, getkey):
    omega, mu = 0.2 * jr.normal(getkey(), (3, 3)), jr.normal(getkey(), (3, 3))
    direction = jr.normal(getkey(), (2, 3, 3))

    def along(t):
        return reduced_loss(
            omega + t * direction[0],
            mu + t * direction[1],
            block_sizes=SIZES,
            context_len=L,
            context_noise=0.2,
            kernel=kernel,
        )

    h = 1e-6
    fd = (along(h) - along(-h)) / (2 * h)
    assert jnp.allclose(jax.grad(along)(0.0), fd, rtol=1e-7)


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
        record_every=1000,
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
            state, objective, ji.sgd(dt), steps=steps, record_every=steps // 60, key=jr.key(0)
        )
        assert not bool(traj.diverged[-1])
        curves.append(traj.loss)
    change_coarse = jnp.max(jnp.abs(curves[0] - curves[1]))
    change_fine = jnp.max(jnp.abs(curves[1] - curves[2]))
    assert 1.6 < float(change_coarse / change_fine) < 2.5
    assert float(jnp.max(jnp.abs(curves[1] - curves[2]) / curves[2])) < 0.02
    assert float(curves[2][-1]) < 0.5 * float(curves[2][0])  # the run did leave the plateau


def test_bad_reduced_loss_config():
    with pytest.raises(ValueError, match="`kernel`"):
        ReducedLoss(SIZES, L, kernel="gauss")
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
        record_every=500,
        member_chunk=None,
        key=getkey(),
    )
    assert traj.loss.shape == (64, 4) and not bool(jnp.any(traj.diverged))
    assert bool(jnp.all(traj.loss[:, -1] < traj.loss[:, 0]))


@pytest.mark.parametrize("context_len, reference_ratio", [(100, 2.15), (400, 2.51)])
def test_single_vs_multi_head_separation_matches_reference(context_len, reference_ratio):
    """n = 3 tasks of r = 5: optimum of one head for all tasks vs one head per task (strict
    allocation, which decouples into n one-task problems). Reference (moment form): ratio 2.15 at
    L = 100 and 2.51 at L = 400; optimal ω = 1/√(d_x + 2) for the single head, 1/√(r + 2) per
    task. Measured: 2.169 and 2.513, ω within 1e-9 of both optima (checked to 1e-6)."""
    kwargs = dict(steps=60_000, record_every=30_000, key=jr.key(0))
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
    ratio = float(single_traj.loss[-1]) / (N_TASKS * float(one_traj.loss[-1]))
    assert abs(ratio - reference_ratio) < 0.03
    assert jnp.allclose(single.omega, 1 / jnp.sqrt(D + 2.0), atol=1e-6)
    assert jnp.allclose(one.omega, 1 / jnp.sqrt(R + 2.0), atol=1e-6)
    # The closed-form-in-μ grid solution agrees with the trained optima.
    single_opt, strict_opt = ji.optimal_allocation_losses(SIZES, context_len)
    assert single_opt == pytest.approx(float(single_traj.loss[-1]), rel=1e-6)
    assert strict_opt == pytest.approx(N_TASKS * float(one_traj.loss[-1]), rel=1e-6)


class DiagonalMetricSpectral(ji.AbstractSpectral):
    """ω = a/√r, so descent on a gives dω/dt = −(1/r) ∂ℓ/∂ω: in the full model each ω is the
    common value of r diagonal entries of W, which is the metric plain descent on W applies."""

    a: jax.Array
    mu: jax.Array

    def spectral(self):
        return self.a / jnp.sqrt(float(R)), self.mu


def test_full_model_from_decomposable_init_stays_decomposable_and_follows_reduced_flow():
    """Full softmax model (d = 15, 3 tasks, L = 100, H = 3) by SGD on 2048 fresh prompts a step
    vs the reduced flow in the same metric, over gradient-flow time 3 (through emergence), in
    float32. Measured: off-ansatz mass 2.3% of W and 0.47% of U; Ω and M within
    11.4% and 7.3% of their largest entry at every record. Asserted: 5% and
    15%. The ICL loss averages the n outputs, so the full model's step is n·dt."""
    f32 = jnp.float32  # float32 halves the cost; the tolerances are far above its precision
    omega0 = 0.1 * (1 + 0.1 * jr.uniform(jr.key(1), (3, N_TASKS), f32))
    mu0 = 0.3 * (1 + 0.1 * jr.uniform(jr.key(2), (3, N_TASKS), f32))
    dt, steps, every = 0.003, 1000, 200
    schedule = dict(steps=steps, record_every=every)
    _, reduced = ji.train(
        DiagonalMetricSpectral(omega0 * R**0.5, mu0),
        ReducedLoss(SIZES, L),
        ji.sgd(dt),
        observe=lambda s: s.spectral(),
        key=jr.key(0),
        **schedule,
    )
    task = ji.MultiTaskRegression(D, L, BLOCKS, dtype=f32)
    full, traj = ji.train(
        decomposable_attention(omega0, mu0, BLOCKS, D),
        ji.ICLLoss(task, 2048),
        ji.sgd(N_TASKS * dt),
        observe=lambda m: ji.semi_singular_values(m, BLOCKS),
        key=jr.key(3),
        **schedule,
    )
    on_ansatz = decomposable_attention(*ji.semi_singular_values(full, BLOCKS), BLOCKS, D)
    off_w = float(jnp.linalg.norm(full.W - on_ansatz.W) / jnp.linalg.norm(full.W))
    off_u = float(jnp.linalg.norm(full.U - on_ansatz.U) / jnp.linalg.norm(full.U))
    errors = [
        float(jnp.abs(got - want).max()) / float(jnp.abs(want).max())
        for got, want in zip(traj.observables, reduced.observables)
    ]
    print(
        f"off-ansatz W {off_w:.4f}, U {off_u:.4f}; deviation Ω {errors[0]:.3f}, M {errors[1]:.3f}"
    )
    assert off_w < 0.05 and off_u < 0.05
    assert max(errors) < 0.15
    assert float(reduced.loss[-1]) < 0.5 * float(reduced.loss[0])  # it did move
