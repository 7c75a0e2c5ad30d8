"""The neurons' activation σ as a Module (h_θ(x) = a σ(wᵀx)).

`ACTIVATIONS` maps the names `"sigmoid"`, `"tanh"` and `"relu"` to the built-in ones at the edge
(a measure's `activation` may be given by name); inside the library σ is always the Module.
"""

import abc
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .. import _validation as check


class AbstractActivation(eqx.Module):
    """σ, applied elementwise; `name` is how the built-in ones are named."""

    name: ClassVar[str]

    @abc.abstractmethod
    def __call__(self, x: Float[Array, "..."]) -> Float[Array, "..."]:
        """σ(x) elementwise."""


class Sigmoid(AbstractActivation):
    """σ(x) = 1 / (1 + e^(−x)), the paper's default."""

    name: ClassVar[str] = "sigmoid"

    def __call__(self, x):
        return jax.nn.sigmoid(x)


class Tanh(AbstractActivation):
    name: ClassVar[str] = "tanh"

    def __call__(self, x):
        return jnp.tanh(x)


class ReLU(AbstractActivation):
    name: ClassVar[str] = "relu"

    def __call__(self, x):
        return jax.nn.relu(x)


ACTIVATIONS = {a.name: a for a in (Sigmoid(), Tanh(), ReLU())}


def activation_of(value: "str | AbstractActivation") -> AbstractActivation:
    """An activation given by name (`"sigmoid"`, `"tanh"`, `"relu"`) or as a Module."""
    if isinstance(value, str):
        return ACTIVATIONS[check.one_of("activation", value, ACTIVATIONS)]
    return check.variant("activation", value, AbstractActivation, ACTIVATIONS)
