"""Checks 1–3 and 7 of the mean-field specification, in float64, against closed forms, finite
differences and independent computations."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import jaxicl as ji
from jaxicl._meanfield._loss import moments


D, K, M = 6, 3, 40


def _task(getkey, noise=0.0, context_len=8):
    return ji.feature_regression(
        d=D, k=K, teacher_neurons=4, context_len=context_len, noise=noise, key=getkey()
    )


def _setup(getkey, activation="sigmoid", n_inputs=3000):
    task = ji.feature_regression(
        d=D, k=K, teacher_neurons=4, activation=activation, context_len=8, key=getkey()
    )
    x = task.inputs(n_inputs, key=getkey())
    model = ji.init_feature_attention(n_particles=M, k=K, d=D, activation=activation, key=getkey())
    return task, x, task.target_features(x), model


def _with_w(model, w):
    return eqx.tree_at(lambda m: m.W, model, w)


def test_closed_form_attention_is_the_minimum(getkey):
    _, x, f, model = _setup(getkey)
    w_opt = ji.optimal_attention(model.particles, x, f, jitter=0.0)
    reduced = ji.two_timescale_loss(model.particles, x, f, jitter=0.0)
    at_optimum = ji.transformer_loss(_with_w(model, w_opt), x, f)
    np.testing.assert_allclose(at_optimum, reduced, rtol=1e-10)
    # the closed form agrees with ½ tr Σ°° − ½ tr(Σ°µ Σµµ⁻¹ Σµ°) (§3)
    _, sigma, cross = moments(model.particles, x, f)
    closed = 0.5 * jnp.trace(f.T @ f / x.shape[0]) - 0.5 * jnp.trace(
        cross @ jnp.linalg.solve(sigma, cross.T)
    )
    np.testing.assert_allclose(reduced, closed, rtol=1e-8)
    for _ in range(20):
        w = w_opt + 0.1 * jnp.linalg.norm(w_opt) * jr.normal(getkey(), (K, K))
        assert ji.transformer_loss(_with_w(model, w), x, f) > reduced


def test_attention_gradient_and_linear_rate(getkey):
    _, x, f, model = _setup(getkey)
    _, sigma, cross = moments(model.particles, x, f)
    precision = cross.T @ cross  # Σµ° Σ°µ
    w_opt = ji.optimal_attention(model.particles, x, f, jitter=0.0)
    rate = jnp.linalg.eigvalsh(precision)[0] * jnp.linalg.eigvalsh(sigma)[0]
    lam_max = jnp.linalg.eigvalsh(precision)[-1] * jnp.linalg.eigvalsh(sigma)[-1]
    step = 1.0 / float(lam_max)

    def grad_w(w):
        return jax.grad(lambda q: ji.transformer_loss(q, x, f))(_with_w(model, w)).W

    w = jnp.eye(K)
    np.testing.assert_allclose(grad_w(w), precision @ (w @ sigma - jnp.eye(K)), rtol=1e-9)
    # The flow's operator X ↦ Σµ°Σ°µ X Σµµ is symmetric in the Frobenius inner product: its
    # slowest mode p sᵀ (bottom eigenvectors) decays exactly at `rate`, every other start faster.
    p_min = jnp.linalg.eigh(precision)[1][:, 0]
    s_min = jnp.linalg.eigh(sigma)[1][:, 0]
    starts = [w_opt + jnp.outer(p_min, s_min)] + [
        w_opt + jr.normal(getkey(), (K, K)) for _ in range(3)
    ]
    for i, w in enumerate(starts):
        initial = float(jnp.linalg.norm(w - w_opt))
        for t in range(1, 51):
            w = w - step * grad_w(w)
            bound = (1 - step * rate) ** t * initial
            distance = float(jnp.linalg.norm(w - w_opt))
            if i == 0:
                np.testing.assert_allclose(distance, bound, rtol=1e-6)
            else:
                assert distance <= bound * (1 + 1e-9)


def _velocities(particles, x, f):
    """§4 particle velocities, written out independently: with B = Σ°µ Σµµ⁻¹, ζ = f° − B h,
    v_a = E[Bᵀ ζ σ(wᵀx)] and v_w = E[(ζᵀ B a) σ'(wᵀx) x]."""
    h = np.stack([np.asarray(particles.features(xi)) for xi in x])
    x, f = np.asarray(x), np.asarray(f)
    n = x.shape[0]
    b = (f.T @ h / n) @ np.linalg.inv(h.T @ h / n)
    zeta = f - h @ b.T
    z = x @ np.asarray(particles.w).T
    s = 1 / (1 + np.exp(-z))
    ds = s * (1 - s)
    v_a = s.T @ (zeta @ b) / n
    along = (zeta @ b) @ np.asarray(particles.a).T  # ζ_nᵀ B a_j
    v_w = (along * ds).T @ x / n
    return v_a, v_w


def test_particle_velocity_is_mass_scaled_gradient(getkey):
    _, x, f, model = _setup(getkey, n_inputs=400)
    p = model.particles
    grads = jax.grad(lambda q: ji.two_timescale_loss(q, x, f, jitter=0.0))(p)
    v_a, v_w = _velocities(p, x, f)
    np.testing.assert_allclose(-M * grads.a, v_a, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(-M * grads.w, v_w, rtol=1e-7, atol=1e-12)
    # unequal masses: the velocity field is the same function of θ; gradients scale with m_j
    mass = jr.dirichlet(getkey(), jnp.ones(M))
    weighted = eqx.tree_at(lambda q: q.mass, p, mass)
    grads = jax.grad(lambda q: ji.two_timescale_loss(q, x, f, jitter=0.0))(weighted)
    v_a, v_w = _velocities(weighted, x, f)
    np.testing.assert_allclose(-grads.a / mass[:, None], v_a, rtol=1e-7, atol=1e-12)
    # and one Euler step of the solver's optimizer moves each particle by η × velocity
    eta = 0.05
    optimizer = ji.particle_flow(eta)
    model = eqx.tree_at(lambda m: m.particles, model, weighted)
    params = eqx.filter(model, eqx.is_inexact_array)
    grads = jax.grad(lambda q: ji.two_timescale_loss(q.particles, x, f, jitter=0.0))(model)
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    np.testing.assert_allclose(updates.particles.a, eta * v_a, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(updates.particles.w, eta * v_w, rtol=1e-7, atol=1e-12)
    assert jnp.all(updates.particles.mass == 0) and jnp.all(updates.W == 0)


def test_envelope_identity(getkey):
    _, x, f, model = _setup(getkey)
    model = _with_w(model, ji.optimal_attention(model.particles, x, f, jitter=0.0))
    full = jax.grad(lambda q: ji.transformer_loss(q, x, f))(model)
    reduced = jax.grad(lambda q: ji.two_timescale_loss(q, x, f, jitter=0.0))(model.particles)
    np.testing.assert_allclose(full.particles.a, reduced.a, rtol=1e-8, atol=1e-14)
    np.testing.assert_allclose(full.particles.w, reduced.w, rtol=1e-8, atol=1e-14)
    assert jnp.max(jnp.abs(full.W)) < 1e-10 * jnp.max(jnp.abs(reduced.w))


def test_first_variation_is_centred_and_a_mixture_derivative(getkey):
    _, x, f, model = _setup(getkey)
    p = model.particles
    potential = ji.first_variation(p, x, f, jitter=0.0)
    assert abs(float(p.mass @ potential)) < 1e-10 * float(jnp.mean(jnp.abs(potential)))
    # d/dε L((1−ε)µ + ε δ_θ) at 0 = δL/δµ(θ) − ∫ δL/δµ dµ = δL/δµ(θ), for new and old θ
    new = ji.init_feature_attention(n_particles=3, k=K, d=D, key=getkey()).particles
    probes = [(new.a[i], new.w[i]) for i in range(3)] + [(p.a[0], p.w[0])]
    for a, w in probes:
        extended = ji.NeuronMeasure(
            a=jnp.concatenate([p.a, a[None]]),
            w=jnp.concatenate([p.w, w[None]]),
            mass=jnp.concatenate([p.mass, jnp.zeros(1)]),
            activation=p.activation,
        )

        def mixture_loss(eps):
            mass = jnp.concatenate([(1 - eps) * p.mass, eps[None]])
            return ji.two_timescale_loss(eqx.tree_at(lambda q: q.mass, extended, mass), x, f, 0.0)

        eps = 1e-5
        derivative = (mixture_loss(jnp.asarray(eps)) - mixture_loss(jnp.asarray(-eps))) / (2 * eps)
        expected = ji.first_variation(extended, x, f, jitter=0.0)[-1]
        np.testing.assert_allclose(derivative, expected, rtol=1e-6)


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
def test_invariance_and_teacher_zero_loss(getkey, activation):
    task, x, f, model = _setup(getkey, activation=activation)
    p = model.particles
    r = jr.normal(getkey(), (K, K))
    rotated = eqx.tree_at(lambda q: q.a, p, p.a @ r.T)
    np.testing.assert_allclose(
        ji.two_timescale_loss(rotated, x, f, 0.0), ji.two_timescale_loss(p, x, f, 0.0), rtol=1e-8
    )
    scale = 0.5 * jnp.mean(jnp.sum(f**2, axis=1))
    teacher = task.teacher
    assert ji.two_timescale_loss(teacher, x, f, 0.0) < 1e-20 * scale
    moved = eqx.tree_at(lambda q: q.a, teacher, teacher.a @ r.T)
    assert ji.two_timescale_loss(moved, x, f, 0.0) < 1e-18 * scale
    assert ji.two_timescale_loss(p, x, f, 0.0) > 1e-4 * scale


@pytest.mark.slow  # a trend over context lengths
def test_finite_context_loss_approaches_population_loss(getkey):
    """L^n = L_TF + ½σ² + (1/2n) tr(W Σµµ Wᵀ C), C = E[(‖f°‖² + σ²) h hᵀ] − Σµ° Σ°µ (derived
    from the covariance of the context average (1/n) Σ y_i h(x_i) given v); Monte Carlo agrees
    within 4 s.e. and the gap falls like 1/n."""
    noise = 0.3
    task = _task(getkey, noise=noise)
    model = ji.init_feature_attention(n_particles=M, k=K, d=D, a_scale=3.0, key=getkey())
    x = task.inputs(400_000, key=getkey())
    f = task.target_features(x)
    model = _with_w(model, ji.optimal_attention(model.particles, x, f))
    h, sigma, cross = moments(model.particles, x, f)
    weight = jnp.sum(f**2, axis=1) + noise**2
    c = (h * weight[:, None]).T @ h / x.shape[0] - cross.T @ cross
    population = ji.transformer_loss(model, x, f) + 0.5 * noise**2
    slope = 0.5 * jnp.trace(model.W @ sigma @ model.W.T @ c)
    gaps = []
    for n in (4, 16, 64):
        task_n = ji.FeatureRegression(
            teacher=task.teacher, context_len=n, noise=noise, input_law="gaussian"
        )
        loss = ji.FeatureICLLoss(task_n, batch_size=1)
        errors = jax.vmap(lambda k: loss(model, key=k))(jr.split(getkey(), 100_000))
        mean, stderr = errors.mean(), errors.std() / jnp.sqrt(errors.size)
        predicted = population + slope / n
        assert abs(mean - predicted) < 4 * stderr, (n, mean, predicted, stderr)
        gaps.append(float(mean - population))
    fitted = np.polyfit(np.log([4, 16, 64]), np.log(gaps), 1)[0]
    assert -1.15 < fitted < -0.85


def test_attention_flow_step_is_the_exact_linear_flow(getkey):
    """`AttentionFlow` moves W along dW/dt = −r P (W Σ − I) exactly: against the matrix
    exponential of the vectorized linear ODE, and r → ∞ gives W_µ."""
    _, x, f, model = _setup(getkey, n_inputs=500)
    _, sigma, cross = moments(model.particles, x, f)
    precision = cross.T @ cross
    ratio, dt = 3.0, 0.7
    moved = ji.AttentionFlow(ratio, dt)(model, (x, f), jnp.asarray(0), getkey())
    # vec(W) (column-major): vec(P W Σ) = (Σ ⊗ P) vec(W); the ODE is affine, so augment it
    generator = jnp.zeros((K * K + 1, K * K + 1))
    generator = generator.at[: K * K, : K * K].set(-ratio * jnp.kron(sigma, precision))
    generator = generator.at[: K * K, -1].set(ratio * precision.T.ravel())
    start = jnp.concatenate([model.W.T.ravel(), jnp.ones(1)])
    expected = (jax.scipy.linalg.expm(dt * generator) @ start)[: K * K].reshape(K, K).T
    np.testing.assert_allclose(moved.W, expected, rtol=1e-8, atol=1e-10)
    fast = ji.AttentionFlow(1e12, dt)(model, (x, f), jnp.asarray(0), getkey())
    np.testing.assert_allclose(fast.W, ji.optimal_attention(model.particles, x, f, 0.0), rtol=1e-6)
