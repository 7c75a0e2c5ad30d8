import math

import jax
import jax.numpy as jnp
import pytest
from helpers import assert_within_error_bar

import jaxicl as ji


N = 40_000


def _mean_and_stderr(samples):
    return samples.mean(axis=0), samples.std(axis=0, ddof=1) / math.sqrt(samples.shape[0])


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_shapes_and_dtypes(dtype, getkey):
    task = ji.LinearRegression(4, 7, dtype=dtype)
    prompt = task.sample(key=getkey())
    assert prompt.x.shape == (7, 4) and prompt.y.shape == (7, 1)
    assert prompt.query_x.shape == (4,) and prompt.query_y.shape == (1,)
    assert all(leaf.dtype == dtype for leaf in jax.tree_util.tree_leaves(prompt))
    multi = ji.MultiTaskRegression(5, 1, ji.disjoint_blocks(5, 5), dtype=dtype)
    batch = ji.sample_prompts(multi, 3, key=getkey())
    assert (
        batch.x.shape == (3, 1, 5) and batch.y.shape == (3, 1, 5) and batch.query_y.shape == (3, 5)
    )


def test_default_dtype_follows_x64():
    assert ji.LinearRegression(2, 2).dtype == jnp.float64  # tests run with x64 on


def test_block_rule_matches_reference():
    assert ji.disjoint_blocks(50, 3) == ((0, 16), (16, 33), (33, 50))
    assert ji.disjoint_blocks(6, 2) == ((0, 3), (3, 6))


@pytest.mark.parametrize("rho", [0.0, 0.6])
def test_linear_regression_moments(rho, getkey):
    sigma, sigma_q, d = 0.3, 0.7, 4
    task = ji.LinearRegression(d, 2, rho=rho, context_noise=sigma, query_noise=sigma_q)
    prompts = ji.sample_prompts(task, N, key=getkey())
    x0 = prompts.x[:, 0]
    # Covariance of x: ρ^|i-j|.
    target = rho ** jnp.abs(jnp.arange(d)[:, None] - jnp.arange(d)[None, :]).astype(float)
    mean, err = _mean_and_stderr(x0[:, :, None] * x0[:, None, :])
    for i in range(d):
        for j in range(d):
            assert_within_error_bar(mean[i, j], err[i, j], target[i, j])
    # Var(y) = E βᵀΣβ + σ² = tr(Σ)/d + σ² = 1 + σ², context and query noise separately.
    assert_within_error_bar(*_mean_and_stderr(prompts.y[:, 0, 0] ** 2), 1 + sigma**2)
    assert_within_error_bar(*_mean_and_stderr(prompts.query_y[:, 0] ** 2), 1 + sigma_q**2)
    # E[y_1 y_2 x_1 x_2ᵀ] = Σ E[ββᵀ] Σ = Σ²/d: checks the law of β (N(0, I/d)).
    cross = prompts.y[:, 0, 0, None, None] * prompts.y[:, 1, 0, None, None]
    cross = cross * prompts.x[:, 0, :, None] * prompts.x[:, 1, None, :]
    mean, err = _mean_and_stderr(cross)
    expected = target @ target / d
    for i in range(d):
        assert_within_error_bar(mean[i, i], err[i, i], expected[i, i])
        assert_within_error_bar(mean[i, (i + 1) % d], err[i, (i + 1) % d], expected[i, (i + 1) % d])


@pytest.mark.parametrize(
    "task",
    [
        ji.MultiTaskRegression(7, 2, ji.disjoint_blocks(7, 3), context_noise=(0.1, 0.5, 1.0)),
        ji.overlapping_two_task(sigma2=0.1, context_len=2),
    ],
    ids=["disjoint", "overlapping"],
)
def test_multitask_moments(task, getkey):
    prompts = ji.sample_prompts(task, N, key=getkey())
    mask = task.block_mask()
    sizes = mask.sum(axis=1)
    # Var(y_i) = |S_i| + σ_i² on the context; the query is noiseless.
    for i, noise in enumerate(task.context_noise):
        assert_within_error_bar(*_mean_and_stderr(prompts.y[:, 0, i] ** 2), sizes[i] + noise**2)
        assert_within_error_bar(*_mean_and_stderr(prompts.query_y[:, i] ** 2), sizes[i])
    # Independent tasks: E[y_1 y_2] = 0 within one token, even with overlapping blocks.
    assert_within_error_bar(*_mean_and_stderr(prompts.y[:, 0, 0] * prompts.y[:, 0, 1]), 0.0)
    # E[y_{1,i} y_{2,i} x_1 x_2ᵀ] = diag(1_{S_i}): β_i ~ N(0, I) on its block, zero elsewhere.
    for i in range(task.n_out):
        cross = (
            prompts.y[:, 0, i, None] * prompts.y[:, 1, i, None] * prompts.x[:, 0] * prompts.x[:, 1]
        )
        mean, err = _mean_and_stderr(cross)
        for j in range(task.d):
            assert_within_error_bar(mean[j], err[j], mask[i, j])


def test_overlapping_layout():
    task = ji.overlapping_two_task(sigma2=0.1)
    assert task.blocks == ((0, 4), (2, 6)) and task.context_len == 48
    assert task.context_noise == pytest.approx((2 * math.sqrt(0.1),) * 2)


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: ji.LinearRegression(0, 4), "`d`"),
        (lambda: ji.LinearRegression(3, -1), "`context_len`"),
        (lambda: ji.LinearRegression(3, 4, rho=1.0), "`rho`"),
        (lambda: ji.LinearRegression(3, 4, context_noise=float("nan")), "`context_noise`"),
        (lambda: ji.LinearRegression(3, 4, query_noise=-0.1), "`query_noise`"),
        (lambda: ji.MultiTaskRegression(6, 4, ((0, 3), (3, 5))), "`blocks`"),
        (lambda: ji.MultiTaskRegression(6, 4, ((0, 3), (3, 7))), "`blocks`"),
        (
            lambda: ji.MultiTaskRegression(6, 4, ((0, 6),), context_noise=(0.1, 0.2)),
            "`context_noise`",
        ),
        (lambda: ji.disjoint_blocks(3, 4), "`n_tasks`"),
    ],
)
def test_bad_input_names_the_field(make, field):
    with pytest.raises(ValueError, match=field):
        make()


def test_a_64_bit_dtype_without_x64_is_refused_not_silently_32_bit():
    """Without x64, JAX turns float64 requests into float32 arrays; the task says so instead.
    NumPy integers are accepted as sizes. (A fresh process: the suite runs with x64 on.)"""
    import subprocess
    import sys

    script = (
        "import numpy as np, jax.numpy as jnp, jaxicl as ji\n"
        "assert ji.LinearRegression(np.int64(5), np.int64(10)).d == 5\n"
        "try:\n"
        "    ji.LinearRegression(5, 10, dtype=jnp.float64)\n"
        "except ValueError as error:\n"
        "    print(error)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert "needs 64-bit JAX" in out.stdout
