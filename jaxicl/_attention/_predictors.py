"""Reference in-context predictors, each a function of one prompt, and their closed-form risks.

These are what trained attention is compared with (He et al. 2025): ridge regression (Bayes
optimal at λ = σ² d for β ~ N(0, I/d)), one step of gradient descent from β = 0, the debiased
GD step that multi-head softmax attention learns, and the single-head kernel smoother. Each
output column of the labels is treated as its own regression on the full input x.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._tasks._prompt import Prompt


def ridge_prediction(prompt: Prompt, *, ridge: float) -> Float[Array, " n_out"]:
    """ŷ = x_qᵀ (XᵀX + λI)⁻¹ XᵀY. λ = 0 is least squares (needs L >= d)."""
    d = prompt.x.shape[-1]
    gram = prompt.x.T @ prompt.x + ridge * jnp.eye(d, dtype=prompt.x.dtype)
    beta_hat = jnp.linalg.solve(gram, prompt.x.T @ prompt.y)
    return prompt.query_x @ beta_hat


def gd_prediction(prompt: Prompt, *, step: float) -> Float[Array, " n_out"]:
    """One gradient step of size η on ½ mean_l (y_l − βᵀx_l)² from β = 0: ŷ = (η/L) x_qᵀ XᵀY."""
    context_len = prompt.x.shape[0]
    return step * (prompt.query_x @ (prompt.x.T @ prompt.y)) / context_len


def debiased_gd_prediction(prompt: Prompt, *, step: float) -> Float[Array, " n_out"]:
    """The debiased GD step: ŷ = (η/L) Σ_l y_l (x_l − x̄)ᵀ x_q (He et al. 2025)."""
    centred = prompt.x - prompt.x.mean(axis=0, keepdims=True)
    context_len = prompt.x.shape[0]
    return step * (prompt.query_x @ (centred.T @ prompt.y)) / context_len


def kernel_smoother_prediction(
    prompt: Prompt, *, omega: float, mu: float
) -> Float[Array, " n_out"]:
    """Single-head softmax smoother: ŷ = μ Σ_l softmax_l(ω x_lᵀ x_q) y_l."""
    weights = jax.nn.softmax(omega * (prompt.x @ prompt.query_x))
    return mu * (weights @ prompt.y)


def gd_risk(*, d: int, context_len: int, step: float, context_noise: float, query_noise: float):
    """Exact E(ŷ_GD − y_q)² for isotropic x, β ~ N(0, I/d) (from E[(XᵀX)²] = L(L+d+1) I).

    = σ_q² + 1 − 2η + η²(L+d+1)/L + η² σ² d / L.
    """
    L, eta, s2 = context_len, step, context_noise**2
    return query_noise**2 + 1 - 2 * eta + eta**2 * (L + d + 1) / L + eta**2 * s2 * d / L


def debiased_gd_risk(
    *, d: int, context_len: int, step: float, context_noise: float, query_noise: float
):
    """Exact risk of the debiased GD step (centred Gram matrix ~ Wishart(L − 1)).

    = σ_q² + 1 − 2η(L−1)/L + η²(L−1)(L+d)/L² + η² σ² d (L−1)/L².
    """
    L, eta, s2 = context_len, step, context_noise**2
    m = L - 1
    return (
        query_noise**2
        + 1
        - 2 * eta * m / L
        + eta**2 * m * (L + d) / L**2
        + eta**2 * s2 * d * m / L**2
    )


def optimal_gd_step(*, d: int, context_len: int, context_noise: float, debiased: bool = False):
    """The step η minimizing `gd_risk` (or `debiased_gd_risk`): both risks are quadratic in η.

    Plain GD: L / (L + d(1 + σ²) + 1). Debiased GD: L / (L + d(1 + σ²)).
    """
    width = context_len + d * (1 + context_noise**2)
    return context_len / (width if debiased else width + 1)


def least_squares_risk(*, d: int, context_len: int, context_noise: float, query_noise: float):
    """Exact risk of least squares (λ = 0) for L > d + 1: σ_q² + σ² d / (L − d − 1)."""
    if context_len <= d + 1:
        raise ValueError(
            f"`context_len` must exceed d + 1 = {d + 1} for a finite risk, got {context_len}."
        )
    return query_noise**2 + context_noise**2 * d / (context_len - d - 1)


def ridge_risk_given_inputs(
    x: Float[Array, "n_ctx d"], *, ridge: float, context_noise: float, query_noise: float
) -> Float[Array, ""]:
    """Risk of ridge averaged over β ~ N(0, I/d), noise and x_q, with the context inputs fixed.

    With A = XᵀX + λI: σ_q² + ‖A⁻¹XᵀX − I‖_F² / d + σ² tr(A⁻¹ XᵀX A⁻¹).
    Averaging it over X gives the population risk with far less variance than sampling β.
    """
    d = x.shape[-1]
    gram = x.T @ x
    solved = jnp.linalg.solve(gram + ridge * jnp.eye(d, dtype=x.dtype), gram)
    bias = jnp.sum((solved - jnp.eye(d, dtype=x.dtype)) ** 2) / d
    variance = context_noise**2 * jnp.trace(
        jnp.linalg.solve(gram + ridge * jnp.eye(d, dtype=x.dtype), solved.T)
    )
    return query_noise**2 + bias + variance


@eqx.filter_jit
def kernel_smoother_risk(prompts: Prompt, omegas) -> Float[Array, ""]:
    """Risk of the best single-head smoother ŷ = μ Σ_l softmax(ω x_lᵀx_q) y_l over a grid of
    `omegas`, on a sample of `prompts` (stacked), with μ optimal in closed form for each ω:
    risk = E[y_q²] − E[s y_q]² / E[s²] (in-sample μ: optimistic by O(1/prompts))."""

    def risk(omega):
        weights = jax.nn.softmax(omega * jnp.einsum("pld,pd->pl", prompts.x, prompts.query_x))
        smooth = jnp.einsum("pl,plo->p", weights, prompts.y)
        target = prompts.query_y[:, 0]
        return jnp.mean(target**2) - jnp.mean(smooth * target) ** 2 / jnp.mean(smooth**2)

    return jax.vmap(risk)(omegas).min()
