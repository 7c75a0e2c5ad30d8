"""The Euler step of the Wasserstein gradient flow, as an optax optimizer for the trainer, and
the two treatments of the attention matrix W.

The flow ∂_t µ = ∇·(µ ∇ δL/δµ) moves each particle with velocity −∇_θ δL/δµ(θ_j). For weighted
particles ∂L/∂θ_j = m_j ∇_θ δL/δµ(θ_j), so the Euler step is θ_j ← θ_j − η ∇_{θ_j} L / m_j:
gradient descent with the step scaled by M for uniform masses. Masses never change by descent
(zero-mass padding particles never move), and neither does W: after each particle step, W is
either set to W_µ (`StaticAttention`, the two-timescale limit) or moved along its own gradient
flow on L_TF for time `ratio · η` (`AttentionFlow`, joint training at a learning-rate ratio).
"""

import abc
from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from .. import _validation as check
from .._train._optimizers import sgd
from ._loss import moments, transformer_loss, two_timescale_loss, with_optimal_attention
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


class AbstractAttentionTreatment(eqx.Module):
    """How the attention matrix W is treated while the particles move: the n = ∞ loss the
    particles descend, and the move applied after each of their steps. `name` is how sweep
    files and the command line refer to it; `trained`: whether W moves by its own flow (tied
    to the particles' learning rate)."""

    name: ClassVar[str]
    trained: ClassVar[bool] = False

    @abc.abstractmethod
    def loss(self, model: FeatureAttention, x, f, jitter: float | None) -> Float[Array, ""]:
        """The loss of `model` on inputs `x` with target features `f`."""

    @abc.abstractmethod
    def move(self, *, learning_rate, ratio: float, jitter: float | None) -> eqx.Module:
        """The after-step move of W for particle steps of `learning_rate` (`ratio`: W's rate
        relative to the particles', for a treatment that trains W)."""


class OptimalAttention(AbstractAttentionTreatment):
    """W at its closed-form optimum W_µ after every step; the particles descend L(µ) (the
    two-timescale limit)."""

    name: ClassVar[str] = "static"

    def loss(self, model, x, f, jitter):
        return two_timescale_loss(model.particles, x, f, jitter)

    def move(self, *, learning_rate, ratio, jitter):
        del learning_rate, ratio
        return StaticAttention(jitter)


class JointAttention(AbstractAttentionTreatment):
    """W trained jointly: the particles descend L_TF(µ, W) at the current W, and W follows its
    exact gradient flow on L_TF `ratio` times faster (`AttentionFlow`)."""

    name: ClassVar[str] = "attention"
    trained: ClassVar[bool] = True

    def loss(self, model, x, f, jitter):
        del jitter
        return transformer_loss(model, x, f)

    def move(self, *, learning_rate, ratio, jitter):
        del jitter
        return AttentionFlow(ratio, learning_rate)


ATTENTION_TREATMENTS = {t.name: t for t in (OptimalAttention(), JointAttention())}
