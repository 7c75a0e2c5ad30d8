"""Init schemes of the reduced (Ω, M) state of multi-head softmax attention on disjoint tasks.

A scheme is a Module: `scheme(n_heads, n_tasks, scale, key=key)` is one seed's initial state.
Its `name` is how the command line and sweep files refer to it (`INIT_SCHEMES` maps names to
default instances at that edge; inside the library a scheme is always the Module).

- `Balanced`: ω = s, μ = s (4s on head h's favoured task h mod n); balanced factorized flow. No
  randomness: one seed is its whole distribution (`deterministic`).
- `RandomPositive(spread)`: ω, μ = s(1 + spread·U(0, 1)) entrywise; balanced factorized flow.
- `RandomSign`: ω, μ = s N(0, 1) entrywise; merged flow (signs free to change).
- `ChenCode`: the initialisation of Chen et al.'s public simulation code
  (`AttentionNetwork.initialization`): Q_h = g_h s I, K_h = g'_h s I with independent standard
  normals g_h, g'_h per head (so ω takes either sign), V_h and O_h diagonal on the labels with s
  on every task but the head's favoured one (h mod n), which gets 2s; s = L^(−3/4) in their
  code. On the ansatz: ω_{h,i} = g_h g'_h s²/√D on every task, μ_{h,i} = s² (4s² favoured);
  unbalanced factors (|q| ≠ |k|) of the factorized flow.

A scheme returns the state of the *Euclidean* parametrization (Ω, M, or factors with ω = q k,
μ = o v); a reduced flow (`WeightFlow`, `EuclideanFlow`) maps it to the state it integrates.
`merged` says which parametrization the scheme starts: the merged (W, U) one, where signs are
free to change, or the factorized (Q, K, V, O) one.
"""

import abc
import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, PRNGKeyArray

from .. import _validation as check
from .._custom_types import Blocks
from ._decomposable import attention_from_start
from ._init import init_normal
from ._models import AbstractAttention
from ._reduced import (
    AbstractSpectral,
    FactorizedSpectral,
    MergedSpectral,
    balanced_factorization,
)


class AbstractWeightInit(eqx.Module):
    """How the weights of a full factorized model on disjoint `blocks` of R^d start, at init
    scale `scale`. `name` is how sweep files and the command line refer to it."""

    name: ClassVar[str]

    @abc.abstractmethod
    def weights(
        self, n_heads: int, blocks: Blocks, d: int, scale, *, key: PRNGKeyArray
    ) -> AbstractAttention:
        raise NotImplementedError


class NormalWeights(AbstractWeightInit):
    """Every weight i.i.d. N(0, scale²) (random signs, off the ansatz)."""

    name: ClassVar[str] = "normal"

    def weights(self, n_heads, blocks, d, scale, *, key):
        unit = init_normal(d=d, n_out=len(blocks), n_heads=n_heads, scale=1.0, key=key)
        return jax.tree.map(lambda w: scale * w, unit)


class AbstractInitScheme(AbstractWeightInit):
    """One seed's initial (Ω, M) state of shape (n_heads, n_tasks) at init scale `scale`;
    `width` is the token width D = d + n (used by schemes defined on the weights). As a
    `AbstractWeightInit`, the state put into the weights through the decomposable ansatz
    (zero off it; a factorized state with its own factors)."""

    name: ClassVar[str]
    deterministic: ClassVar[bool] = False
    merged: ClassVar[bool] = False

    def weights(self, n_heads, blocks, d, scale, *, key):
        n_tasks = len(blocks)
        start = self(n_heads, n_tasks, scale, width=d + n_tasks, key=key)
        return attention_from_start(start, blocks, d, factorized=True)

    @abc.abstractmethod
    def __call__(
        self,
        n_heads: int,
        n_tasks: int,
        scale: float | Array,
        *,
        width: int | None = None,
        key: PRNGKeyArray,
    ) -> AbstractSpectral:
        raise NotImplementedError


class Balanced(AbstractInitScheme):
    name: ClassVar[str] = "balanced"
    deterministic: ClassVar[bool] = True

    def __call__(self, n_heads, n_tasks, scale, *, width=None, key):
        shape = (n_heads, n_tasks)
        favoured = (jnp.arange(n_heads)[:, None] % n_tasks) == jnp.arange(n_tasks)[None, :]
        return balanced_factorization(jnp.full(shape, scale), jnp.where(favoured, 4 * scale, scale))


class RandomPositive(AbstractInitScheme):
    """`spread`: the width c of 1 + c·U(0, 1)."""

    spread: float = 0.1
    name: ClassVar[str] = "random-positive"

    def __check_init__(self):
        check.finite_nonnegative("spread", self.spread)

    def __call__(self, n_heads, n_tasks, scale, *, width=None, key):
        omega_key, mu_key = jr.split(key)
        shape = (n_heads, n_tasks)
        omega = scale * (1 + self.spread * jr.uniform(omega_key, shape))
        return balanced_factorization(omega, scale * (1 + self.spread * jr.uniform(mu_key, shape)))


class RandomSign(AbstractInitScheme):
    name: ClassVar[str] = "random-sign"
    merged: ClassVar[bool] = True

    def __call__(self, n_heads, n_tasks, scale, *, width=None, key):
        omega_key, mu_key = jr.split(key)
        shape = (n_heads, n_tasks)
        return MergedSpectral(scale * jr.normal(omega_key, shape), scale * jr.normal(mu_key, shape))


class ChenCode(AbstractInitScheme):
    """`scale`: s, the weights' entry scale (L^(−3/4) in the authors' code); needs `width`."""

    name: ClassVar[str] = "chen-code"

    def __call__(self, n_heads, n_tasks, scale, *, width=None, key):
        if width is None:
            raise ValueError("the chen-code scheme needs the token width D: pass `width`.")
        q_key, k_key = jr.split(key)
        shape = (n_heads, n_tasks)
        # Q_h = g s I gives q = g s D^(−1/4) per block in the factors of ω = q k = g g' s²/√D
        per_entry = scale / math.sqrt(math.sqrt(width))
        q = jnp.broadcast_to(per_entry * jr.normal(q_key, (n_heads, 1)), shape)
        k = jnp.broadcast_to(per_entry * jr.normal(k_key, (n_heads, 1)), shape)
        favoured = (jnp.arange(n_heads)[:, None] % n_tasks) == jnp.arange(n_tasks)[None, :]
        label = jnp.where(favoured, 2 * scale, scale) * jnp.ones(shape)
        return FactorizedSpectral(q=q, k=k, o=label, v=label)


class RandomPositiveCentre(AbstractInitScheme):
    """The centre of `RandomPositive(spread)`'s law: ω = μ = s(1 + spread/2) on every head and
    task (a symmetric start; no randomness)."""

    spread: float = 0.1
    name: ClassVar[str] = "random-positive-centre"
    deterministic: ClassVar[bool] = True

    def __check_init__(self):
        check.finite_nonnegative("spread", self.spread)

    def __call__(self, n_heads, n_tasks, scale, *, width=None, key):
        centre = jnp.full((n_heads, n_tasks), scale * (1 + self.spread / 2))
        return balanced_factorization(centre, centre)


class Merged(AbstractInitScheme):
    """`scheme`'s start in the merged parametrization (Ω, M), where signs are free to change."""

    scheme: AbstractInitScheme
    merged: ClassVar[bool] = True

    @property
    def name(self) -> str:
        return f"{self.scheme.name}-merged"

    @property
    def deterministic(self) -> bool:
        return self.scheme.deterministic

    def __call__(self, n_heads, n_tasks, scale, *, width=None, key):
        start = self.scheme(n_heads, n_tasks, scale, width=width, key=key)
        return MergedSpectral(*start.spectral())


# The names the command line and sweep files use, in the order experiments report them.
INIT_SCHEMES: dict[str, AbstractInitScheme] = {
    s.name: s for s in (Balanced(), RandomPositive(), RandomSign(), ChenCode())
}
