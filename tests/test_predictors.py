import functools as ft
import math

import jax
import pytest
from helpers import assert_within_error_bar

import jaxicl as ji


D, L, SIGMA2 = 5, 40, 0.1
NOISE = dict(context_noise=math.sqrt(SIGMA2), query_noise=math.sqrt(SIGMA2))
TASK = ji.LinearRegression(D, L, **NOISE)
N = 200_000


@pytest.mark.parametrize("step", [0.3, 1.0])
def test_gd_risk_monte_carlo(step, getkey):
    predict = ft.partial(ji.gd_prediction, step=step)
    estimate, stderr = ji.monte_carlo_loss(predict, TASK, N, key=getkey())
    assert_within_error_bar(estimate, stderr, ji.gd_risk(d=D, context_len=L, step=step, **NOISE))


@pytest.mark.parametrize("step", [0.3, 1.0])
def test_debiased_gd_risk_monte_carlo(step, getkey):
    predict = ft.partial(ji.debiased_gd_prediction, step=step)
    estimate, stderr = ji.monte_carlo_loss(predict, TASK, N, key=getkey())
    expected = ji.debiased_gd_risk(d=D, context_len=L, step=step, **NOISE)
    assert_within_error_bar(estimate, stderr, expected)


def test_optimal_steps_match_quadratic_minimum():
    """Both risks are 1 + σ_q² − 2ηa + η²b; a grid minimum must match 1 + σ_q² − a²/b.

    Centring discards nothing useful for zero-mean x, so debiased GD is slightly worse here:
    a²/b = (L−1)/(L + d(1+σ²)) against L/(L + d + 1 + dσ²) for plain GD.
    """
    grid = [0.5 + 0.0005 * i for i in range(1000)]
    c = D * (1 + SIGMA2)
    plain = min(ji.gd_risk(d=D, context_len=L, step=s, **NOISE) for s in grid)
    debiased = min(ji.debiased_gd_risk(d=D, context_len=L, step=s, **NOISE) for s in grid)
    assert plain == pytest.approx(1 + SIGMA2 - L / (L + c + 1), abs=1e-6)
    assert debiased == pytest.approx(1 + SIGMA2 - (L - 1) / (L + c), abs=1e-6)
    sigma = NOISE["context_noise"]
    best_plain = ji.optimal_gd_step(d=D, context_len=L, context_noise=sigma)
    best_debiased = ji.optimal_gd_step(d=D, context_len=L, context_noise=sigma, debiased=True)
    assert ji.gd_risk(d=D, context_len=L, step=best_plain, **NOISE) <= plain + 1e-12
    assert ji.debiased_gd_risk(d=D, context_len=L, step=best_debiased, **NOISE) <= debiased + 1e-12


def test_least_squares_risk_monte_carlo(getkey):
    predict = ft.partial(ji.ridge_prediction, ridge=0.0)
    estimate, stderr = ji.monte_carlo_loss(predict, TASK, N, key=getkey())
    assert_within_error_bar(estimate, stderr, ji.least_squares_risk(d=D, context_len=L, **NOISE))


def test_ridge_risk_monte_carlo_against_conditional_closed_form(getkey):
    """Bayes ridge λ = σ² d: sampled loss vs the closed form averaged over independent inputs."""
    ridge = SIGMA2 * D
    estimate, stderr = ji.monte_carlo_loss(
        ft.partial(ji.ridge_prediction, ridge=ridge), TASK, N, key=getkey()
    )
    inputs = ji.sample_prompts(TASK, 20_000, key=getkey()).x
    conditional = jax.vmap(lambda x: ji.ridge_risk_given_inputs(x, ridge=ridge, **NOISE))(inputs)
    conditional_err = conditional.std(ddof=1) / math.sqrt(inputs.shape[0])
    assert_within_error_bar(
        estimate, math.hypot(float(stderr), float(conditional_err)), conditional.mean()
    )
    # Bayes-optimal ridge beats least squares and the GD step.
    assert conditional.mean() < ji.least_squares_risk(d=D, context_len=L, **NOISE)


def test_kernel_smoother_at_zero_omega(getkey):
    """ω = 0 averages the labels: risk = μ²(1 + σ²)/L + 1 + σ_q² (ȳ and y_q are uncorrelated)."""
    mu = 2.5
    predict = ft.partial(ji.kernel_smoother_prediction, omega=0.0, mu=mu)
    estimate, stderr = ji.monte_carlo_loss(predict, TASK, N, key=getkey())
    assert_within_error_bar(estimate, stderr, mu**2 * (1 + SIGMA2) / L + 1 + SIGMA2)


def test_predictor_shapes_multi_output(getkey):
    task = ji.MultiTaskRegression(6, 12, ji.disjoint_blocks(6, 2))
    prompt = task.sample(key=getkey())
    for predict in (
        ft.partial(ji.ridge_prediction, ridge=1.0),
        ft.partial(ji.gd_prediction, step=1.0),
        ft.partial(ji.debiased_gd_prediction, step=1.0),
        ft.partial(ji.kernel_smoother_prediction, omega=0.1, mu=1.0),
    ):
        assert predict(prompt).shape == (2,)


def test_least_squares_risk_needs_enough_context():
    with pytest.raises(ValueError, match="`context_len`"):
        ji.least_squares_risk(d=5, context_len=6, context_noise=0.1, query_noise=0.0)
