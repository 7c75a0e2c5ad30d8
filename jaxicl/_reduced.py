"""Reduced population dynamics of multi-head softmax attention on the H×n matrices (Ω, M).

Under the decomposable ansatz W_h = Σ_i ω_{h,i} diag(1_{S_i}) ⊕ 0 and
U_h = Σ_i μ_{h,i} e_i e_{d+i}ᵀ, Gaussian symmetry keeps gradient flow on the ansatz, and for
large L the population loss (summed over tasks) is

    ℓ(Ω, M) = Σ_i [ σ_q² + r_i (1 − Σ_h μ_{h,i} ω_{h,i})²
                      + ((r_i + σ²)/L) Σ_{h,h'} μ_{h,i} μ_{h',i} K_{hh'} ]

with K_{hh'} = Π_j (1 − 2 ω_{h,j} ω_{h',j})^{−r_j/2} (Gaussian-moment form) or
exp(Σ_j r_j ω_{h,j} ω_{h',j}) (exponential form). Block sizes r_i = |S_i|, β_i ~ N(0, I).

Two states drive two flows with the same loss: `MergedSpectral` (gradient flow on Ω, M) and
`FactorizedSpectral` (ω = q k, μ = o v; gradient flow on q, k, o, v from a balanced start keeps
q² = k², o² = v² and the signs, and gives dω/dt = −2|ω| ∂ℓ/∂ω). Plain SGD with step dt is the
explicit Euler scheme of either flow.
"""

import abc

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from . import _validation as check
from ._custom_types import default_float_dtype
from ._objectives import AbstractObjective


KERNELS = ("moment", "exp")


class AbstractSpectral(eqx.Module):
    """A state of the reduced dynamics: anything that yields (Ω, M), each of shape (H, n)."""

    @abc.abstractmethod
    def spectral(self) -> tuple[Float[Array, "H n"], Float[Array, "H n"]]:
        """Return (Ω, M)."""


class MergedSpectral(AbstractSpectral):
    """(Ω, M) as free parameters: gradient descent on them is the merged flow."""

    omega: Float[Array, "H n"]
    mu: Float[Array, "H n"]

    def spectral(self):
        return self.omega, self.mu


class FactorizedSpectral(AbstractSpectral):
    """ω = q·k and μ = o·v elementwise: gradient descent on (q, k, o, v) is the factorized flow."""

    q: Float[Array, "H n"]
    k: Float[Array, "H n"]
    o: Float[Array, "H n"]
    v: Float[Array, "H n"]

    def spectral(self):
        return self.q * self.k, self.o * self.v


def balanced_factorization(
    omega: Float[Array, "H n"], mu: Float[Array, "H n"]
) -> FactorizedSpectral:
    """The balanced factorization of (Ω, M): q = √|ω|, k = sign(ω)√|ω|, likewise o and v."""
    q, o = jnp.sqrt(jnp.abs(omega)), jnp.sqrt(jnp.abs(mu))
    return FactorizedSpectral(q=q, k=jnp.sign(omega) * q, o=o, v=jnp.sign(mu) * o)


def reduced_loss(
    omega: Float[Array, "H n"],
    mu: Float[Array, "H n"],
    *,
    block_sizes: tuple[int, ...],
    context_len: int,
    context_noise: float = 0.0,
    query_noise: float = 0.0,
    kernel: str = "moment",
) -> Float[Array, ""]:
    """ℓ(Ω, M), summed over tasks (see the module docstring). NaN where the moment form is
    undefined (2 ω_{h,j} ω_{h',j} ≥ 1); the trainer then freezes and flags the member."""
    sizes = jnp.asarray(block_sizes, omega.dtype)
    cross = omega[:, None, :] * omega[None, :, :]
    if kernel == "moment":
        kernel_matrix = jnp.prod((1 - 2 * cross) ** (-sizes[None, None, :] / 2), axis=-1)
    else:
        kernel_matrix = jnp.exp(jnp.sum(cross * sizes[None, None, :], axis=-1))
    aligned = jnp.sum(mu * omega, axis=0)
    fluctuation = jnp.einsum("hi,gi,hg->i", mu, mu, kernel_matrix)
    per_task = (
        query_noise**2
        + sizes * (1 - aligned) ** 2
        + (sizes + context_noise**2) / context_len * fluctuation
    )
    return jnp.sum(per_task)


class ReducedLoss(AbstractObjective):
    """The reduced population loss ℓ(Ω, M) as an objective (deterministic: `draw` is empty).

    **Arguments:**

    - `block_sizes`: r_i = |S_i| for each task, e.g. `(16, 17, 17)`.
    - `context_len`: L.
    - `context_noise`, `query_noise`: label noise standard deviations σ, σ_q.
    - `kernel`: `"moment"` (Gaussian-moment product; use for quantitative work) or `"exp"`.
    """

    block_sizes: tuple[int, ...] = eqx.field(static=True)
    context_len: int = eqx.field(static=True)
    context_noise: float
    query_noise: float
    kernel: str = eqx.field(static=True)

    def __init__(
        self, block_sizes, context_len, *, context_noise=0.0, query_noise=0.0, kernel="moment"
    ):
        if not block_sizes:
            raise ValueError("`block_sizes` must list at least one block size, got ().")
        self.block_sizes = tuple(check.positive_int("block_sizes", r) for r in block_sizes)
        self.context_len = check.positive_int("context_len", context_len)
        self.context_noise = check.finite_nonnegative("context_noise", context_noise)
        self.query_noise = check.finite_nonnegative("query_noise", query_noise)
        self.kernel = check.one_of("kernel", kernel, KERNELS)

    def draw(self, key: PRNGKeyArray) -> None:
        return None

    def evaluate(self, model: AbstractSpectral, data: None) -> Float[Array, ""]:
        omega, mu = model.spectral()
        if omega.shape[1] != len(self.block_sizes):
            raise ValueError(
                f"the state has {omega.shape[1]} tasks but `block_sizes` has "
                f"{len(self.block_sizes)}."
            )
        return reduced_loss(
            omega,
            mu,
            block_sizes=self.block_sizes,
            context_len=self.context_len,
            context_noise=self.context_noise,
            query_noise=self.query_noise,
            kernel=self.kernel,
        )


def optimal_allocation_losses(
    block_sizes: tuple[int, ...],
    context_len: int,
    *,
    context_noise: float = 0.0,
    query_noise: float = 0.0,
    grid: int = 200_001,
) -> tuple[float, float]:
    """Optimal reduced loss (moment form) of one head serving all tasks, and of strict
    allocation (one head per task). Returns `(single_head, one_head_per_task)`.

    For fixed ω the loss is quadratic in μ, with minimizer μ_i = r_i ω_i / (r_i ω_i² + c_i K),
    c_i = (r_i + σ²)/L, K = Π_j (1 − 2ω_j²)^{−r_j/2}, leaving ℓ_i = r_i c_i K / (r_i ω_i² + c_i K)
    + σ_q². Strict allocation decouples into one-task problems; the single head is taken with
    one ω shared by all tasks (exact for equal blocks, by symmetry). Each is then a 1-D
    minimization over ω ∈ (0, 1/√2), solved on a grid of `grid` points.
    """
    sizes = jnp.asarray(block_sizes, default_float_dtype())
    omega = jnp.linspace(0.0, 1 / jnp.sqrt(2.0), grid + 1)[1:-1]
    c = (sizes + context_noise**2) / context_len

    def per_task_loss(omega_sq, r, c_task, log_kernel):
        kernel = jnp.exp(log_kernel)
        return r * c_task * kernel / (r * omega_sq + c_task * kernel) + query_noise**2

    log_one = -(sizes[:, None] / 2) * jnp.log1p(-2 * omega[None, :] ** 2)
    strict = per_task_loss(omega[None, :] ** 2, sizes[:, None], c[:, None], log_one).min(axis=1)
    log_all = log_one.sum(axis=0)
    single = per_task_loss(omega[None, :] ** 2, sizes[:, None], c[:, None], log_all[None, :])
    return float(single.sum(axis=0).min()), float(strict.sum())
