"""Which gradient flow the reduced (Ω, M) dynamics integrates.

One loss ℓ(Ω, M) (`reduced_loss`), two metrics. Training the attention model is gradient flow
on its *weights* under the ICL loss (what Chen et al. analyse, and what plain SGD with one
learning rate runs); gradient flow on (Ω, M) themselves is a different dynamical system.

**The weights' flow (`WeightFlow`, the default), derived.** On the decomposable ansatz the
population gradient of the ICL loss f = ℓ/n (it averages the n outputs; ℓ sums them) stays on
the ansatz (Gaussian symmetry), so gradient flow on the weights is gradient flow on the ansatz
subspace in the weights' own Euclidean metric: its orthonormal coordinates.

- Merged (W, U): W_h carries ω_{h,i} on the r_i = |S_i| diagonal entries of block S_i, so the
  unit-norm coordinate is w_{h,i} = √r_i ω_{h,i} (the Frobenius norm of that block); U carries
  μ_{h,i} on one entry, so u = μ. Descent on (w, u) gives
  dω/dt = −(1/r_i) ∂f/∂ω = −(1/(n r_i)) ∂ℓ/∂ω,   dμ/dt = −(1/n) ∂ℓ/∂μ.
- Factorized (Q, K, V, O), W = KᵀQ/√D, U = OV: Q_h and K_h carry q_{h,i}, k_{h,i} on the
  diagonal of block S_i and ω = q k/√D; V_h and O_h carry v, o on one label entry each and
  μ = o v. The unit-norm coordinates are q̃ = √r_i q, k̃ = √r_i k (so ω = q̃ k̃/(r_i √D)), o, v.
  Descent on them gives dω/dt = −(q̃² + k̃²)/(r_i² D) ∂f/∂ω, which from a balanced start
  (q̃² = k̃² = r_i √D |ω|, conserved by the flow) is
  dω/dt = −(2|ω|/(n r_i √D)) ∂ℓ/∂ω,   dμ/dt = −(2|μ|/n) ∂ℓ/∂μ.

Explicit Euler with step η on these coordinates is plain SGD with learning rate η on the full
model's population loss restricted to the ansatz: the time axis is steps × learning rate, the
full model's own (tested against the full model trained by `optax.sgd`, tests/test_weight_flow.py).

**The Euclidean flow (`EuclideanFlow`).** Gradient flow of ℓ on (Ω, M) (merged) or on its
balanced factors ω = q k, μ = o v (factorized: dω/dt = −2|ω| ∂ℓ/∂ω): relative to the weights'
flow, each ω moves n r_i (merged) or n r_i √D (factorized) times faster and each μ n times
faster. It is the flow the reduced-dynamics literature writes down, kept as a named variant.

A flow maps an init scheme's state (Ω, M as `MergedSpectral`, or factors as
`FactorizedSpectral`; ω = q k) to the state its SGD acts on, and gives the loss it descends.
"""

import abc
import math
from typing import ClassVar

import equinox as eqx
from jaxtyping import Array, Float

from ._reduced import AbstractSpectral, FactorizedSpectral, MergedSpectral, ReducedLoss
from ._reduced_derivative import along_tasks


class MergedWeights(AbstractSpectral):
    """(W, U) on the ansatz in the weights' unit-norm coordinates: w_{h,i} = √r_i ω_{h,i}, u = μ.

    `block_sizes` (static): r_i."""

    w: Float[Array, "H n"]
    u: Float[Array, "H n"]
    block_sizes: tuple[int, ...] = eqx.field(static=True)
    trailing_members: ClassVar[bool] = True

    def spectral(self):
        roots = [math.sqrt(r) for r in self.block_sizes]
        return self.w / along_tasks(roots, self.w, axis=1), self.u


class FactorizedWeights(AbstractSpectral):
    """(Q, K, V, O) on the ansatz in the weights' unit-norm coordinates: q̃ = √r_i q, k̃ = √r_i k
    (the Frobenius norms of Q_h's, K_h's block S_i, signed), o, v; ω = q̃ k̃ / (r_i √D), μ = o v.

    `block_sizes`, `width` (static): r_i and the token width D."""

    q: Float[Array, "H n"]
    k: Float[Array, "H n"]
    o: Float[Array, "H n"]
    v: Float[Array, "H n"]
    block_sizes: tuple[int, ...] = eqx.field(static=True)
    width: int = eqx.field(static=True)
    trailing_members: ClassVar[bool] = True

    def spectral(self):
        scales = [r * math.sqrt(self.width) for r in self.block_sizes]
        return self.q * self.k / along_tasks(scales, self.q, axis=1), self.o * self.v


class AbstractReducedFlow(eqx.Module):
    """A metric for the reduced dynamics: the state SGD acts on, and the loss it descends.

    `name` is how the command line, sweep files and stored descriptions refer to it."""

    name: ClassVar[str]
    description: ClassVar[str]

    @abc.abstractmethod
    def state(self, start: AbstractSpectral, block_sizes: tuple[int, ...]) -> AbstractSpectral:
        """This flow's state for an init scheme's `start` (Ω, M, or factors ω = q k, μ = o v)."""

    @abc.abstractmethod
    def objective(self, block_sizes: tuple[int, ...], context_len: int, **noise) -> ReducedLoss:
        """The loss this flow descends (`noise`: `context_noise`, `query_noise`)."""


class WeightFlow(AbstractReducedFlow):
    """Gradient flow on the full model's weights under the ICL loss, on the ansatz (see the
    module docstring). Time is steps × learning rate of plain SGD on the full model."""

    name: ClassVar[str] = "weights"
    description: ClassVar[str] = "gradient flow on the attention weights (ICL loss, plain SGD)"

    def state(self, start, block_sizes):
        if isinstance(start, MergedSpectral):
            roots = [math.sqrt(r) for r in block_sizes]
            w = start.omega * along_tasks(roots, start.omega, axis=1)
            return MergedWeights(w, start.mu, block_sizes)
        if isinstance(start, FactorizedSpectral):
            width = sum(block_sizes) + len(block_sizes)
            # q̃ k̃ / (r √D) = q k
            scale = along_tasks([math.sqrt(r * math.sqrt(width)) for r in block_sizes], start.q, 1)
            return FactorizedWeights(
                start.q * scale, start.k * scale, start.o, start.v, block_sizes, width
            )
        raise ValueError(
            "`start` must be a MergedSpectral or FactorizedSpectral (an init scheme's state), "
            f"got {type(start).__name__}."
        )

    def objective(self, block_sizes, context_len, **noise):
        return ReducedLoss(block_sizes, context_len, average_outputs=True, **noise)


class EuclideanFlow(AbstractReducedFlow):
    """Gradient flow of ℓ (summed over tasks) on (Ω, M) or on its factors ω = q k, μ = o v."""

    name: ClassVar[str] = "euclidean"
    description: ClassVar[str] = "Euclidean gradient flow of ℓ on (Ω, M) or its factors"

    def state(self, start, block_sizes):
        if not isinstance(start, (MergedSpectral, FactorizedSpectral)):
            raise ValueError(
                "`start` must be a MergedSpectral or FactorizedSpectral, got "
                f"{type(start).__name__}."
            )
        return start

    def objective(self, block_sizes, context_len, **noise):
        return ReducedLoss(block_sizes, context_len, **noise)


# Names used at the command-line and sweep-file edge; the first is the default.
REDUCED_FLOWS: dict[str, AbstractReducedFlow] = {f.name: f for f in (WeightFlow(), EuclideanFlow())}
