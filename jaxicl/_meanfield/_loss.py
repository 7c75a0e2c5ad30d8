"""Losses of the feature-attention model at n = ∞, from an input sample (Kim & Suzuki §3–4).

With H = h_µ(X), F = f°(X) over N inputs: Σ_{µµ} = HᵀH/N, Σ_{µ°µ} = FᵀH/N, and
  L_TF(µ, W) = ½ E‖f° − Σ_{µ°µ} W h_µ‖²,
  L(µ) = min_W L_TF = ½ E‖ζ‖², ζ = f° − B h_µ, B = Σ_{µ°µ} Σ_{µµ}^{-1}
(the least-squares distance from f° to the span of the k learned features). W_µ = Σ_{µµ}^{-1}
attains the minimum. Label noise only adds the constant ½σ², left out here.

Regularization: Σ_{µµ} is replaced by Σ_{µµ} + λ I with λ = jitter · tr(Σ_{µµ}) / k, a ridge
relative to the features' scale (so it does not depend on the scale of a). Rank-deficient
features (e.g. all particles at one point) then have a well-defined L; `jitter = 0` is the exact
loss. The default is 1e-6 in float32 and 1e-12 in float64.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._model import FeatureAttention
from ._neurons import NeuronMeasure


Inputs = Float[Array, "n d"]
TargetFeatures = Float[Array, "n k"]


def default_jitter(dtype) -> float:
    return 1e-12 if jnp.dtype(dtype) == jnp.float64 else 1e-6


def _jitter(jitter, dtype) -> float:
    return default_jitter(dtype) if jitter is None else jitter


def moments(
    particles: NeuronMeasure, x: Inputs, f: TargetFeatures
) -> tuple[Float[Array, "n k"], Float[Array, "k k"], Float[Array, "k k"]]:
    """(H, Σ_{µµ}, Σ_{µ°µ}) over the sample: H = h_µ(x) row by row."""
    h = jax.vmap(particles.features)(x)
    n = x.shape[0]
    return h, h.T @ h / n, f.T @ h / n


def regularized(sigma: Float[Array, "k k"], jitter: float) -> Float[Array, "k k"]:
    """Σ + λ I with λ = jitter · tr(Σ) / k."""
    k = sigma.shape[0]
    return sigma + (jitter * jnp.trace(sigma) / k) * jnp.eye(k, dtype=sigma.dtype)


def constant_feature_loss(f: TargetFeatures) -> Float[Array, ""]:
    """L_c = ½ E‖f° − E f°‖² over a sample: the loss when the features carry only constants
    (the scale the experiments report losses against)."""
    return _half_mean_square(f - f.mean(axis=0, keepdims=True))


def optimal_attention(
    particles: NeuronMeasure, x: Inputs, f: TargetFeatures, jitter: float | None = None
) -> Float[Array, "k k"]:
    """W_µ = (Σ_{µµ} + λ I)^{-1}, the minimizer of L_TF(µ, ·) (λ as in the module docstring)."""
    _, sigma, _ = moments(particles, x, f)
    sigma = regularized(sigma, _jitter(jitter, x.dtype))
    return jnp.linalg.solve(sigma, jnp.eye(sigma.shape[0], dtype=sigma.dtype))


def with_optimal_attention(
    model: FeatureAttention, x: Inputs, f: TargetFeatures, jitter: float | None = None
) -> FeatureAttention:
    """`model` with W = W_µ of its particles on (x, f)."""
    return eqx.tree_at(lambda m: m.W, model, optimal_attention(model.particles, x, f, jitter))


def _half_mean_square(residual: Float[Array, "n k"]) -> Float[Array, ""]:
    return 0.5 * jnp.mean(jnp.sum(residual**2, axis=-1))


def _residual(h, sigma, cross, f, jitter):
    """(B, ζ) from the sample moments: B = Σ_{µ°µ} (Σ_{µµ} + λI)^{-1} by a linear solve."""
    sigma = regularized(sigma, _jitter(jitter, f.dtype))
    b = jnp.linalg.solve(sigma, cross.T).T  # Σ is symmetric: B = (Σ^{-1} Σ_{µ°µ}ᵀ)ᵀ
    return b, f - h @ b.T


def readout(
    particles: NeuronMeasure, x: Inputs, f: TargetFeatures, jitter: float | None = None
) -> tuple[Float[Array, "k k"], Float[Array, "n k"], Float[Array, "n k"]]:
    """(B, H, ζ): the least-squares readout B = Σ_{µ°µ} Σ_{µµ}^{-1} (by a linear solve), the
    features H and the residual ζ = F − H Bᵀ."""
    h, sigma, cross = moments(particles, x, f)
    b, residual = _residual(h, sigma, cross, f, jitter)
    return b, h, residual


def losses_from_moments(
    h: Float[Array, "n k"],
    sigma: Float[Array, "k k"],
    cross: Float[Array, "k k"],
    f: TargetFeatures,
    w: Float[Array, "k k"],
    jitter: float | None = None,
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """(L(µ), L_TF(µ, W)) from features and moments already computed (one pass over x)."""
    _, residual = _residual(h, sigma, cross, f, jitter)
    return _half_mean_square(residual), _half_mean_square(f - h @ (cross @ w).T)


def two_timescale_loss(
    particles: NeuronMeasure, x: Inputs, f: TargetFeatures, jitter: float | None = None
) -> Float[Array, ""]:
    """L(µ) = ½ E‖f° − B h_µ‖²: the loss with W at its optimum (the two-timescale limit)."""
    _, _, residual = readout(particles, x, f, jitter)
    return _half_mean_square(residual)


def transformer_loss(model: FeatureAttention, x: Inputs, f: TargetFeatures) -> Float[Array, ""]:
    """L_TF(µ, W) = ½ E‖f° − Σ_{µ°µ} W h_µ‖² at the model's own W."""
    h, _, cross = moments(model.particles, x, f)
    return _half_mean_square(f - h @ (cross @ model.W).T)


def first_variation(
    particles: NeuronMeasure, x: Inputs, f: TargetFeatures, jitter: float | None = None
) -> Float[Array, " n_particles"]:
    """δL/δµ at each particle: −E_x[ζ(x)ᵀ B h_θ(x)]. Its µ-average is 0 (up to the ridge),
    because the least-squares residual ζ is orthogonal to the features."""
    b, _, residual = readout(particles, x, f, jitter)
    activation = particles.activation(particles.w @ x.T)  # (M, n)
    along = particles.a @ (residual @ b).T  # (M, n): ζ(x_n)ᵀ B a_j
    return -jnp.mean(activation * along, axis=-1)
