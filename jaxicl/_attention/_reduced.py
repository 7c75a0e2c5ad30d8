"""Reduced population dynamics of multi-head softmax attention on the H×n matrices (Ω, M).

Under the decomposable ansatz W_h = Σ_i ω_{h,i} diag(1_{S_i}) ⊕ 0 and
U_h = Σ_i μ_{h,i} e_i e_{d+i}ᵀ, Gaussian symmetry keeps gradient flow on the ansatz, and the
population loss (summed over tasks) is, to first order in 1/L,

    ℓ(Ω, M) = Σ_i [ σ_q² + r_i (1 − Σ_h μ_{h,i} ω_{h,i} / (1 + κ_{h,i}))²
                    + (1/L) Σ_{h,h'} μ_{h,i} μ_{h',i} K_{hh'} V_{hh',i} ],

    K_{hh'} = Π_j (1 − 2 ω_{h,j} ω_{h',j})^{−r_j/2},   κ_{h,i} = K_{hh} / (L (1 − 2 ω_{h,i}²)),
    V_{hh',i} = r_i + σ² + r_i ω_{h,i} ω_{h',i} / (1 − 2 ω_{h,i} ω_{h',i}).

Derivation (block sizes r_i = |S_i|, β_i ~ N(0, I), c_i = β_iᵀx_{q,S_i} the query target).
Head h's logits are s_{h,l} = Σ_j ω_{h,j} x_{l,S_j}ᵀx_{q,S_j}; its output for task i is the
ratio estimator A_h/B_h, A_h = (1/L)Σ_l e^{s_{h,l}} y_{l,i}, B_h = (1/L)Σ_l e^{s_{h,l}}. Given
(x_q, β), the tilt e^{s_h} shifts x_{l,S_j} to N(ω_{h,j} x_{q,S_j}, I), so E A_h / E B_h =
ω_{h,i} c_i exactly, and E[e^{s_h + s_h'}] / (E e^{s_h} E e^{s_h'}) = exp(Σ_j ω_{h,j} ω_{h',j}
‖x_{q,S_j}‖²). Write A_h/B_h = ω_{h,i} c_i + δ_h + b_h with
- δ_h = (A_h − ω_{h,i} c_i B_h)/E B_h, conditionally mean-zero, covariance (1/L) E[e^{s_h+s_h'}
  (y − ω_h c)(y − ω_h' c)]/(E e^{s_h} E e^{s_h'}). Under the joint tilt y_{l,i} has mean
  (ω_{h,i} + ω_{h',i}) c_i and variance ‖β_i‖² + σ², so the product has mean ‖β_i‖² + σ² +
  ω_{h,i} ω_{h',i} c_i² (the *tilt variance*). Averaging over x_q and β with
  E‖x‖² e^{a‖x‖²} = r (1 − 2a)^{−r/2−1} gives the K V term.
- b_h = E[A_h/B_h] − E A_h/E B_h = (m Var B − Cov(A, B))/(E B)² + O(L^{-2})
  = −(1/L) ω_{h,i} c_i exp(Σ_j ω_{h,j}² ‖x_{q,S_j}‖²) (the *ratio bias*: the doubly tilted
  mean of y is 2 ω c). It enters the loss through the cross term −2 c_i (1 − p_i) Σ_h μ_{h,i} b_h
  (p_i = Σ_h μ_{h,i} ω_{h,i}), which averages to (2/L)(1 − p_i) Σ_h μ_{h,i} ω_{h,i} r_i K_{hh}
  / (1 − 2 ω_{h,i}²) = 2 r_i (1 − p_i) Σ_h μ_{h,i} ω_{h,i} κ_{h,i}, using E[c² e^{a‖x‖²}] =
  r K/(1 − 2a) on the own block.
The shrunken slope ω/(1 + κ) in the square is that cross term resummed: expanded, the square is
r_i (1 − p_i)² + 2 r_i (1 − p_i) Σ_h μ_{h,i} ω_{h,i} κ_{h,i} + O(L^{-2}), the same to first
order. Written as a square, ℓ ≥ σ_q² everywhere (the fluctuation term is the average of a
covariance, so it is ≥ 0 too); the bare first-order sum is not bounded below in μ where
K_{hh}/L is not small (ω_{h,i}² > 1/3 at small L), and a flow can run off to −∞ there.
Both corrections are first order in 1/L, and Monte Carlo of the full model shows both matter
(`ansatz_monte_carlo_loss`; tests/test_reduced_convergence.py): without the tilt variance the
error of ℓ grows with L at the strict-allocation optimum (−9% at L = 100 to −16% at 6400 at
r = 5); without the ratio bias about 25–30% of the O(1/L) part is missing wherever
1 − p_i = O(1) (warm-up, random and mixed-sign points). With both, the error of the O(1/L) part
shrinks as L grows. The ratio bias is O(1/L²) at an optimum (1 − p_i = O(1/L) there).
The expansion needs 2 ω_{h,j} ω_{h',j} < 1; the loss is NaN beyond (the trainer then freezes and
flags the member). Only the Gaussian-moment kernel K is kept: its small-ω form
exp(Σ_j r_j ω_{h,j} ω_{h',j}) is not the O(1/L) coefficient at finite ω.

Two states drive two flows with the same loss: `MergedSpectral` (gradient flow on Ω, M) and
`FactorizedSpectral` (ω = q k, μ = o v; gradient flow on q, k, o, v from a balanced start keeps
q² = k², o² = v² and the signs, and gives dω/dt = −2|ω| ∂ℓ/∂ω). Plain SGD with step dt is the
explicit Euler scheme of either flow.
"""

import abc
from typing import ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .. import _validation as check
from .._custom_types import default_float_dtype
from .._train._objectives import AbstractObjective
from ._reduced_derivative import along_tasks, derived_reduced_loss, expansion_terms


class AbstractSpectral(eqx.Module):
    """A state of the reduced dynamics: anything that yields (Ω, M), each of shape (H, n).

    `trailing_members` (class attribute, default False): True when `spectral()` also works,
    elementwise, on leaves with trailing member axes (H, n, *members), giving (Ω, M) with the
    same axes. `ReducedLoss.evaluate_members` then moves the members' axis of the leaves, not
    of (Ω, M), to the end: XLA forms Ω and M once per chunk instead of once in every fusion
    that reads them (2.4× faster on a CPU). Otherwise it maps `spectral()` member by member."""

    trailing_members: ClassVar[bool] = False

    @abc.abstractmethod
    def spectral(self) -> tuple[Float[Array, "H n"], Float[Array, "H n"]]:
        """Return (Ω, M)."""


class MergedSpectral(AbstractSpectral):
    """(Ω, M) as free parameters: gradient descent on them is the merged flow."""

    omega: Float[Array, "H n"]
    mu: Float[Array, "H n"]
    trailing_members: ClassVar[bool] = True

    def spectral(self):
        return self.omega, self.mu


class FactorizedSpectral(AbstractSpectral):
    """ω = q·k and μ = o·v elementwise: gradient descent on (q, k, o, v) is the factorized flow."""

    q: Float[Array, "H n"]
    k: Float[Array, "H n"]
    o: Float[Array, "H n"]
    v: Float[Array, "H n"]
    trailing_members: ClassVar[bool] = True

    def spectral(self):
        return self.q * self.k, self.o * self.v


def balanced_factorization(
    omega: Float[Array, "H n"], mu: Float[Array, "H n"]
) -> FactorizedSpectral:
    """The balanced factorization of (Ω, M): q = √|ω|, k = sign(ω)√|ω|, likewise o and v."""
    q, o = jnp.sqrt(jnp.abs(omega)), jnp.sqrt(jnp.abs(mu))
    return FactorizedSpectral(q=q, k=jnp.sign(omega) * q, o=o, v=jnp.sign(mu) * o)


def reduced_loss(
    omega: Float[Array, "H n *members"],
    mu: Float[Array, "H n *members"],
    *,
    block_sizes: tuple[int, ...],
    context_len: int,
    context_noise: float = 0.0,
    query_noise: float = 0.0,
    tilt: bool = True,
    ratio_bias: bool = True,
) -> Float[Array, "*members"]:
    """ℓ(Ω, M), summed over tasks, to first order in 1/L (see the module docstring). NaN where
    2 ω_{h,j} ω_{h',j} ≥ 1. Trailing axes of `omega` and `mu` are members (one loss each):
    with members as the minor axis every array below is vectorized over them.

    `tilt=False` drops the tilt variance, `ratio_bias=False` the ratio bias (the slope is then
    Σ μ ω): ablations, to show against Monte Carlo that each term is needed (without either the
    error does not vanish as L grows). `ReducedLoss` always keeps both. With both kept the
    gradient is written out in closed form (`_reduced_derivative.py`)."""
    if tilt and ratio_bias:
        return derived_reduced_loss(
            omega, mu, tuple(block_sizes), context_len, context_noise, query_noise
        )
    return expanded_reduced_loss(
        omega, mu, block_sizes, context_len, context_noise, query_noise, tilt, ratio_bias
    )


def expanded_reduced_loss(
    omega, mu, block_sizes, context_len, context_noise, query_noise, tilt=True, ratio_bias=True
):
    """`reduced_loss` as a plain expression, differentiated by autodiff: the ablations, and the
    reference its closed-form derivative (`derived_reduced_loss`) is tested against."""
    terms = expansion_terms(omega, block_sizes, context_len, context_noise, tilt)
    fluctuation = jnp.einsum("hi...,gi...,hg...,hgi...->i...", mu, mu, terms.kernel, terms.variance)
    slope = jnp.sum(mu * omega / (1 + terms.shrink) if ratio_bias else mu * omega, axis=0)
    sizes = along_tasks(block_sizes, slope, axis=0)
    per_task = query_noise**2 + sizes * (1 - slope) ** 2 + fluctuation / context_len
    return jnp.sum(per_task, axis=0)


def expansion_trusted(
    omega: Float[Array, "H n"],
    mu: Float[Array, "H n"],
    *,
    block_sizes: tuple[int, ...],
    context_len: int,
    context_noise: float = 0.0,
    max_shrink: float = 0.25,
) -> Array:
    """Whether ℓ(Ω, M) can be trusted at this state (one state, no member axes): the live heads
    (μ ≠ 0 on a task) have a small ratio-bias shrink κ_{h,i} ≤ `max_shrink`, and each task's
    fluctuation matrix (K_{hh'} V_{hh',i}) over the live heads is positive semidefinite, as the
    covariance it approximates is. Beyond that the first-order expansion can go below zero (an
    optimizer finds such states), so a search must not trust them."""
    terms = expansion_terms(omega, block_sizes, context_len, context_noise)
    kernel, variance, shrink = terms.kernel, terms.variance, terms.shrink
    live = jnp.abs(mu) > 1e-6 * jnp.max(jnp.abs(mu))  # (H, n)
    small = jnp.all(jnp.where(live, shrink <= max_shrink, True))
    matrices = jnp.moveaxis(kernel[:, :, None] * variance, -1, 0)  # (n, H, H)
    masks = jnp.moveaxis(live, -1, 0)  # (n, H)
    pairs = (masks[:, :, None] & masks[:, None, :]).astype(matrices.dtype)
    masked = matrices * pairs
    eigenvalues = jnp.linalg.eigvalsh(masked)
    scale = jnp.max(jnp.abs(eigenvalues), axis=-1, keepdims=True)
    psd = jnp.all(eigenvalues >= -1e-6 * scale)
    finite = jnp.all(jnp.isfinite(matrices)) & jnp.all(2 * omega[:, None] * omega[None, :] < 1)
    return small & psd & finite


class ReducedLoss(AbstractObjective):
    """The reduced population loss ℓ(Ω, M) as an objective (deterministic: `draw` is empty).

    **Arguments:**

    - `block_sizes`: r_i = |S_i| for each task, e.g. `(16, 17, 17)`.
    - `context_len`: L.
    - `context_noise`, `query_noise`: label noise standard deviations σ, σ_q.
    - `average_outputs`: `False`: ℓ, summed over the n tasks; `True`: ℓ/n, the normalisation
      of the full model's ICL loss (it averages the n outputs), which the weights' gradient
      flow descends (`WeightFlow`).
    """

    block_sizes: tuple[int, ...] = eqx.field(static=True)
    context_len: int = eqx.field(static=True)
    context_noise: float
    query_noise: float
    average_outputs: bool = eqx.field(static=True)

    def __init__(
        self, block_sizes, context_len, *, context_noise=0.0, query_noise=0.0, average_outputs=False
    ):
        if not block_sizes:
            raise ValueError("`block_sizes` must list at least one block size, got ().")
        self.block_sizes = tuple(check.positive_int("block_sizes", r) for r in block_sizes)
        self.context_len = check.positive_int("context_len", context_len)
        self.context_noise = check.finite_nonnegative("context_noise", context_noise)
        self.query_noise = check.finite_nonnegative("query_noise", query_noise)
        self.average_outputs = check.one_of("average_outputs", average_outputs, (False, True))

    def draw(self, key: PRNGKeyArray) -> None:
        return None

    def evaluate(self, model: AbstractSpectral, data: None) -> Float[Array, ""]:
        return self._loss(*model.spectral())

    def evaluate_members(self, models: AbstractSpectral, data: None) -> Float[Array, " m"]:
        """All members at once with members as the minor axis (structure of arrays): the
        (H, n) states are tiny, and vmap's layout (members major) left the reductions over
        heads and tasks to XLA's slow small-minor-axis loops. A state whose `spectral()` takes
        trailing member axes gets its leaves moved (see `AbstractSpectral`)."""
        if type(models).trailing_members:
            minor = jax.tree_util.tree_map(lambda x: jnp.moveaxis(x, 0, -1), models)
            return self._loss(*minor.spectral())
        omega, mu = eqx.filter_vmap(lambda model: model.spectral())(models)
        return self._loss(jnp.moveaxis(omega, 0, -1), jnp.moveaxis(mu, 0, -1))

    def _loss(self, omega, mu):
        if omega.shape[1] != len(self.block_sizes):
            raise ValueError(
                f"the state has {omega.shape[1]} tasks but `block_sizes` has "
                f"{len(self.block_sizes)}."
            )
        total = reduced_loss(
            omega,
            mu,
            block_sizes=self.block_sizes,
            context_len=self.context_len,
            context_noise=self.context_noise,
            query_noise=self.query_noise,
        )
        return total / len(self.block_sizes) if self.average_outputs else total


class AllocationOptimum(NamedTuple):
    """Optimal reduced losses (summed over tasks) of two head layouts, with fixed signs.

    - `single_head`, `single_head_omega`, `single_head_mu`: one head serves every task, with
      one ω shared by all blocks (the optimum by symmetry for equal blocks) and μ_i per task.
    - `one_head_per_task`, `one_head_per_task_omega`, `one_head_per_task_mu`: strict
      allocation, head i has ω_i, μ_i on task i only (n decoupled one-task problems).
    ω, μ > 0. Mixed-sign heads can go lower (the ± pairs of He et al.); these are the optima
    within the two layouts.
    """

    single_head: float
    single_head_omega: float
    single_head_mu: tuple[float, ...]
    one_head_per_task: float
    one_head_per_task_omega: tuple[float, ...]
    one_head_per_task_mu: tuple[float, ...]


def one_head_task_loss(omega, log_kernel, *, size, context_len, context_noise, query_noise):
    """Task loss of one head with ω on this task and log K_hh = `log_kernel`, at its optimal μ.

    ℓ is quadratic in μ for fixed ω: ℓ = σ_q² + r(1 − μ s)² + μ² K V / L with the shrunken slope
    s = ω/(1 + κ); so ℓ* = σ_q² + r (K V/L) / (r s² + K V/L) at μ* = r s / (r s² + K V/L).
    """
    tilt = 1 / (1 - 2 * omega**2)
    kernel = jnp.exp(log_kernel)
    slope = omega / (1 + kernel * tilt / context_len)
    noise = kernel * (size + context_noise**2 + size * omega**2 * tilt) / context_len
    denominator = size * slope**2 + noise
    return query_noise**2 + size * noise / denominator, size * slope / denominator


def optimal_allocation_losses(
    block_sizes: tuple[int, ...],
    context_len: int,
    *,
    context_noise: float = 0.0,
    query_noise: float = 0.0,
    grid: int = 200_001,
) -> AllocationOptimum:
    """Optimal reduced loss of one head serving all tasks and of strict allocation (one head per
    task); see `AllocationOptimum`. μ is in closed form (`one_head_task_loss`); ω is minimized
    on a grid of `grid` points in (0, 1/√2).

    As L → ∞ the strict optimum has ω_i*² → the smaller root of (r_i + 2)u² − (r_i + 4)u + 1
    = 0 (σ = 0), and the single head's shared ω*² → that of (d + 2)u² − (d + 4)u + 1 = 0: the
    minimizers of K V / ω², the O(1/L) loss left at μ = 1/ω.
    """
    sizes = jnp.asarray(block_sizes, default_float_dtype())
    omega = jnp.linspace(0.0, 1 / jnp.sqrt(2.0), grid + 1)[1:-1]
    log_one = -(sizes[:, None] / 2) * jnp.log1p(-2 * omega[None, :] ** 2)  # (n, grid)
    kwargs = dict(context_len=context_len, context_noise=context_noise, query_noise=query_noise)
    strict, strict_mu = one_head_task_loss(omega[None, :], log_one, size=sizes[:, None], **kwargs)
    single, single_mu = one_head_task_loss(
        omega[None, :], log_one.sum(axis=0)[None, :], size=sizes[:, None], **kwargs
    )
    # Near ω = 1/√2 the kernel overflows (inf/inf): such grid points are simply not optima.
    strict = jnp.where(jnp.isfinite(strict), strict, jnp.inf)
    single_total = single.sum(axis=0)
    single_total = jnp.where(jnp.isfinite(single_total), single_total, jnp.inf)
    best = jnp.argmin(single_total)
    best_strict = jnp.argmin(strict, axis=1)
    tasks = jnp.arange(len(block_sizes))
    return AllocationOptimum(
        single_head=float(single_total[best]),
        single_head_omega=float(omega[best]),
        single_head_mu=tuple(float(m) for m in single_mu[:, best]),
        one_head_per_task=float(strict[tasks, best_strict].sum()),
        one_head_per_task_omega=tuple(float(w) for w in omega[best_strict]),
        one_head_per_task_mu=tuple(float(m) for m in strict_mu[tasks, best_strict]),
    )
