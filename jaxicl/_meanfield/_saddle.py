"""The geometry of L(µ) near critical points: how fast the flow moves, how a split of particles
curves L, and how L curves along a mixture with another measure (Kim & Suzuki §5).

- The flow's dissipation D(µ) = Σ_j m_j ‖∇_θ δL/δµ(θ_j)‖² = −dL/dt: a measure is near a critical
  point when D is small against the loss there is left to lose.
- Splitting: displace the particles of an atom (particles at one point θ) by mean-zero ε ξ_j.
  The measure's first-order change is zero, so each displacement evolves by the linear flow
  dξ/dt = −S(θ) ξ, S(θ) = ∇²_θ δL/δµ(θ) with µ held fixed. A negative eigenvalue −κ of S makes
  the split grow like e^{κt}, so L leaves the atom's critical point after a time
  (1/κ) log(1/ε) + const. `splitting_curvature` gives λ_min(S) at each particle.
- Mixture: s ↦ L((1 − s)µ + s ν) is not a transport of µ, but the paper's strict-saddle
  statement is along it with ν = R♯µ° (the teacher): its slope and curvature at s = 0 by
  automatic differentiation through the masses.
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._loss import Inputs, TargetFeatures, readout, two_timescale_loss
from ._neurons import ACTIVATIONS, NeuronMeasure


def _pull(particles, x, f, jitter):
    """g(x) = Bᵀ ζ(x) row by row, so that δL/δµ(θ) = −E_x[g(x)ᵀ a σ(wᵀx)] with µ held fixed."""
    b, _, residual = readout(particles, x, f, jitter)
    return residual @ b


def _elementwise(fn, order):
    for _ in range(order):
        fn = jax.grad(fn)
    return jnp.vectorize(fn)


def particle_velocities(
    particles: NeuronMeasure, x: Inputs, f: TargetFeatures, jitter: float | None = None
) -> Float[Array, "n_particles k+d"]:
    """−∇_θ δL/δµ(θ_j) = (E[g σ(w_jᵀx)], E[(gᵀa_j) σ'(w_jᵀx) x]): each particle's velocity
    under the flow, (a, w) concatenated."""
    g = _pull(particles, x, f, jitter)
    act = ACTIVATIONS[particles.activation]
    pre = particles.w @ x.T  # (M, n)
    n = x.shape[0]
    along_a = act(pre) @ g / n
    along_w = ((particles.a @ g.T) * _elementwise(act, 1)(pre)) @ x / n
    return jnp.concatenate([along_a, along_w], axis=-1)


def dissipation(
    particles: NeuronMeasure, x: Inputs, f: TargetFeatures, jitter: float | None = None
) -> Float[Array, ""]:
    """D(µ) = Σ_j m_j ‖∇_θ δL/δµ(θ_j)‖² = −dL/dt under the flow (zero-mass particles count 0)."""
    v = particle_velocities(particles, x, f, jitter)
    return particles.mass @ jnp.sum(v**2, axis=-1)


def splitting_hessians(
    particles: NeuronMeasure, x: Inputs, f: TargetFeatures, jitter: float | None = None
) -> Float[Array, "n_particles k+d k+d"]:
    """S(θ_j) = ∇²_θ δL/δµ(θ_j) with µ held fixed, (a, w) blocks: S_aa = 0,
    S_aw = −E[g σ'(wᵀx) xᵀ], S_ww = −E[(gᵀa) σ''(wᵀx) x xᵀ] (one pass of products over the
    inputs for every particle; no per-particle automatic Hessian)."""
    g = _pull(particles, x, f, jitter)
    act = ACTIVATIONS[particles.activation]
    pre = particles.w @ x.T  # (M, n)
    n, k = x.shape[0], g.shape[-1]
    aw = -jnp.einsum("nk,jn,nd->jkd", g, _elementwise(act, 1)(pre), x) / n
    weight = (particles.a @ g.T) * _elementwise(act, 2)(pre)
    ww = -jnp.einsum("jn,nd,ne->jde", weight, x, x) / n
    aa = jnp.zeros(aw.shape[:1] + (k, k), aw.dtype)
    top = jnp.concatenate([aa, aw], axis=-1)
    bottom = jnp.concatenate([jnp.swapaxes(aw, -1, -2), ww], axis=-1)
    return jnp.concatenate([top, bottom], axis=-2)


def splitting_curvature(
    particles: NeuronMeasure, x: Inputs, f: TargetFeatures, jitter: float | None = None
) -> Float[Array, " n_particles"]:
    """λ_min of S(θ_j) at each particle: negative where splitting the particle's atom lowers L
    (a split grows at rate −λ_min)."""
    hessians = splitting_hessians(particles, x, f, jitter)
    # One small eigenproblem at a time: XLA's CPU runtime deadlocked on a batch of them inside
    # a program whose members are sharded over several CPU devices (seen with jaxlib 0.10.2).
    return jax.lax.map(lambda h: jnp.linalg.eigvalsh(h)[0], hessians)


def least_splitting_curvature(
    particles: NeuronMeasure, x: Inputs, f: TargetFeatures, jitter: float | None = None
) -> Float[Array, ""]:
    """min over the particles with mass of λ_min(S(θ_j))."""
    curvature = splitting_curvature(particles, x, f, jitter)
    return jnp.min(jnp.where(particles.mass > 0, curvature, jnp.inf))


def mixture(mu: NeuronMeasure, nu: NeuronMeasure, s) -> NeuronMeasure:
    """(1 − s) µ + s ν as one weighted-particle measure (µ's particles, then ν's)."""
    return NeuronMeasure(
        a=jnp.concatenate([mu.a, nu.a.astype(mu.a.dtype)]),
        w=jnp.concatenate([mu.w, nu.w.astype(mu.w.dtype)]),
        mass=jnp.concatenate([(1 - s) * mu.mass, s * nu.mass.astype(mu.mass.dtype)]),
        activation=mu.activation,
    )


def mixture_derivatives(
    mu: NeuronMeasure,
    nu: NeuronMeasure,
    x: Inputs,
    f: TargetFeatures,
    jitter: float | None = None,
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """(dL/ds, d²L/ds²) of s ↦ L((1 − s)µ + s ν) at s = 0."""
    if mu.activation != nu.activation:
        raise ValueError(
            f"The mixture needs one activation, got {mu.activation!r} and {nu.activation!r}."
        )

    def along(s):
        return two_timescale_loss(mixture(mu, nu, s), x, f, jitter)

    zero = jnp.zeros((), mu.a.dtype)
    return jax.grad(along)(zero), jax.grad(jax.grad(along))(zero)
