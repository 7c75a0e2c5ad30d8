"""The particle solver's pieces: padding (a sweep of M in one call), moves, records."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from jaxtyping import TypeCheckError

import jaxicl as ji


D, K = 4, 2


@pytest.fixture
def problem(getkey):
    task = ji.feature_regression(d=D, k=K, teacher_neurons=3, key=getkey())
    x = task.inputs(300, key=getkey())
    return task, x, task.target_features(x)


def _solver(task, x, **kwargs):
    kwargs.setdefault("learning_rate", 0.1)
    return ji.particle_solver(task, eval_inputs=x, inputs=x, **kwargs)


def test_padded_measures_train_like_unpadded_ones(problem, getkey):
    """Zero-mass padding changes nothing, so measures of different M share one vmapped call."""
    task, x, _ = problem
    key = getkey()
    sizes = (10, 25, 40)
    alone = [ji.init_feature_attention(n_particles=m, k=K, d=D, key=key) for m in sizes]
    padded = [
        ji.init_feature_attention(n_particles=m, k=K, d=D, padded_to=40, key=key) for m in sizes
    ]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *padded)
    solver = _solver(task, x, perturbation=ji.IsotropicNoise(), perturbation_size=1e-3)
    states, traj = solver.run(solver.init(stacked), steps=30, record_every=10, key=key)
    for i, model in enumerate(alone):
        one = jax.tree.map(lambda a: a[None], model)
        start = ji.init_ensemble_state(one, solver.optimizer, first_member=i)
        state, expected = solver.run(start, steps=30, record_every=10, key=key)
        m = sizes[i]
        np.testing.assert_allclose(
            traj.observables["loss"][i], expected.observables["loss"][0], rtol=1e-10
        )
        np.testing.assert_allclose(
            states.model.particles.w[i, :m], state.model.particles.w[0], rtol=1e-10
        )
        # padding particles never moved
        np.testing.assert_array_equal(states.model.particles.w[i, m:], stacked.particles.w[i, m:])


def test_isotropic_perturbation_statistics(problem, getkey):
    task, x, f = problem
    model = ji.init_feature_attention(n_particles=2000, k=K, d=D, padded_to=2100, key=getkey())
    move = ji.IsotropicPerturbation(0.3, every=2)
    moved = move(model, (x, f), jnp.asarray(4), getkey())
    da = moved.particles.a - model.particles.a
    dw = moved.particles.w - model.particles.w
    live = np.concatenate([np.asarray(da[:2000]).ravel(), np.asarray(dw[:2000]).ravel()])
    # sample std of 12000 normals: relative s.e. 1/√(2n) ≈ 0.0065
    assert abs(live.std() / 0.3 - 1) < 4 * 0.0065
    assert abs(live.mean()) < 4 * 0.3 / np.sqrt(live.size)
    assert jnp.all(da[2000:] == 0) and jnp.all(dw[2000:] == 0)
    skipped = move(model, (x, f), jnp.asarray(5), getkey())
    assert jnp.all(skipped.particles.w == model.particles.w)


def test_hessian_perturbation_matches_explicit_hessian(problem, getkey):
    """ξ_i = (1/m_i) Σ_j ∂²L/∂θ_i∂θ_j z_j/√m_j, rescaled to the isotropic size; here against
    the full Hessian matrix of a small system."""
    task, x, f = problem
    n = 6
    model = ji.init_feature_attention(n_particles=n, k=K, d=D, key=getkey())
    model = eqx.tree_at(lambda m: m.particles.mass, model, jr.dirichlet(getkey(), jnp.ones(n)))
    p = model.particles
    key = getkey()
    moved = eqx.filter_jit(ji.HessianPerturbation(0.05))(model, (x, f), jnp.asarray(0), key)

    def flat_loss(theta):
        a, w = theta[:, :K], theta[:, K:]
        return ji.two_timescale_loss(eqx.tree_at(lambda q: (q.a, q.w), p, (a, w)), x, f)

    theta = jnp.concatenate([p.a, p.w], axis=1)
    hessian = jax.hessian(flat_loss)(theta).reshape(n * (K + D), n * (K + D))
    z = jnp.stack(
        [
            jnp.concatenate([jr.normal(ka, (K,)), jr.normal(kw, (D,))])
            for ka, kw in (jr.split(jr.fold_in(key, j)) for j in range(n))
        ]
    )
    u = z / jnp.sqrt(p.mass)[:, None]
    xi = (hessian @ u.ravel()).reshape(n, K + D) / p.mass[:, None]
    xi = 0.05 * xi * jnp.sqrt(n * (K + D) / jnp.sum(xi**2))
    step = jnp.concatenate([moved.particles.a - p.a, moved.particles.w - p.w], axis=1)
    np.testing.assert_allclose(step, xi, rtol=1e-7, atol=1e-12)


def test_birth_death_copies_particles_and_lowers_the_loss(problem, getkey):
    task, x, f = problem
    model = ji.init_feature_attention(n_particles=60, k=K, d=D, padded_to=64, key=getkey())
    p = model.particles
    move = eqx.filter_jit(ji.BirthDeath(rate=20.0, dt=0.5))
    before = float(ji.two_timescale_loss(p, x, f))
    old = {tuple(np.round(np.asarray(row), 12)) for row in np.asarray(p.w[:60])}
    changes = []
    for _ in range(200):
        moved = move(model, (x, f), jnp.asarray(0), getkey()).particles
        assert {tuple(np.round(np.asarray(r), 12)) for r in np.asarray(moved.w[:60])} <= old
        np.testing.assert_array_equal(moved.w[60:], p.w[60:])
        changes.append(float(ji.two_timescale_loss(moved, x, f)) - before)
    changes = np.asarray(changes)
    # killing above-average and duplicating below-average particles lowers L on average
    assert changes.mean() + 4 * changes.std() / np.sqrt(changes.size) < 0
    tiny = ji.BirthDeath(rate=1e-12, dt=1e-12)(model, (x, f), jnp.asarray(0), getkey())
    np.testing.assert_array_equal(tiny.particles.w, p.w)


def test_static_mode_keeps_attention_at_its_optimum(problem, getkey):
    task, x, f = problem
    models = jax.tree.map(
        lambda a: a[None], ji.init_feature_attention(n_particles=20, k=K, d=D, key=getkey())
    )
    solver = _solver(task, x)
    states, traj = solver.run(solver.init(models), steps=20, record_every=5, key=getkey())
    model = jax.tree.map(lambda a: a[0], states.model)
    np.testing.assert_allclose(model.W, ji.optimal_attention(model.particles, x, f), rtol=1e-8)
    records = traj.observables
    np.testing.assert_allclose(
        records["transformer_loss"][0, 1:], records["loss"][0, 1:], rtol=1e-6
    )
    np.testing.assert_allclose(traj.time[0], 0.1 * np.arange(0, 20, 5), rtol=1e-12)


def test_perturbation_noise_is_independent_across_members(problem, getkey):
    """Members share data but not noise; a member's noise does not depend on the ensemble."""
    task, x, _ = problem
    model = ji.symmetric_measure(n_particles=10, k=K, d=D, key=getkey())
    model = ji.FeatureAttention(particles=model, W=jnp.eye(K))
    models = jax.tree.map(lambda a: jnp.stack([a, a, a]), model)
    solver = _solver(task, x, perturbation=ji.IsotropicNoise(), perturbation_size=1e-2)
    key = getkey()
    states, _ = solver.run(solver.init(models), steps=5, record_every=5, key=key)
    w = states.model.particles.w
    assert not jnp.allclose(w[0], w[1])
    pair, _ = solver.run(
        ji.init_ensemble_state(jax.tree.map(lambda a: a[:2], models), solver.optimizer),
        steps=5,
        record_every=5,
        key=key,
    )
    np.testing.assert_allclose(pair.model.particles.w, w[:2], rtol=1e-12)


def test_bad_solver_configuration_is_refused(problem):
    task, x, _ = problem
    # a name where a Module belongs (the suite's type checker refuses it first, naming the
    # parameter; without it, the solver's own check does)
    with pytest.raises((ValueError, TypeCheckError), match="perturbation"):
        _solver(task, x, perturbation="gaussian")
    with pytest.raises((ValueError, TypeCheckError), match="attention"):
        _solver(task, x, attention=ji.IsotropicNoise())
    with pytest.raises(ValueError, match="learning_rate"):
        _solver(task, x, learning_rate=-1.0)
    with pytest.raises(ValueError, match="inputs"):
        ji.MeanFieldLoss(task, inputs=x, batch_size=10)
    with pytest.raises(ValueError, match="activation"):
        ji.init_feature_attention(n_particles=3, k=K, d=D, activation="gelu", key=jr.key(0))
    with pytest.raises(ValueError, match="coupled"):
        ji.init_feature_attention(n_particles=3, k=8, d=D, key=jr.key(0))
