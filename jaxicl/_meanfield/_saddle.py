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
from ._neurons import NeuronMeasure


def least_eigenvalue(
    matrices: Float[Array, "... n n"], iterations: int = 64
) -> Float[Array, "..."]:
    """The least eigenvalue of each symmetric matrix, in plain array operations: Householder
    reduction to tridiagonal form, then bisection on the Sturm count (the number of negative
    pivots of T − σI is the number of eigenvalues below σ) within Gershgorin's bounds.

    Not `jnp.linalg.eigvalsh`: XLA's CPU eigensolver (and a host callback in its place)
    deadlocked inside programs whose members are sharded over several CPU devices (seen with
    jaxlib 0.10.2, batches of 25 × 25 matrices at 8 members a device)."""
    n = matrices.shape[-1]
    flat = matrices.reshape((-1, n, n))
    least = jax.vmap(lambda a: _least_eigenvalue(a, iterations))(flat)
    return least.reshape(matrices.shape[:-2])


def _least_eigenvalue(a, iterations):
    n = a.shape[-1]
    index = jnp.arange(n)

    def reflect(k, a):
        # the Householder reflection that zeroes column k below its subdiagonal, both sides
        x = jnp.where(index > k, a[:, k], 0.0)
        alpha = -jnp.where(x[k + 1] >= 0, 1.0, -1.0) * jnp.linalg.norm(x)
        v = x - alpha * (index == k + 1).astype(x.dtype)
        length = jnp.linalg.norm(v)
        v = jnp.where(length > 0, v / jnp.where(length > 0, length, 1.0), 0.0)
        p = a @ v
        w = p - (v @ p) * v
        return a - 2 * (jnp.outer(v, w) + jnp.outer(w, v))

    t = jax.lax.fori_loop(0, max(n - 2, 0), reflect, a)
    diagonal = jnp.diagonal(t)
    off = jnp.abs(jnp.diagonal(t, offset=-1))
    left = jnp.pad(off, (1, 0))  # |T_{i,i-1}|, 0 for the first row
    right = jnp.pad(off, (0, 1))  # |T_{i,i+1}|, 0 for the last row
    low = jnp.min(diagonal - left - right)
    high = jnp.max(diagonal + left + right)
    tiny = jnp.finfo(a.dtype).tiny

    def below(sigma):
        def pivot(carry, row):
            q, count = carry
            d, e = row
            q = d - sigma - e**2 / q
            q = jnp.where(q == 0, -tiny, q)  # an exact zero pivot counts as just below
            return (q, count + (q < 0).astype(jnp.int32)), None

        start = (jnp.ones((), a.dtype), jnp.zeros((), jnp.int32))
        (_, count), _ = jax.lax.scan(pivot, start, (diagonal, left))
        return count

    def bisect(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        some = below(mid) >= 1
        return jnp.where(some, lo, mid), jnp.where(some, mid, hi)

    low, high = jax.lax.fori_loop(0, iterations, bisect, (low, high))
    return 0.5 * (low + high)


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
    act = particles.activation
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
    act = particles.activation
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
    return least_eigenvalue(splitting_hessians(particles, x, f, jitter))


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
