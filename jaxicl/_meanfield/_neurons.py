"""Neurons and measures over them: the feature map h_µ(x) = ∫ a σ(wᵀx) µ(dθ) of Kim & Suzuki.

A measure is held as M weighted particles θ_j = (a_j, w_j) with masses m_j ≥ 0, Σ m_j = 1:
h_µ(x) = Σ_j m_j a_j σ(w_jᵀx). Uniform masses 1/M are the empirical measure of M particles;
zero masses pad a measure to a common size, so measures with different numbers of particles
can share one compiled program (a sweep over M is one vmap).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from .. import _validation as check
from .._custom_types import default_float_dtype
from ._activations import AbstractActivation, activation_of


def neuron(
    a: Float[Array, " k"], w: Float[Array, " d"], x: Float[Array, " d"], activation
) -> Float[Array, " k"]:
    """One neuron h_θ(x) = a σ(wᵀx)."""
    return a * activation_of(activation)(jnp.dot(w, x))


class NeuronMeasure(eqx.Module):
    """A measure over neurons θ = (a, w), held as weighted particles.

    **Fields:**

    - `a`: output weights, `(n_particles, k)`.
    - `w`: input weights, `(n_particles, d)`.
    - `mass`: particle masses, `(n_particles,)`, nonnegative, summing to 1.
    - `activation`: σ, e.g. `Sigmoid()` (the paper's default), `Tanh()` or `ReLU()`, or its
      name `"sigmoid"`, `"tanh"`, `"relu"`.
    """

    a: Float[Array, "n_particles k"]
    w: Float[Array, "n_particles d"]
    mass: Float[Array, " n_particles"]
    activation: AbstractActivation = eqx.field(static=True, converter=activation_of)

    def features(self, x: Float[Array, " d"]) -> Float[Array, " k"]:
        """h_µ(x) = Σ_j m_j a_j σ(w_jᵀx) (as two products: vmapped over inputs, matmuls)."""
        return (self.mass * self.activation(self.w @ x)) @ self.a

    @property
    def n_particles(self) -> int:
        return self.a.shape[-2]


def uniform_measure(
    a: Float[Array, "n_particles k"],
    w: Float[Array, "n_particles d"],
    activation: "AbstractActivation | str",
) -> NeuronMeasure:
    """The empirical measure of the particles (a_j, w_j): masses 1/M."""
    mass = jnp.full(a.shape[0], 1.0 / a.shape[0], a.dtype)
    return NeuronMeasure(a=a, w=w, mass=mass, activation=activation)


def random_measure(
    *,
    n_particles: int,
    k: int,
    d: int,
    a_scale: float = 1.0,
    w_scale: float = 1.0,
    coupled: bool = True,
    activation: "AbstractActivation | str" = "sigmoid",
    padded_to: int | None = None,
    dtype=None,
    key: PRNGKeyArray,
) -> NeuronMeasure:
    """M i.i.d. particles with w ~ N(0, w_scale² I_d / d) and masses 1/M; the output weights
    are:

    - `coupled=False`: a ~ N(0, a_scale² I_k), independent of w. Then h_µ = E[a] E[σ(wᵀx)] = 0
      for the limit measure: features are M^{-1/2} fluctuations, Σ_µµ degenerates as M grows
      and velocities grow like √M (L is scale-invariant in a, its velocity ∝ 1/‖h_µ‖). Fine at
      a fixed M; it has no mean-field limit.
    - `coupled=True` (default): a = a_scale ((d / w_scale) w_{1:k} + z), z ~ N(0, I_k) (needs
      k ≤ d). By Stein's lemma the limit features are h_µ(x) = a_scale w_scale E[σ'(wᵀx)]
      x_{1:k}: non-degenerate and O(a_scale), so the flow has a mean-field limit to converge to
      as M grows, and W_µ = Σ_µµ⁻¹ is O(1/a_scale²).

    `padded_to` appends zero-mass particles up to that size (they never move or matter), so
    measures of different M stack into one ensemble. Particle j is the same draw for every M
    and padding: growing M adds particles to the same sample.
    """
    check.positive_int("n_particles", n_particles)
    check.positive_int("k", k)
    check.positive_int("d", d)
    check.finite_positive("a_scale", a_scale)
    check.finite_positive("w_scale", w_scale)
    activation = activation_of(activation)
    check.one_of("coupled", coupled, (True, False))
    if coupled and k > d:
        raise ValueError(f"`coupled=True` needs k <= d, got k={k}, d={d}.")
    size = n_particles if padded_to is None else check.positive_int("padded_to", padded_to)
    if size < n_particles:
        raise ValueError(f"`padded_to` ({padded_to}) must be >= `n_particles` ({n_particles}).")
    dtype = default_float_dtype(dtype)
    keys = jax.vmap(lambda j: jr.split(jr.fold_in(key, j)))(jnp.arange(size))
    a = a_scale * jax.vmap(lambda ks: jr.normal(ks[0], (k,), dtype))(keys)
    w = (w_scale / d**0.5) * jax.vmap(lambda ks: jr.normal(ks[1], (d,), dtype))(keys)
    if coupled:
        a = a + (a_scale * d / w_scale) * w[:, :k]
    mass = jnp.where(jnp.arange(size) < n_particles, 1.0 / n_particles, 0.0).astype(dtype)
    return NeuronMeasure(a=a, w=w, mass=mass, activation=activation)


def symmetric_measure(
    *,
    n_particles: int,
    k: int,
    d: int,
    activation: "AbstractActivation | str" = "sigmoid",
    dtype=None,
    key,
) -> NeuronMeasure:
    """All M particles at one point θ_0 (a ~ N(0, I_k), w ~ N(0, I_d / d)): rank-1 features,
    a configuration the noiseless flow keeps (every particle has the same velocity)."""
    one = random_measure(
        n_particles=1, k=k, d=d, coupled=False, activation=activation, dtype=dtype, key=key
    )
    a = jnp.repeat(one.a, n_particles, axis=0)
    w = jnp.repeat(one.w, n_particles, axis=0)
    return uniform_measure(a, w, activation)
