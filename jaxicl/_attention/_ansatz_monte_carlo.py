"""Monte Carlo of the full softmax model on the decomposable ansatz: the check of ℓ(Ω, M).

The model is the full `MergedAttention` of (Ω, M) (`decomposable_attention`), evaluated by its
own forward pass, so nothing here uses the reduced formula. Two devices make the estimate cheap
enough to run at L = 6400:

- **A rotated frame.** On the ansatz every W_h is a multiple of the identity on each block S_j,
  so the prediction is unchanged by a rotation of each block. Rotate block j so that x_{q,S_j}
  lies on its first axis and β_j in its first two: a context input then enters the model only
  through its first two coordinates per block, and the others can be dropped. The model of the
  same (Ω, M) on inputs in R^{2n} (blocks of two) sees prompts equal in law to those of
  `MultiTaskRegression` in R^d, at 2n coordinates per token instead of d; the block sizes r_j
  enter only through the laws of ‖x_{q,S_j}‖ and β_j (`rotated=False` samples the task itself
  in R^d; a test checks that the two agree).
- **Control variates for the finite-L part.** At L = ∞ head h's softmax average of y_i is
  ω_{h,i} c_i (c_i = β_iᵀx_{q,S_i} = y_{q,i}, labels noiseless), so ℓ_∞ = Σ_i r_i (1 − p_i)²,
  p_i = Σ_h μ_{h,i} ω_{h,i}, is exact, and on every prompt the difference
  (y_q − ŷ)² − (1 − p)² y_q² has mean ℓ − ℓ_∞. Its largest fluctuation is the cross term
  −2 (1 − p_i) c_i Σ_h μ_{h,i} δ_{h,i}, whose linear part δ_{h,i} = mean_l e^{s_{h,l}} (y_{l,i} −
  ω_{h,i} c_i) / E[e^{s_h} | x_q] has conditional mean exactly 0 (the tilt of §4); it is
  subtracted too. What is left has mean ℓ − ℓ_∞ and a standard error O(1/L), like its mean.
"""

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from .. import _validation as check
from .._tasks._prompt import Prompt
from .._tasks._regression import MultiTaskRegression, block_mask, disjoint_blocks, sample_prompts
from .._train._objectives import AbstractObjective
from ._decomposable import decomposable_attention
from ._reduced import AbstractSpectral


class AnsatzEstimate(NamedTuple):
    """Monte Carlo estimates (summed over tasks, like ℓ) with their standard errors."""

    loss: Float[Array, ""]
    loss_stderr: Float[Array, ""]
    finite_part: Float[Array, ""]  # ℓ − ℓ_∞
    finite_part_stderr: Float[Array, ""]
    limit: Float[Array, ""]  # ℓ_∞ = Σ_i r_i (1 − p_i)², exact


def _frame_blocks(n_tasks: int):
    """The blocks of the rotated frame: two coordinates per task."""
    return tuple((2 * i, 2 * i + 2) for i in range(n_tasks))


def _rotated_prompts(sizes, context_len, batch, dtype, key) -> Prompt:
    """`batch` prompts in the rotated frame (a batched `Prompt`)."""
    return jax.vmap(lambda k: _rotated_prompt(sizes, context_len, dtype, k))(jr.split(key, batch))


def _rotated_prompt(sizes, context_len, dtype, key) -> Prompt:
    """One noiseless prompt in the rotated frame (module docstring): block j of the query is
    (‖x_{q,S_j}‖, 0), of β_j its components along x_{q,S_j} and across it, for x_{q,S_j}, β_j ~
    N(0, I_{r_j}); context inputs are N(0, I_2) per block. Inputs live in R^{2n}."""
    q_key, beta_key, context_key = jr.split(key, 3)
    n_tasks, widest = len(sizes), max(sizes)
    # Block j's x_{q,S_j} and β_j are the first r_j normals of keys fold_in(·, j), drawn for all
    # blocks in one batched draw: one random-number program to compile instead of two per
    # block (the draw of 64 prompts compiled in 1.2 s, now 0.7). JAX's (partitionable, the
    # default) threefry draws are prefix-stable, so the values are those of per-block draws
    # of r_j normals (a test checks it); the zeros padding short blocks add nothing.
    blocks = jnp.arange(n_tasks)
    keys = jax.vmap(lambda base: jax.vmap(lambda j: jr.fold_in(base, j))(blocks))(
        jnp.stack([q_key, beta_key])
    )
    draws = jax.vmap(jax.vmap(lambda k: jr.normal(k, (widest,), dtype)))(keys)
    inside = jnp.arange(widest)[None, :] < jnp.asarray(sizes)[:, None]
    xq, b = jnp.where(inside, draws[0], 0), jnp.where(inside, draws[1], 0)
    norm = jnp.sqrt(jnp.sum(xq * xq, axis=1))
    along = jnp.sum(b * xq, axis=1) / norm
    across = jnp.sqrt(jnp.maximum(jnp.sum(b * b, axis=1) - along**2, 0.0))
    eye = jnp.eye(n_tasks, dtype=dtype)
    # block j of the query is (‖x_{q,S_j}‖, 0) and row j of β is (along_j, across_j) on block j
    query_x = jnp.stack([norm, jnp.zeros_like(norm)], axis=1).reshape(-1)
    beta = (eye[:, :, None] * jnp.stack([along, across], axis=1)[None, :, :]).reshape(n_tasks, -1)
    x = jr.normal(context_key, (context_len, 2 * n_tasks), dtype)
    return Prompt(x=x, y=x @ beta.T, query_x=query_x, query_y=beta @ query_x)


def _loss_and_finite_part(om, m, prompt, blocks, d, mask):
    """The loss of the model of (Ω, M) on one noiseless prompt, and its control-variate-corrected
    finite part (module docstring): mean ℓ − ℓ_∞, fluctuations O(1/L)."""
    model = decomposable_attention(om, m, blocks, d)
    slope = jnp.sum(m * om, axis=0)
    target = prompt.query_y
    loss = jnp.sum((target - model(prompt)) ** 2)
    # Σ_h μ_{h,i} δ_{h,i} of the module docstring: mean zero given x_q and β.
    logits = jnp.einsum("lc,hc,c->hl", prompt.x, om @ mask, prompt.query_x)
    log_mean = 0.5 * jnp.einsum("hj,j->h", om**2, mask @ prompt.query_x**2)
    weights = jnp.exp(logits - log_mean[:, None])  # (H, L)
    residual = prompt.y[None, :, :] - om[:, None, :] * target[None, None, :]
    control = jnp.sum(m * jnp.mean(weights[:, :, None] * residual, axis=1), axis=0)
    cross = -2 * (1 - slope) * target * control
    return loss, loss - jnp.sum((1 - slope) ** 2 * target**2 + cross)


def _limit_loss(omega, mu, sizes):
    """ℓ_∞ = Σ_i r_i (1 − p_i)², p_i = Σ_h μ_{h,i} ω_{h,i} (noiseless labels)."""
    return (1 - jnp.sum(mu * omega, axis=-2)) ** 2 @ jnp.asarray(sizes, omega.dtype)


class AnsatzICLLoss(AbstractObjective):
    """The full model's sampled loss restricted to the ansatz, as an objective on a reduced state.

    Each draw is `batch_size` fresh prompts in the rotated frame; the loss is the full
    `MergedAttention` of the state's (Ω, M) on them, summed over tasks like ℓ. On every prompt
    the loss as a function of (Ω, M) is the one the prompt in R^d gives (the rotation is exact),
    so SGD on this objective is SGD on the full model confined to the ansatz: with a large batch
    it is the exact finite-L flow of (Ω, M), with no large-L expansion and no weight off the
    ansatz; with the full model's batch it has the full model's sampling noise along the ansatz.

    With `control_variates=True` the loss is ℓ_∞(Ω, M) (exact) plus the mean finite part with
    the control variates of `ansatz_monte_carlo_loss`: the same expectation and gradient, with
    fluctuations O(1/L) instead of O(1), so a modest batch gives the exact finite-L flow.

    **Arguments:**

    - `block_sizes`: r_i = |S_i| for each task.
    - `context_len`: L.
    - `batch_size`: prompts per draw.
    - `dtype`: of the prompts (the state's dtype should match); default JAX's float.
    - `control_variates`: subtract the mean-zero control variates (see above).
    - `average_outputs`: divide by n: the ICL loss's normalisation (it averages the n outputs),
      which the weights' gradient flow descends (`WeightFlow`).
    """

    block_sizes: tuple[int, ...] = eqx.field(static=True)
    context_len: int = eqx.field(static=True)
    batch_size: int = eqx.field(static=True)
    dtype: jnp.dtype = eqx.field(static=True)
    control_variates: bool = eqx.field(static=True)
    average_outputs: bool = eqx.field(static=True)

    def __init__(
        self,
        block_sizes,
        context_len,
        batch_size,
        *,
        dtype=None,
        control_variates=False,
        average_outputs=False,
    ):
        if not block_sizes:
            raise ValueError("`block_sizes` must list at least one block size, got ().")
        self.block_sizes = tuple(check.positive_int("block_sizes", r) for r in block_sizes)
        self.context_len = check.positive_int("context_len", context_len)
        self.batch_size = check.positive_int("batch_size", batch_size)
        self.dtype = jnp.dtype(jnp.result_type(float) if dtype is None else dtype)
        self.control_variates = bool(control_variates)
        self.average_outputs = bool(average_outputs)

    def draw(self, key: PRNGKeyArray) -> Prompt:
        return _rotated_prompts(
            self.block_sizes, self.context_len, self.batch_size, self.dtype, key
        )

    def evaluate(self, model: AbstractSpectral, data: Prompt) -> Float[Array, ""]:
        omega, mu = model.spectral()
        n_tasks = len(self.block_sizes)
        if omega.shape[1] != n_tasks:
            raise ValueError(
                f"the state has {omega.shape[1]} tasks but `block_sizes` has {n_tasks}."
            )
        blocks, d = _frame_blocks(n_tasks), 2 * n_tasks
        mask = block_mask(blocks, d, omega.dtype)
        loss, finite = jax.vmap(lambda p: _loss_and_finite_part(omega, mu, p, blocks, d, mask))(
            data
        )
        if self.control_variates:
            total = _limit_loss(omega, mu, self.block_sizes) + jnp.mean(finite)
        else:
            total = jnp.mean(loss)
        return total / n_tasks if self.average_outputs else total


def ansatz_monte_carlo_loss(
    omega: Float[Array, "*points H n"],
    mu: Float[Array, "*points H n"],
    *,
    d: int,
    context_len: int,
    n_prompts: int,
    key: PRNGKeyArray,
    batch: int = 64,
    rotated: bool = True,
) -> AnsatzEstimate:
    """ℓ(Ω, M) and ℓ − ℓ_∞ of the full model on n = Ω.shape[-1] disjoint blocks of x ∈ R^d with
    noiseless labels, by Monte Carlo over `n_prompts` prompts (rounded up to whole batches).

    Leading axes of `omega` and `mu` are points, all evaluated on the same prompts (one pass of
    sampling; differences between points then have common random numbers). `rotated=False`
    samples the task in R^d itself instead of the rotated frame (equal in law; a check)."""
    check.positive_int("context_len", context_len)
    check.positive_int("n_prompts", n_prompts)
    check.positive_int("batch", batch)
    check.one_of("rotated", rotated, (True, False))
    if omega.shape != mu.shape or omega.ndim < 2:
        raise ValueError(
            f"`omega` and `mu` must share a shape (..., H, n), got {omega.shape}, {mu.shape}."
        )
    points = omega.shape[:-2]
    omega = omega.reshape(-1, *omega.shape[-2:])
    mu = mu.reshape(omega.shape)
    n_tasks, dtype = omega.shape[-1], omega.dtype
    blocks = disjoint_blocks(d, n_tasks)
    sizes = tuple(stop - start for start, stop in blocks)
    if rotated:
        blocks, d = _frame_blocks(n_tasks), 2 * n_tasks
        draw = lambda k: _rotated_prompts(sizes, context_len, batch, dtype, k)  # noqa: E731
    else:
        task = MultiTaskRegression(d, context_len, blocks, dtype=dtype)
        draw = lambda k: sample_prompts(task, batch, key=k)  # noqa: E731
    mask = block_mask(blocks, d, dtype)

    def per_prompt(om, m, prompt):
        return _loss_and_finite_part(om, m, prompt, blocks, d, mask)

    def one_batch(batch_key):
        prompts = draw(batch_key)
        over_prompts = jax.vmap(per_prompt, in_axes=(None, None, 0))
        return jax.vmap(over_prompts, in_axes=(0, 0, None))(omega, mu, prompts)

    loss, finite = jax.lax.map(one_batch, jr.split(key, -(-n_prompts // batch)))
    loss = jnp.moveaxis(loss, 1, 0).reshape(omega.shape[0], -1)  # (points, prompts)
    finite = jnp.moveaxis(finite, 1, 0).reshape(loss.shape)
    stderr = lambda values: values.std(axis=1, ddof=1) / jnp.sqrt(values.shape[1])  # noqa: E731
    limit = _limit_loss(omega, mu, sizes)
    shaped = lambda values: values.reshape(points)  # noqa: E731
    return AnsatzEstimate(
        loss=shaped(loss.mean(axis=1)),
        loss_stderr=shaped(stderr(loss)),
        finite_part=shaped(finite.mean(axis=1)),
        finite_part_stderr=shaped(stderr(finite)),
        limit=shaped(limit),
    )


class LayoutOptimum(NamedTuple):
    """The full model's best loss in one head layout, over a grid of ω with μ by least squares.

    - `loss`, `loss_stderr`: Σ_i min_μ E(y_{q,i} − μ_i a_i)² at the best grid ω (summed over
      tasks), a_i the layout's softmax average of y_i.
    - `omega`, `mu`: the best grid ω (one per task for one head per task) and μ.
    - `at_edge`: the best ω is an end of the grid (the optimum may lie outside it).
    - `per_prompt`: Σ_i (y_{q,i} − μ_i a_i)² on each prompt at the optimum (for ratios'
      standard errors on common prompts).
    """

    loss: float
    loss_stderr: float
    omega: tuple[float, ...]
    mu: tuple[float, ...]
    at_edge: bool
    per_prompt: Array


def layout_optimum_monte_carlo(
    single_head: bool,
    omegas: Float[Array, " grid"],
    *,
    d: int,
    n_tasks: int,
    context_len: int,
    n_prompts: int,
    key: PRNGKeyArray,
    batch: int = 64,
) -> LayoutOptimum:
    """Best full-model loss of a fixed-sign head layout on the ansatz (noiseless labels).

    `single_head=False`: one head per task, head i has ω_i on block S_i and μ_i on task i only
    (tasks decouple, so each ω_i is chosen on the grid separately); `single_head=True`: one
    head with one ω on every block and μ_i per task. For each grid ω the model of the layout
    with μ = 1 is run on the prompts (rotated frame); then μ_i = E[y_{q,i} a_i] / E[a_i²].
    The same key gives the same prompts for both layouts."""
    check.one_of("single_head", single_head, (True, False))
    blocks = disjoint_blocks(d, n_tasks)
    sizes = tuple(stop - start for start, stop in blocks)
    frame_blocks = _frame_blocks(n_tasks)
    dtype = omegas.dtype
    ones = jnp.ones((1, n_tasks), dtype)

    def model_for(w):
        if single_head:
            return decomposable_attention(w * ones, ones, frame_blocks, 2 * n_tasks)
        eye = jnp.eye(n_tasks, dtype=dtype)
        return decomposable_attention(w * eye, eye, frame_blocks, 2 * n_tasks)

    def one_batch(batch_key):
        prompts = _rotated_prompts(sizes, context_len, batch, dtype, batch_key)
        averages = jax.vmap(lambda w: jax.vmap(model_for(w))(prompts))(omegas)  # (G, B, n)
        return averages, prompts.query_y

    averages, targets = jax.lax.map(one_batch, jr.split(key, -(-n_prompts // batch)))
    a = jnp.moveaxis(averages, 1, 0).reshape(omegas.shape[0], -1, n_tasks)  # (G, N, n)
    c = targets.reshape(-1, n_tasks)  # (N, n)
    mu = jnp.mean(c[None] * a, axis=1) / jnp.mean(a**2, axis=1)  # (G, n)
    errors = (c[None] - mu[:, None, :] * a) ** 2  # (G, N, n)
    per_task = errors.mean(axis=1)  # (G, n)
    if single_head:
        best = jnp.full((n_tasks,), jnp.argmin(per_task.sum(axis=1)))
    else:
        best = jnp.argmin(per_task, axis=0)
    tasks = jnp.arange(n_tasks)
    per_prompt = errors[best, :, tasks].sum(axis=0)  # (N,)
    edge = bool(jnp.any((best == 0) | (best == omegas.shape[0] - 1)))
    chosen = best[:1] if single_head else best
    return LayoutOptimum(
        loss=float(per_prompt.mean()),
        loss_stderr=float(per_prompt.std(ddof=1) / jnp.sqrt(per_prompt.shape[0])),
        omega=tuple(float(omegas[i]) for i in chosen),
        mu=tuple(float(m) for m in mu[best, tasks]),
        at_edge=edge,
        per_prompt=per_prompt,
    )


def ratio_with_stderr(numerator: Array, denominator: Array) -> tuple[float, float]:
    """mean(numerator) / mean(denominator) over common prompts, with its delta-method standard
    error."""
    top, bottom = numerator.mean(), denominator.mean()
    ratio = top / bottom
    influence = (numerator - ratio * denominator) / bottom
    return float(ratio), float(influence.std(ddof=1) / jnp.sqrt(numerator.shape[0]))
