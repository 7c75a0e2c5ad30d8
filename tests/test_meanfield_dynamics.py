"""Checks 3–6 and 8 of the mean-field specification: trajectories of small particle systems
(d = 4, k = 2, a teacher of 3 sigmoid neurons, a fixed sample of 400 inputs), in float64."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import jaxicl as ji
from jaxicl._meanfield._loss import moments


D, K = 4, 2


@pytest.fixture(scope="module")
def problem():
    key = jr.key(7)
    task = ji.feature_regression(d=D, k=K, teacher_neurons=3, key=jr.fold_in(key, 0))
    x = task.inputs(400, key=jr.fold_in(key, 1))
    return task, x, task.target_features(x)


def _ensemble(n_members, n_particles, key, padded_to=None, a_scale=0.5):
    keys = jr.split(key, n_members)
    return eqx.filter_vmap(
        lambda k: ji.init_feature_attention(
            n_particles=n_particles, k=K, d=D, a_scale=a_scale, padded_to=padded_to, key=k
        )
    )(keys)


def _run(problem, models, *, steps, record_every, lr=0.1, **kwargs):
    task, x, _ = problem
    solver = ji.particle_solver(task, learning_rate=lr, eval_inputs=x, inputs=x, **kwargs)
    states, traj = solver.run(
        solver.init(models), steps=steps, record_every=record_every, key=jr.key(0)
    )
    return states.model, traj.observables


@pytest.mark.slow  # 3000 steps of 16 members
def test_loss_decreases_monotonically_to_zero_across_seeds(problem):
    """Check 4: from generic inits, with a small step, L falls monotonically towards 0."""
    models, records = _run(problem, _ensemble(16, 64, jr.key(1)), steps=3000, record_every=30)
    loss = np.asarray(records["loss"])
    assert np.all(np.diff(loss, axis=1) <= 1e-12 * loss[:, :-1])
    assert np.all(loss[:, -1] < 5e-3 * loss[:, 0]), loss[:, -1] / loss[:, 0]


def test_learned_features_span_the_teacher_and_predict_in_context(problem):
    """Check 3: near L ≈ 0, h_µ ≈ A f° with A invertible, and the n = ∞ prediction on fresh
    tasks and queries equals vᵀ f°(x_q); so does the finite-n prediction for long prompts.
    The student starts in the teacher's basin (teacher neurons with rotated outputs and
    jittered inputs) so that it gets to L ≈ 0 in a test's time; check 4 covers generic inits."""
    task, x, f = problem
    teacher = task.teacher
    copies = jnp.arange(60) % teacher.n_particles
    rotation = jr.normal(jr.key(2), (K, K))
    start = ji.uniform_measure(
        teacher.a[copies] @ rotation.T,
        teacher.w[copies] + 0.1 * jr.normal(jr.key(3), (60, D)),
        teacher.activation,
    )
    models = jax.tree.map(lambda a: a[None], ji.FeatureAttention(particles=start, W=jnp.eye(K)))
    models, records = _run(problem, models, steps=2000, record_every=200)
    model = jax.tree.map(lambda a: a[0], models)
    scale = 0.5 * float(jnp.mean(jnp.sum(f**2, axis=1)))
    assert float(records["loss"][0, 0]) > 5e-5 * scale  # the jitter put it off the teacher
    assert float(records["loss"][0, -1]) < 1e-5 * scale
    h, sigma, cross = moments(model.particles, x, f)
    a_fit, *_ = jnp.linalg.lstsq(f, h)  # h ≈ f A_fitᵀ ... A = a_fitᵀ
    residual = jnp.linalg.norm(h - f @ a_fit) / jnp.linalg.norm(h - h.mean(axis=0, keepdims=True))
    assert residual < 0.02, residual
    singular = jnp.linalg.svd(a_fit, compute_uv=False)
    assert singular[-1] > 0.05 * singular[0]  # A is well inside the invertible matrices
    fresh = task.inputs(2000, key=jr.key(3))
    v = jr.normal(jr.key(4), (2000, K))
    predicted = jax.vmap(lambda vi, xi: model.population_prediction(vi, cross, xi))(v, fresh)
    target = jnp.sum(v * task.target_features(fresh), axis=1)
    relative = jnp.sqrt(jnp.mean((predicted - target) ** 2) / jnp.mean(target**2))
    assert relative < 0.05, relative
    long_prompts = ji.FeatureRegression(
        teacher=task.teacher, context_len=20_000, noise=0.0, input_law="gaussian"
    )
    prompts = ji.sample_prompts(long_prompts, 64, key=jr.key(5))
    finite = jax.vmap(model)(prompts)[:, 0]
    relative = jnp.sqrt(jnp.mean((finite - prompts.query_y[:, 0]) ** 2) / jnp.mean(target**2))
    assert relative < 0.1, relative


def test_symmetric_init_plateaus_and_perturbations_escape(problem):
    """Check 5: all particles at one point stay together under the noiseless flow, and the
    loss plateaus above 0; isotropic perturbations break the symmetry and the loss falls."""
    symmetric = ji.symmetric_measure(n_particles=32, k=K, d=D, key=jr.key(5))
    model = ji.FeatureAttention(particles=symmetric, W=jnp.eye(K))
    models = jax.tree.map(lambda a: a[None], model)
    final, still = _run(problem, models, steps=2000, record_every=100)
    w = final.particles.w[0]
    assert jnp.all(w == w[:1]) and jnp.all(final.particles.a[0] == final.particles.a[0, :1])
    loss = np.asarray(still["loss"][0])
    plateau = loss[-1]
    assert abs(loss[-5] - plateau) < 1e-3 * plateau  # flat over the last fifth
    _, moved = _run(
        problem,
        models,
        steps=2000,
        record_every=100,
        perturbation=ji.IsotropicNoise(),
        perturbation_size=1e-3,
        perturb_every=10,
    )
    assert float(moved["w_spread"][0, -1]) > 1e-3
    assert float(moved["loss"][0, -1]) < 0.5 * plateau


@pytest.mark.slow  # a trend over learning-rate ratios
def test_joint_attention_tracks_static_as_the_ratio_grows(problem):
    """Check 6: the gap between jointly trained W and W at its optimum shrinks with the ratio.
    (W's flow relaxes at rates ratio · λ(Σµ°Σ°µ) λ(Σµµ), ∝ a_scale⁴: larger features make
    moderate ratios effective.)"""
    task, x, f = problem
    models = _ensemble(4, 64, jr.key(6), a_scale=2.5)
    models = eqx.filter_vmap(
        lambda m: eqx.tree_at(lambda q: q.W, m, ji.optimal_attention(m.particles, x, f))
    )(models)
    _, static = _run(problem, models, steps=600, record_every=20)
    gaps = []
    for ratio in (1.0, 10.0, 100.0, 1000.0):
        _, joint = _run(
            problem,
            models,
            steps=600,
            record_every=20,
            attention=ji.JointAttention(),
            attention_ratio=ratio,
        )
        # time-averaged gap per member, averaged over members
        gaps.append(float(jnp.mean(jnp.abs(joint["transformer_loss"] - static["loss"]))))
    assert gaps[0] > gaps[1] > gaps[2] > gaps[3], gaps
    assert gaps[3] < 0.1 * gaps[0], gaps


@pytest.mark.slow  # a trend over particle counts
def test_mean_field_limit_as_particles_grow(problem):
    """Check 8: same initial law, M = 16 … 256 (zero-mass padding: one call per seed batch);
    the sup-distance of L(t) to the M = 1024 mean falls like M^(-1/2) or faster."""
    sizes = (16, 32, 64, 128, 256)
    n_seeds = 6
    ref_models = _ensemble(n_seeds, 1024, jr.key(8))
    _, ref = _run(problem, ref_models, steps=300, record_every=10)
    reference = np.asarray(ref["loss"]).mean(axis=0)
    models = [_ensemble(n_seeds, m, jr.fold_in(jr.key(9), m), padded_to=max(sizes)) for m in sizes]
    stacked = jax.tree.map(lambda *xs: jnp.concatenate(xs), *models)
    _, records = _run(problem, stacked, steps=300, record_every=10)
    loss = np.asarray(records["loss"]).reshape(len(sizes), n_seeds, -1)
    distance = np.abs(loss - reference).max(axis=2).mean(axis=1)
    slope = np.polyfit(np.log(sizes), np.log(distance), 1)[0]
    assert slope < -0.4, (slope, distance)
