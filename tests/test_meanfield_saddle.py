"""The geometry near critical points (`_meanfield/_saddle.py`) against automatic Hessians and
finite differences in float64, the split-atoms init, and the saddle and mean-field statistics
of `feature-learning` on data whose answer is known."""

import math

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from jaxicl._experiments._feature_learning import FeatureLearningConfig
from jaxicl._experiments._feature_learning_saddles import stall_upper_bound
from jaxicl._experiments._feature_learning_summary import _mean_field
from jaxicl._meanfield._activations import ACTIVATIONS
from jaxicl._meanfield._loss import readout, two_timescale_loss
from jaxicl._meanfield._neurons import NeuronMeasure, random_measure
from jaxicl._meanfield._saddle import (
    dissipation,
    least_eigenvalue as ji_least_eigenvalue,
    mixture,
    mixture_derivatives,
    particle_velocities,
    splitting_hessians,
)
from jaxicl._meanfield._task import feature_regression
from jaxicl._studies._feature_learning import FeatureLearning, SplitAtoms


@pytest.fixture(autouse=True)
def _float64():
    with jax.enable_x64(True):
        yield


def _problem(activation="sigmoid"):
    task = feature_regression(d=6, k=3, teacher_neurons=4, activation=activation, key=jr.key(0))
    x = task.inputs(300, key=jr.key(1))
    particles = random_measure(n_particles=7, k=3, d=6, activation=activation, key=jr.key(2))
    return task, x, task.target_features(x), particles


@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_splitting_hessians_and_velocities_match_automatic_derivatives(activation):
    _, x, f, p = _problem(activation)
    b, _, residual = readout(p, x, f)
    act = ACTIVATIONS[activation]

    def first_variation(theta):  # δL/δµ(θ) with µ (B, ζ) held fixed, written out again
        return -jnp.mean((residual @ b @ theta[:3]) * act(x @ theta[3:]))

    thetas = jnp.concatenate([p.a, p.w], axis=1)
    expected = jax.vmap(jax.hessian(first_variation))(thetas)
    assert np.abs(splitting_hessians(p, x, f) - expected).max() < 1e-13
    velocity = -jax.vmap(jax.grad(first_variation))(thetas)
    assert np.abs(particle_velocities(p, x, f) - velocity).max() < 1e-14


def test_dissipation_is_the_loss_rate_along_the_flow():
    """D = −dL/dt: (L(θ + η v) − L(θ)) / η → −D with an error O(η)."""
    _, x, f, p = _problem()
    v = particle_velocities(p, x, f)
    d = float(dissipation(p, x, f))

    def moved(eta):
        q = NeuronMeasure(
            a=p.a + eta * v[:, :3], w=p.w + eta * v[:, 3:], mass=p.mass, activation=p.activation
        )
        return float(two_timescale_loss(q, x, f))

    base = float(two_timescale_loss(p, x, f))
    errors = [abs((moved(eta) - base) / eta + d) / d for eta in (1e-3, 1e-4, 1e-5)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-4


def test_mixture_derivatives_match_finite_differences():
    task, x, f, p = _problem()
    slope, curvature = (float(v) for v in mixture_derivatives(p, task.teacher, x, f))

    def along(s):
        return float(two_timescale_loss(mixture(p, task.teacher, s), x, f))

    slope_errors, curvature_errors = [], []
    for h in (1e-2, 1e-3, 1e-4):
        l0, l1, l2 = along(0.0), along(h), along(2 * h)
        slope_errors.append(abs((-3 * l0 + 4 * l1 - l2) / (2 * h) - slope))
        curvature_errors.append(abs((l0 - 2 * l1 + l2) / h**2 - curvature))
    assert slope_errors[0] > slope_errors[1] > slope_errors[2]
    assert curvature_errors[0] > curvature_errors[1] > curvature_errors[2]
    assert slope_errors[2] < 1e-6 * max(1.0, abs(slope))
    assert curvature_errors[2] < 1e-2 * abs(curvature)


def test_a_split_particle_moves_apart_by_its_splitting_hessian():
    """Particle 0 of a measure with full-rank features split into halves at θ_0 ± εu: their
    velocities differ by −2ε S(θ_0) u to first order (the measure changes only at second
    order), so the error relative to ε shrinks with ε. (At rank-deficient features, such as
    one atom, L jumps with any split instead: the span gains directions of size ε².)"""
    _, x, f, p = _problem()
    thetas = jnp.concatenate([p.a, p.w], axis=1)
    hessian = splitting_hessians(p, x, f)[0]
    u = jr.normal(jr.key(5), (1, 9))
    errors = []
    for eps in (1e-2, 1e-3, 1e-4):
        split = jnp.concatenate([thetas[:1] + eps * u, thetas[:1] - eps * u, thetas[1:]])
        mass = jnp.concatenate([p.mass[:1] / 2, p.mass[:1] / 2, p.mass[1:]])
        measure = NeuronMeasure(a=split[:, :3], w=split[:, 3:], mass=mass, activation=p.activation)
        v = particle_velocities(measure, x, f)
        errors.append(float(jnp.linalg.norm(v[0] - v[1] + 2 * eps * hessian @ u[0])) / eps)
    scale = float(jnp.linalg.norm(hessian @ u[0]))
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-3 * scale


def test_split_atoms_share_their_atoms_and_split_around_them():
    study = FeatureLearning(
        d=6, k=3, particles=12, init=SplitAtoms(3), n_inputs=50, n_eval_inputs=50, teacher_neurons=3
    )
    values = {"a_scale": 1.0, "learning_rate": 0.02}
    one = study.initial_model({**values, "displacement": 1e-3}, jr.key(1)).particles
    other = study.initial_model({**values, "displacement": 1e-3}, jr.key(2)).particles
    exact = study.initial_model({**values, "displacement": 0.0}, jr.key(1)).particles
    theta = lambda m: np.concatenate([m.a, m.w], axis=1).reshape(3, 4, -1)  # noqa: E731
    centres = theta(exact)[:, 0]
    assert np.all(theta(exact) == centres[:, None])  # ε = 0: the atoms themselves
    for split in (one, other):  # every member splits around the same atoms
        assert np.allclose(theta(split).mean(axis=1), centres, atol=1e-15)
        spread = np.abs(theta(split) - centres[:, None]).max()
        assert 1e-4 < spread < 1e-2
    assert not np.allclose(theta(one), theta(other))
    with pytest.raises(ValueError, match="multiple of `init.atoms`"):
        FeatureLearning(particles=10, init=SplitAtoms(3))
    with pytest.raises(ValueError, match="`displacement` only displaces"):
        FeatureLearning().check_grid({"displacement": [0.0, 1e-3]})
    # a move built once per group must not silently run at the default learning rate
    with pytest.raises(ValueError, match="needs birth_death_rate = 0"):
        FeatureLearning(birth_death_rate=1.0).check_grid({"learning_rate": [0.01, 0.02]})


def test_stall_upper_bound_is_clopper_pearson():
    for n in (4, 16, 64):  # none seen: the bound solves (1 − p)^n = 0.05
        assert stall_upper_bound(0, n) == pytest.approx(1 - 0.05 ** (1 / n), rel=1e-9)
    p = stall_upper_bound(3, 20)  # P(X ≤ 3 | p) = 0.05 at the bound
    tail = sum(math.comb(20, j) * p**j * (1 - p) ** (20 - j) for j in range(4))
    assert tail == pytest.approx(0.05, rel=1e-6)
    assert stall_upper_bound(5, 5) == 1.0


def test_mean_field_rate_recovers_a_known_exponent_with_an_honest_error():
    """Curves whose spread over seeds is exactly ∝ M^-1/2: the fitted rate is within 3
    standard errors of −1/2, and the error shrinks as the seeds grow (about 1/√seeds)."""
    sizes = (50, 100, 200, 400, 800)
    errors = []
    for seeds in (8, 32):
        config = FeatureLearningConfig(mean_field_sizes=sizes, mean_field_seeds=seeds)
        rng = np.random.default_rng(seeds)
        results = {}
        for m in sizes:
            noise = rng.normal(size=(seeds, 1)) * rng.uniform(0.5, 1.5, (1, 12))
            results[f"mean_field_M{m}"] = {
                "loss": 0.1 + m**-0.5 * noise,
                "diverged": np.zeros(seeds, bool),
            }
        mf = _mean_field(config, results)
        assert abs(mf["rate"] + 0.5) < 3 * mf["rate_stderr"]
        errors.append(mf["rate_stderr"])
    assert errors[1] < 0.75 * errors[0]


@pytest.mark.parametrize("n", [1, 2, 5, 25])
def test_least_eigenvalue_matches_lapack(n):
    """The plain-array eigensolver (the one observables use) against LAPACK through NumPy:
    random symmetric matrices, with the splitting Hessian's zero block, and degenerate ones."""
    rng = np.random.default_rng(n)
    a = rng.normal(size=(40, n, n))
    a = a + np.swapaxes(a, 1, 2)
    a[:, : min(3, n - 1), : min(3, n - 1)] = 0.0
    expected = np.linalg.eigvalsh(a)[:, 0]
    got = np.asarray(ji_least_eigenvalue(jnp.asarray(a)))
    assert np.abs(got - expected).max() < 1e-12 * max(1.0, np.abs(expected).max())
    diagonal = jnp.asarray(np.diag(np.r_[np.ones(n - 1), -3.0]))  # repeated eigenvalues
    assert float(ji_least_eigenvalue(diagonal)) == pytest.approx(-3.0, abs=1e-12)
    assert float(ji_least_eigenvalue(jnp.zeros((n, n)))) == pytest.approx(0.0, abs=1e-12)
