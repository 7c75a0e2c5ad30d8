"""The feature-regression task of Kim & Suzuki: y = vᵀ f°(x), f° = h_{µ°} a teacher MLP.

Tasks v ~ N(0, I_k) share one nonlinear feature map f° ∈ R^k, realizable by the student's neuron
class. Inputs are N(0, I_d) or uniform on the sphere of radius √d (the same second moment).
"""

import abc
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from .. import _validation as check
from .._custom_types import Blocks
from .._tasks._prompt import Prompt
from .._tasks._regression import AbstractTask
from ._activations import AbstractActivation
from ._neurons import NeuronMeasure, random_measure


class AbstractInputLaw(eqx.Module):
    """The law of the inputs x ∈ R^d; `name` is how the built-in laws are named."""

    name: ClassVar[str]

    @abc.abstractmethod
    def sample(self, n: int, d: int, dtype, *, key: PRNGKeyArray) -> Float[Array, "n d"]:
        """`n` independent inputs."""


class GaussianInputs(AbstractInputLaw):
    """x ~ N(0, I_d)."""

    name: ClassVar[str] = "gaussian"

    def sample(self, n, d, dtype, *, key):
        return jr.normal(key, (n, d), dtype)


class SphereInputs(AbstractInputLaw):
    """x uniform on the sphere of radius √d (the second moment of N(0, I_d))."""

    name: ClassVar[str] = "sphere"

    def sample(self, n, d, dtype, *, key):
        x = jr.normal(key, (n, d), dtype)
        return x * (d**0.5 / jnp.linalg.norm(x, axis=-1, keepdims=True))


INPUT_LAWS = {law.name: law for law in (GaussianInputs(), SphereInputs())}


def input_law_of(value: "str | AbstractInputLaw") -> AbstractInputLaw:
    """An input law given by name (`"gaussian"`, `"sphere"`) or as a Module."""
    if isinstance(value, str):
        return INPUT_LAWS[check.one_of("input_law", value, INPUT_LAWS)]
    return check.variant("input_law", value, AbstractInputLaw, INPUT_LAWS)


class FeatureRegression(AbstractTask):
    """Prompts (x_1, y_1, …, x_n, y_n, x_q) with y_i = vᵀ f°(x_i) + ε_i, v ~ N(0, I_k) per prompt.

    **Fields:**

    - `teacher`: the teacher measure µ°; f° = h_{µ°}.
    - `context_len`: the prompt length n (the population n = ∞ form is `MeanFieldLoss`).
    - `noise`: label noise standard deviation σ, on context labels and on the query target (so
      the n = ∞ loss is shifted by ½σ²).
    - `input_law`: `GaussianInputs()` or `SphereInputs()`, or its name `"gaussian"`, `"sphere"`.
    """

    teacher: NeuronMeasure
    context_len: int = eqx.field(static=True)
    noise: float = eqx.field(static=True)
    input_law: AbstractInputLaw = eqx.field(static=True, converter=input_law_of)

    def __check_init__(self):
        check.positive_int("context_len", self.context_len)
        check.finite_nonnegative("noise", self.noise)

    @property
    def d(self) -> int:
        return self.teacher.w.shape[-1]

    @property
    def k(self) -> int:
        return self.teacher.a.shape[-1]

    @property
    def n_out(self) -> int:
        return 1

    @property
    def blocks(self) -> Blocks:
        return ((0, self.d),)

    def inputs(self, n: int, *, key: PRNGKeyArray) -> Float[Array, "n d"]:
        return self.input_law.sample(n, self.d, self.teacher.a.dtype, key=key)

    def target_features(self, x: Float[Array, "n d"]) -> Float[Array, "n k"]:
        """f°(x) for each row of x."""
        return jax.vmap(self.teacher.features)(x)

    def sample(self, *, key: PRNGKeyArray) -> Prompt:
        task_key, x_key, noise_key = jr.split(key, 3)
        dtype = self.teacher.a.dtype
        v = jr.normal(task_key, (self.k,), dtype)
        x = self.inputs(self.context_len + 1, key=x_key)
        y = self.target_features(x) @ v + self.noise * jr.normal(noise_key, (x.shape[0],), dtype)
        return Prompt(x=x[:-1], y=y[:-1, None], query_x=x[-1], query_y=y[-1:])


def feature_regression(
    *,
    d: int = 20,
    k: int = 5,
    teacher_neurons: int = 10,
    teacher_scale: float = 3.0,
    activation: "AbstractActivation | str" = "sigmoid",
    context_len: int = 1000,
    noise: float = 0.0,
    input_law: "AbstractInputLaw | str" = "gaussian",
    dtype=None,
    key: PRNGKeyArray,
) -> FeatureRegression:
    """A feature-regression task with a random teacher of M° = `teacher_neurons` neurons:
    a° ~ N(0, M° I_k) (so f° = (1/M°) Σ a°σ(w°ᵀx) stays O(1) as M° grows) and
    w° ~ N(0, teacher_scale² I_d / d) (so ‖w°‖ ≈ teacher_scale and the activations are used
    well beyond their linear range)."""
    check.positive_int("teacher_neurons", teacher_neurons)
    teacher = random_measure(
        n_particles=teacher_neurons,
        k=k,
        d=d,
        a_scale=teacher_neurons**0.5,
        w_scale=teacher_scale,
        coupled=False,
        activation=activation,
        dtype=dtype,
        key=key,
    )
    return FeatureRegression(
        teacher=teacher, context_len=context_len, noise=noise, input_law=input_law
    )
