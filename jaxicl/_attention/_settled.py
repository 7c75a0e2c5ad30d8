"""When a member of the reduced dynamics has settled for good: the `reduced-allocation` study's
optional stop rule (`stop_tol`).

A member may be stopped only where training on could not change its outcome: at a strict local
minimum of its flow's loss, in the coordinates the flow moves, with less than `tol` of its loss
left to gain. Flat loss is not enough: the members of `task-allocation` sit for thousands of
time units at saddles (warm-up, and stalls with a dead head) that some leave later.

- **Coordinates.** The state's own (what SGD moves); a factorized state is only ever stopped on
  its balanced set (|k| = |q| and |v| = |o| elementwise, bit for bit), in (q, o): its gradient
  keeps k = ±q and v = ±o exactly (k̇ = −q ∂ℓ/∂ω = ±q̇), so a member there never leaves it. In
  (q, k, o, v) every stalled member has negative curvature along o − v (measured:
  `benchmarks/stopping.py`), a direction that balanced training never takes.
- **Flat directions.** A coordinate whose Hessian row is under 1e-6 of the largest entry (e.g.
  the factors of a dead head, whose μ is zero) moves the loss at most g² per unit time: their
  squared gradient times the run's `horizon` must be under `tol` of the loss.
- **Strict minimum.** On the other coordinates the Hessian's eigenvalues must all exceed 1e-5
  of its Frobenius norm (float32 resolves about 1e-6 of it; settled members measured 6.4e-5
  of the largest eigenvalue and above).
- **Left to gain.** ½ gᵀH⁻¹g, the quadratic model's distance to the minimum, at most `tol` of
  the loss (measured, float64: what the loss still fell after such a stop was at most 1.4 tol).
- **Out of warm-up.** The loss must be under 90% of the loss at Ω = M = 0 (the plateau's), as
  `detect_phases` has it for leaving warm-up.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Bool

from ._reduced import AbstractSpectral, MergedSpectral, ReducedLoss


FLAT_ROW = 1e-6  # a Hessian row under this fraction of the largest entry is a flat direction
STRICT = 1e-5  # the smallest eigenvalue over the largest at a strict minimum (float32: ~1e-6)
WARMUP_LEFT = 0.9  # out of warm-up under this fraction of the plateau's loss


def _balanced(model) -> Bool[Array, ""] | None:
    """Whether a factorized state is on its balanced set (None: not a factorized state)."""
    if not all(hasattr(model, name) for name in ("q", "k", "o", "v")):
        return None
    return jnp.all(jnp.abs(model.q) == jnp.abs(model.k)) & jnp.all(
        jnp.abs(model.o) == jnp.abs(model.v)
    )


def _coordinates(model, balanced: bool):
    """`(x, state_of)`: the coordinates the flow moves and the state they stand for."""
    if balanced:
        k_sign = jnp.where(model.k == model.q, 1.0, -1.0).astype(model.q.dtype)
        v_sign = jnp.where(model.v == model.o, 1.0, -1.0).astype(model.o.dtype)
        x, unravel = ravel_pytree((model.q, model.o))

        def state_of(x):
            q, o = unravel(x)
            return eqx.tree_at(
                lambda m: (m.q, m.k, m.o, m.v), model, (q, k_sign * q, o, v_sign * o)
            )

        return x, state_of
    params, static = eqx.partition(model, eqx.is_inexact_array)
    x, unravel = ravel_pytree(params)
    return x, lambda x: eqx.combine(unravel(x), static)


class Settled(eqx.Module):
    """`settled(model) -> bool`: the member is at a strict local minimum of `objective` (in the
    coordinates its flow moves) with under `tol` of its loss left to gain, out of warm-up; see
    the module docstring. `horizon`: the run's length on the flow's clock."""

    objective: ReducedLoss
    tol: float
    horizon: float

    def __call__(self, model: AbstractSpectral) -> Bool[Array, ""]:
        balanced = _balanced(model)
        if balanced is None:
            return self._settled(model, False)
        # off the balanced set a factorized member is never called settled (see above)
        return balanced & self._settled(model, True)

    def _settled(self, model, balanced: bool) -> Bool[Array, ""]:
        x, state_of = _coordinates(model, balanced)
        loss_of = lambda x: self.objective.evaluate(state_of(x), None)  # noqa: E731
        loss, gradient = jax.value_and_grad(loss_of)(x)
        hessian = jax.hessian(loss_of)(x)
        # the plateau's loss, at Ω = M = 0: one evaluation for every member
        omega, _ = model.spectral()
        origin = jnp.zeros(omega.shape, omega.dtype)
        plateau = self.objective.evaluate(MergedSpectral(origin, origin), None)
        largest = jnp.max(jnp.abs(hessian))
        flat = jnp.max(jnp.abs(hessian), axis=1) <= FLAT_ROW * largest
        # flat coordinates are set aside: unit curvature, no gradient, no coupling
        kept = ~flat[:, None] & ~flat[None, :]
        reduced = jnp.where(kept, hessian, 0.0) + jnp.diag(jnp.where(flat, largest, 0.0))
        # Every eigenvalue above STRICT of the largest (bounded by the Frobenius norm, so the
        # test is if anything stricter): the shifted matrix has a Cholesky factor.
        scale = jnp.sqrt(jnp.sum(jnp.where(kept, hessian, 0.0) ** 2))
        shifted = reduced - STRICT * scale * jnp.eye(x.shape[0], dtype=x.dtype)
        strict = _cholesky(shifted)[1]  # and so the unshifted matrix is positive definite
        factor, _ = _cholesky(reduced)
        # ½ gᵀH⁻¹g = ½ ‖L⁻¹g‖² with H = L Lᵀ
        to_gain = 0.5 * jnp.sum(_forward_substitution(factor, jnp.where(flat, 0.0, gradient)) ** 2)
        drift = jnp.sum(jnp.where(flat, gradient**2, 0.0)) * self.horizon
        return (
            jnp.isfinite(loss)
            & (largest > 0)
            & strict
            & (to_gain <= self.tol * loss)
            & (drift <= self.tol * loss)
            & (loss < WARMUP_LEFT * plateau)
        )


# The Cholesky factor and the substitution are written out (a few dozen coordinates): LAPACK's
# routines run as library calls inside XLA's CPU programs, and two at once (two devices, or two
# in one program) left the program idle for good (jaxlib 0.10.2, `eigh`).


def _cholesky(matrix):
    """`(L, positive)`: the lower Cholesky factor of a symmetric matrix and whether every pivot
    was positive (the matrix is positive definite); L is garbage where not. A loop over
    columns with masks, not unrolled: the rule is compiled into every program of a sweep."""
    matrix = jnp.asarray(matrix)
    n = matrix.shape[0]
    index = jnp.arange(n)

    def column(j, carry):
        factor, positive = carry
        row = jnp.where(index < j, factor[j], 0.0)  # L[j, :j]
        pivot = matrix[j, j] - jnp.sum(row**2)
        root = jnp.sqrt(jnp.where(pivot > 0, pivot, 1.0))
        below = (matrix[:, j] - factor @ row) / root
        new = jnp.where(index > j, below, jnp.where(index == j, root, 0.0))
        return factor.at[:, j].set(new), positive & (pivot > 0)

    return jax.lax.fori_loop(0, n, column, (jnp.zeros_like(matrix), jnp.asarray(True)))


def _forward_substitution(factor, vector):
    """L⁻¹ b for a lower triangular L."""
    factor, vector = jnp.asarray(factor), jnp.asarray(vector)
    index = jnp.arange(vector.shape[0])

    def entry(i, out):
        done = jnp.where(index < i, out, 0.0)
        return out.at[i].set((vector[i] - factor[i] @ done) / factor[i, i])

    return jax.lax.fori_loop(0, vector.shape[0], entry, jnp.zeros_like(vector))
