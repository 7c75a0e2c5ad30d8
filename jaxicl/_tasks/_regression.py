"""Distributions of regression prompts: single-task and block multi-task linear regression."""

import abc
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import PRNGKeyArray

from .. import _validation as check
from .._custom_types import Blocks, default_float_dtype
from ._prompt import Prompt


class AbstractTask(eqx.Module):
    """A distribution over prompts. `sample(key=...)` returns ONE `Prompt`; batch with vmap.

    `blocks`: the coordinates of x each output depends on, one `(start, stop)` pair per output
    (a single-output task: all of x), over which observables such as (ω, μ) are taken.
    """

    d: eqx.AbstractVar[int]
    n_out: eqx.AbstractVar[int]
    context_len: eqx.AbstractVar[int]
    blocks: eqx.AbstractVar[Blocks]

    @abc.abstractmethod
    def sample(self, *, key: PRNGKeyArray) -> Prompt:
        """Draw one prompt."""


def sample_prompts(task: AbstractTask, batch_size: int, *, key: PRNGKeyArray) -> Prompt:
    """Draw `batch_size` independent prompts as one batched `Prompt` (leading axis `batch`)."""
    return jax.vmap(lambda k: task.sample(key=k))(jr.split(key, batch_size))


def ar1_cholesky(d: int, rho: float) -> np.ndarray:
    """Lower Cholesky factor of the covariance Σ_ij = ρ^|i-j| (closed form for an AR(1) chain).

    Column 0 is ρ^i; column j >= 1 is ρ^(i-j) √(1-ρ²) below the diagonal. Built with NumPy
    because it depends only on static configuration.
    """
    lag = np.subtract.outer(np.arange(d), np.arange(d))
    factor = np.where(lag >= 0, float(rho) ** np.maximum(lag, 0), 0.0)
    factor[:, 1:] *= math.sqrt(1.0 - rho**2)
    return factor


class LinearRegression(AbstractTask):
    """Single-task linear regression, y = βᵀx + ε, as in He et al. (ICML 2025).

    x ~ N(0, Σ) with Σ_ij = ρ^|i-j| (ρ = 0: isotropic), β ~ N(0, I_d / d), fresh per prompt.
    Context labels carry noise N(0, context_noise²), the query target N(0, query_noise²).

    **Arguments:**

    - `d`: input dimension.
    - `context_len`: number of context examples L.
    - `rho`: covariance correlation, |ρ| < 1.
    - `context_noise`, `query_noise`: label noise standard deviations (set separately).
    - `dtype`: floating dtype; `None` follows the x64 setting.
    """

    d: int = eqx.field(static=True)
    context_len: int = eqx.field(static=True)
    rho: float
    context_noise: float
    query_noise: float
    dtype: jnp.dtype = eqx.field(static=True)
    n_out: int = eqx.field(static=True, default=1, init=False)

    def __init__(self, d, context_len, *, rho=0.0, context_noise=0.0, query_noise=0.0, dtype=None):
        self.d = check.positive_int("d", d)
        self.context_len = check.positive_int("context_len", context_len)
        self.rho = check.in_open_interval("rho", rho, -1.0, 1.0)
        self.context_noise = check.finite_nonnegative("context_noise", context_noise)
        self.query_noise = check.finite_nonnegative("query_noise", query_noise)
        self.dtype = default_float_dtype(dtype)

    @property
    def blocks(self) -> Blocks:
        return ((0, self.d),)

    def sample(self, *, key: PRNGKeyArray) -> Prompt:
        x_key, beta_key, noise_key = jr.split(key, 3)
        shape = (self.context_len + 1, self.d)
        x = jr.normal(x_key, shape, self.dtype)
        if self.rho != 0.0:
            x = x @ jnp.asarray(ar1_cholesky(self.d, self.rho).T, self.dtype)
        beta = jr.normal(beta_key, (self.d,), self.dtype) / math.sqrt(self.d)
        noise_scale = jnp.full((self.context_len + 1,), self.context_noise, self.dtype)
        noise_scale = noise_scale.at[-1].set(self.query_noise)
        y = x @ beta + noise_scale * jr.normal(noise_key, (self.context_len + 1,), self.dtype)
        return Prompt(x=x[:-1], y=y[:-1, None], query_x=x[-1], query_y=y[-1:])


def block_mask(blocks: Blocks, d: int, dtype) -> jax.Array:
    """(n_blocks, d) 0/1 matrix whose row i marks the coordinates [start_i, stop_i)."""
    coords = jnp.arange(d)
    return jnp.stack([(coords >= start) & (coords < stop) for start, stop in blocks]).astype(dtype)


def disjoint_blocks(d: int, n_tasks: int) -> Blocks:
    """Split d coordinates into n contiguous blocks [floor(i d/n), floor((i+1) d/n)).

    For d = 50, n = 3 this gives sizes 16, 17, 17 (the reference layout of Chen et al.).
    """
    check.positive_int("d", d)
    check.positive_int("n_tasks", n_tasks)
    if n_tasks > d:
        raise ValueError(f"`n_tasks` must be <= d={d} so that no block is empty, got {n_tasks}.")
    return tuple(((i * d) // n_tasks, ((i + 1) * d) // n_tasks) for i in range(n_tasks))


class MultiTaskRegression(AbstractTask):
    """Multi-task linear regression over coordinate blocks (Chen et al. COLT 2024; He et al.).

    Task i reads block S_i = [start, stop) of x ~ N(0, I_d): y_i = <β_i, x_{S_i}> + ε_i with
    β_i ~ N(0, I_{|S_i|}) fresh per prompt (not rescaled). Blocks may be disjoint
    (`disjoint_blocks`) or overlap (`overlapping_two_task`), but must cover all d coordinates.

    **Arguments:**

    - `d`: input dimension.
    - `context_len`: number of context examples L.
    - `blocks`: one `(start, stop)` pair per task.
    - `context_noise`: context-label noise std, one float for all tasks or one per task.
    - `query_noise`: query-target noise std (the reference uses 0).
    - `dtype`: floating dtype; `None` follows the x64 setting.
    """

    d: int = eqx.field(static=True)
    context_len: int = eqx.field(static=True)
    blocks: Blocks = eqx.field(static=True)
    context_noise: tuple[float, ...]
    query_noise: float
    dtype: jnp.dtype = eqx.field(static=True)

    def __init__(self, d, context_len, blocks, *, context_noise=0.0, query_noise=0.0, dtype=None):
        self.d = check.positive_int("d", d)
        self.context_len = check.positive_int("context_len", context_len)
        self.blocks = check.blocks_cover("blocks", blocks, self.d)
        if isinstance(context_noise, (int, float)):
            context_noise = (context_noise,) * len(self.blocks)
        if len(context_noise) != len(self.blocks):
            raise ValueError(
                f"`context_noise` must be one float or one per block ({len(self.blocks)}), "
                f"got {context_noise!r}."
            )
        self.context_noise = tuple(
            check.finite_nonnegative("context_noise", s) for s in context_noise
        )
        self.query_noise = check.finite_nonnegative("query_noise", query_noise)
        self.dtype = default_float_dtype(dtype)

    @property
    def n_out(self) -> int:
        return len(self.blocks)

    def block_mask(self) -> jax.Array:
        """(n_tasks, d) 0/1 matrix whose row i marks block S_i."""
        return block_mask(self.blocks, self.d, self.dtype)

    def sample(self, *, key: PRNGKeyArray) -> Prompt:
        x_key, beta_key, context_key, query_key = jr.split(key, 4)
        x = jr.normal(x_key, (self.context_len + 1, self.d), self.dtype)
        beta = self.block_mask() * jr.normal(beta_key, (self.n_out, self.d), self.dtype)
        clean = x @ beta.T
        context_scale = jnp.asarray(self.context_noise, self.dtype)
        context_noise = jr.normal(context_key, (self.context_len, self.n_out), self.dtype)
        query_noise = jr.normal(query_key, (self.n_out,), self.dtype)
        return Prompt(
            x=x[:-1],
            y=clean[:-1] + context_scale[None, :] * context_noise,
            query_x=x[-1],
            query_y=clean[-1] + self.query_noise * query_noise,
        )


def overlapping_two_task(*, sigma2=0.1, context_len=48, dtype=None) -> MultiTaskRegression:
    """The overlapping setting of He et al.: d = 6, task 1 reads x[0:4], task 2 reads x[2:6].

    Context-label noise std is √(d_k)·σ with d_k = 4; query labels are noiseless.
    """
    sigma = math.sqrt(check.finite_nonnegative("sigma2", sigma2))
    return MultiTaskRegression(
        6, context_len, ((0, 4), (2, 6)), context_noise=2.0 * sigma, query_noise=0.0, dtype=dtype
    )
