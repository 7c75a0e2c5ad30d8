"""Moves applied to the particles between Euler steps: perturbations and birth–death.

Each move is `(model, data, step, key) -> model`, the trainer's `after_step`. Zero-mass padding
particles are never touched. `step` is the same for every member, so a move scheduled every
`every` steps is a real branch (no work on the other steps), even inside a vmapped ensemble.
"""

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import PRNGKeyArray

from .. import _validation as check
from ._flow import inverse_mass
from ._loss import first_variation, two_timescale_loss
from ._model import FeatureAttention


def _move(model: FeatureAttention, da, dw) -> FeatureAttention:
    p = model.particles
    return eqx.tree_at(lambda m: (m.particles.a, m.particles.w), model, (p.a + da, p.w + dw))


def _particle_normals(key, particles):
    """Standard normals shaped like (a, w); particle j's draw depends on j only, not on M or
    on padding."""

    def one(j):
        ka, kw = jr.split(jr.fold_in(key, j))
        return jr.normal(ka, particles.a.shape[1:], particles.a.dtype), jr.normal(
            kw, particles.w.shape[1:], particles.w.dtype
        )

    return jax.vmap(one)(jnp.arange(particles.n_particles))


def _every(every: int, step, move, model):
    return lax.cond(step % every == 0, move, lambda m: m, model)


class IsotropicPerturbation(eqx.Module):
    """θ_j ← θ_j + size · ξ_j, ξ_j ~ N(0, I) in (a, w), every `every` steps."""

    size: float
    every: int = eqx.field(static=True, default=1)

    def __check_init__(self):
        check.finite_positive("size", self.size)
        check.positive_int("every", self.every)

    def __call__(self, model: FeatureAttention, data, step, key: PRNGKeyArray):
        del data

        def perturb(model):
            p = model.particles
            live = (p.mass > 0)[:, None]
            za, zw = _particle_normals(key, p)
            da = jnp.where(live, self.size * za, 0.0)
            dw = jnp.where(live, self.size * zw, 0.0)
            return _move(model, da, dw)

        return _every(self.every, step, perturb, model)


class HessianPerturbation(eqx.Module):
    """Hessian-guided perturbation (Yamamoto, Kim & Suzuki 2025): ξ ~ GP(0, K_µ) with
    K_µ(θ, θ') = ∫ ∇²_µL(θ, z) ∇²_µL(z, θ') µ(dz), every `every` steps.

    Particle form: ∇²_µL(θ_i, θ_j) ≈ ∂²L/∂θ_i∂θ_j / (m_i m_j), so ξ_i = (1/m_i) Σ_j
    ∂²L/∂θ_i∂θ_j u_j with u_j = z_j / √m_j, z_j ~ N(0, I): one Hessian-vector product of L (the
    two-timescale loss on the step's inputs). The sample is then rescaled so that its mean
    squared norm per particle equals an isotropic draw's (k + d): `size` means the same for
    both perturbations and only the direction differs.
    """

    size: float
    every: int = eqx.field(static=True, default=1)
    jitter: float | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        check.finite_positive("size", self.size)
        check.positive_int("every", self.every)

    def __call__(self, model: FeatureAttention, data, step, key: PRNGKeyArray):
        x, f = data[0], data[1]  # the step's input sample (and, in context, its prompts)

        def perturb(model):
            p = model.particles
            inverse = inverse_mass(p.mass)[:, None]
            za, zw = _particle_normals(key, p)
            u = (za * jnp.sqrt(inverse), zw * jnp.sqrt(inverse))

            def loss(a, w):
                moved = eqx.tree_at(lambda q: (q.a, q.w), p, (a, w))
                return two_timescale_loss(moved, x, f, self.jitter)

            _, (ha, hw) = jax.jvp(jax.grad(loss, argnums=(0, 1)), (p.a, p.w), u)
            xa, xw = ha * inverse, hw * inverse
            n_live = jnp.sum(p.mass > 0).astype(p.a.dtype)
            norm2 = jnp.sum(xa**2) + jnp.sum(xw**2)
            target2 = n_live * (p.a.shape[1] + p.w.shape[1])
            scale = self.size * jnp.sqrt(target2 / jnp.maximum(norm2, jnp.finfo(norm2.dtype).tiny))
            return _move(model, scale * xa, scale * xw)

        return _every(self.every, step, perturb, model)


class BirthDeath(eqx.Module):
    """Birth–death of particles at rates from the centred first variation (Rotskoff et al.'s
    particle form of the birth–death term used for the paper's global rates).

    With V̄_j = δL/δµ(θ_j) − Σ_i m_i δL/δµ(θ_i), in a step of flow time `dt` particle j jumps with
    probability 1 − exp(−rate · dt · |V̄_j|): if V̄_j > 0 (worse than average) it dies and takes
    the place of a copy of a particle drawn by mass; if V̄_j < 0 it is born, overwriting a
    particle drawn by mass. The number of particles stays M. Two events drawing the same slot in
    one step resolve as the last write; with rate · dt · |V̄| small that is rare.
    """

    rate: float
    dt: float
    jitter: float | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        check.finite_positive("rate", self.rate)
        check.finite_positive("dt", self.dt)

    def __call__(self, model: FeatureAttention, data, step, key: PRNGKeyArray):
        del step
        x, f = data[0], data[1]  # the step's input sample (and, in context, its prompts)
        p = model.particles
        potential = first_variation(p, x, f, self.jitter)
        centred = potential - p.mass @ potential
        jump_key, partner_key = jr.split(key)
        probability = -jnp.expm1(-self.rate * self.dt * jnp.abs(centred))
        jump = (jr.uniform(jump_key, centred.shape, centred.dtype) < probability) & (p.mass > 0)
        partner = jr.categorical(partner_key, jnp.log(p.mass), shape=centred.shape)
        dies = jump & (centred > 0)
        born = jump & (centred < 0)
        n = centred.shape[0]
        target = jnp.where(born, partner, n)  # index n is out of range: dropped

        def redistribute(values):
            values_after_deaths = jnp.where(dies[:, None], values[partner], values)
            return values_after_deaths.at[target].set(values, mode="drop")

        return eqx.tree_at(
            lambda m: (m.particles.a, m.particles.w), model, (redistribute(p.a), redistribute(p.w))
        )


class AfterSteps(eqx.Module):
    """Several moves in order, each with its own key."""

    moves: tuple

    def __call__(self, model, data, step, key: PRNGKeyArray):
        for i, move in enumerate(self.moves):
            model = move(model, data, step, jr.fold_in(key, i))
        return model
