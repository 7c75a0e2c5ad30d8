"""Init schemes of the reduced (Ω, M) state of multi-head softmax attention on disjoint tasks.

A scheme is a Module: `scheme(n_heads, n_tasks, scale, key=key)` is one seed's initial state.
Its `name` is how the command line and sweep files refer to it (`INIT_SCHEMES` maps names to
default instances at that edge; inside the library a scheme is always the Module).

- `Balanced`: ω = s, μ = s (4s on head h's favoured task h mod n); balanced factorized flow. No
  randomness: one seed is its whole distribution (`deterministic`).
- `RandomPositive(spread)`: ω, μ = s(1 + spread·U(0, 1)) entrywise; balanced factorized flow.
- `RandomSign`: ω, μ = s N(0, 1) entrywise; merged flow (signs free to change).
"""

import abc
from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, PRNGKeyArray

from .. import _validation as check
from ._reduced import AbstractSpectral, MergedSpectral, balanced_factorization


class AbstractInitScheme(eqx.Module):
    """One seed's initial (Ω, M) state of shape (n_heads, n_tasks) at init scale `scale`."""

    name: ClassVar[str]
    deterministic: ClassVar[bool] = False

    @abc.abstractmethod
    def __call__(
        self, n_heads: int, n_tasks: int, scale: float | Array, *, key: PRNGKeyArray
    ) -> AbstractSpectral:
        raise NotImplementedError


class Balanced(AbstractInitScheme):
    name: ClassVar[str] = "balanced"
    deterministic: ClassVar[bool] = True

    def __call__(self, n_heads, n_tasks, scale, *, key):
        shape = (n_heads, n_tasks)
        favoured = (jnp.arange(n_heads)[:, None] % n_tasks) == jnp.arange(n_tasks)[None, :]
        return balanced_factorization(jnp.full(shape, scale), jnp.where(favoured, 4 * scale, scale))


class RandomPositive(AbstractInitScheme):
    """`spread`: the width c of 1 + c·U(0, 1)."""

    spread: float = 0.1
    name: ClassVar[str] = "random-positive"

    def __check_init__(self):
        check.finite_nonnegative("spread", self.spread)

    def __call__(self, n_heads, n_tasks, scale, *, key):
        omega_key, mu_key = jr.split(key)
        shape = (n_heads, n_tasks)
        omega = scale * (1 + self.spread * jr.uniform(omega_key, shape))
        return balanced_factorization(omega, scale * (1 + self.spread * jr.uniform(mu_key, shape)))


class RandomSign(AbstractInitScheme):
    name: ClassVar[str] = "random-sign"

    def __call__(self, n_heads, n_tasks, scale, *, key):
        omega_key, mu_key = jr.split(key)
        shape = (n_heads, n_tasks)
        return MergedSpectral(scale * jr.normal(omega_key, shape), scale * jr.normal(mu_key, shape))


# The names the command line and sweep files use, in the order experiments report them.
INIT_SCHEMES: dict[str, AbstractInitScheme] = {
    s.name: s for s in (Balanced(), RandomPositive(), RandomSign())
}
