"""The Euler step of the Wasserstein gradient flow, as an optax optimizer for the trainer, and
the two treatments of the attention matrix W.

The flow ∂_t µ = ∇·(µ ∇ δL/δµ) moves each particle with velocity −∇_θ δL/δµ(θ_j). For weighted
particles ∂L/∂θ_j = m_j ∇_θ δL/δµ(θ_j), so the Euler step is θ_j ← θ_j − η ∇_{θ_j} L / m_j:
gradient descent with the step scaled by M for uniform masses. Masses never change by descent
(zero-mass padding particles never move), and neither does W: after each particle step, W is
either set to W_µ (`StaticAttention`, the two-timescale limit) or moved along its own gradient
flow on L_TF for time `ratio · η` (`AttentionFlow`, joint training at a learning-rate ratio).
"""

import equinox as eqx
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from .. import _validation as check
from .._train._trainer import sgd
from ._loss import moments, with_optimal_attention
from ._model import FeatureAttention


def inverse_mass(mass: Float[Array, " n_particles"]) -> Float[Array, " n_particles"]:
    """1/m_j for particles with mass, 0 for zero-mass padding."""
    positive = mass > 0
    return jnp.where(positive, 1.0 / jnp.where(positive, mass, 1.0), 0.0)


def particle_flow(learning_rate) -> optax.GradientTransformation:
    """Explicit Euler steps of size `learning_rate` of the particle flow (W is left to the
    attention treatment). The trainer records the flow time Σ `learning_rate`."""

    def to_velocity(updates: FeatureAttention, params: FeatureAttention | None = None):
        scale = inverse_mass(params.particles.mass)[:, None]
        return eqx.tree_at(
            lambda m: (m.particles.a, m.particles.w, m.particles.mass, m.W),
            updates,
            (
                updates.particles.a * scale,
                updates.particles.w * scale,
                jnp.zeros_like(updates.particles.mass),
                jnp.zeros_like(updates.W),
            ),
        )

    return optax.chain(sgd(learning_rate), optax.stateless(to_velocity))


class StaticAttention(eqx.Module):
    """After each step, W ← W_µ on that step's inputs: the two-timescale limit in which the
    attention is always at its optimum (so the recorded L_TF equals L)."""

    jitter: float | None = eqx.field(static=True, default=None)

    def __call__(self, model: FeatureAttention, data, step, key: PRNGKeyArray) -> FeatureAttention:
        del step, key
        x, f = data[0], data[1]  # the step's input sample (and, in context, its prompts)
        return with_optimal_attention(model, x, f, self.jitter)


class AttentionFlow(eqx.Module):
    """After each particle step, W follows its gradient flow on L_TF, dW/dt = −ratio ·
    Σµ°Σ°µ (W Σµµ − I), for the step's flow time `dt` with the particles held fixed: joint
    training of W at `ratio` times the particles' rate.

    The flow is linear in W, so it is integrated exactly: in the eigenbases P = U diag(λ) Uᵀ of
    Σµ°Σ°µ and Σµµ = V diag(ν) Vᵀ, W̃ = UᵀWV relaxes entrywise,
      W̃_ij ← W̃_ij e^{−c_ij} + (UᵀV)_ij (1 − e^{−c_ij}) / ν_j,  c_ij = ratio · dt · λ_i ν_j.
    Explicit Euler would be unstable once ratio · dt · λ_max ν_max > 2, tying the usable ratio to
    the scale of the features; the exact step is stable for every ratio, and ratio → ∞ gives
    W = Σµµ⁻¹ = W_µ, the static limit.
    """

    ratio: float
    dt: float

    def __check_init__(self):
        check.finite_positive("attention_ratio", self.ratio)
        check.finite_positive("dt", self.dt)

    def __call__(self, model: FeatureAttention, data, step, key: PRNGKeyArray) -> FeatureAttention:
        del step, key
        x, f = data[0], data[1]  # the step's input sample (and, in context, its prompts)
        _, sigma, cross = moments(model.particles, x, f)
        lam, u = jnp.linalg.eigh(cross.T @ cross)
        nu, v = jnp.linalg.eigh(sigma)
        lam, nu = jnp.maximum(lam, 0.0), jnp.maximum(nu, 0.0)
        c = (self.ratio * self.dt) * jnp.outer(lam, nu)
        decay = jnp.exp(-c)
        # (1 − e^{−c}) / ν, continued to ratio · dt · λ at ν = 0
        safe_nu = jnp.where(nu > 0, nu, 1.0)[None, :]
        gain = jnp.where(
            nu[None, :] > 0, -jnp.expm1(-c) / safe_nu, (self.ratio * self.dt) * lam[:, None]
        )
        w_tilde = u.T @ model.W @ v
        w_tilde = w_tilde * decay + (u.T @ v) * gain
        return eqx.tree_at(lambda m: m.W, model, u @ w_tilde @ v.T)
