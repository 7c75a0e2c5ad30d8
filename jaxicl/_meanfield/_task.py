"""The feature-regression task of Kim & Suzuki: y = vᵀ f°(x), f° = h_{µ°} a teacher MLP.

Tasks v ~ N(0, I_k) share one nonlinear feature map f° ∈ R^k, realizable by the student's neuron
class. Inputs are N(0, I_d) or uniform on the sphere of radius √d (the same second moment).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from .. import _validation as check
from .._custom_types import Blocks
from .._tasks._prompt import Prompt
from .._tasks._regression import AbstractTask
from ._neurons import NeuronMeasure, random_measure


INPUT_LAWS = ("gaussian", "sphere")


def sample_inputs(law: str, n: int, d: int, dtype, *, key: PRNGKeyArray) -> Float[Array, "n d"]:
    """`n` inputs from N(0, I_d) (`"gaussian"`) or uniform on the sphere of radius √d."""
    x = jr.normal(key, (n, d), dtype)
    if law == "sphere":
        x = x * (d**0.5 / jnp.linalg.norm(x, axis=-1, keepdims=True))
    return x


class FeatureRegression(AbstractTask):
    """Prompts (x_1, y_1, …, x_n, y_n, x_q) with y_i = vᵀ f°(x_i) + ε_i, v ~ N(0, I_k) per prompt.

    **Fields:**

    - `teacher`: the teacher measure µ°; f° = h_{µ°}.
    - `context_len`: the prompt length n (the population n = ∞ form is `MeanFieldLoss`).
    - `noise`: label noise standard deviation σ, on context labels and on the query target (so
      the n = ∞ loss is shifted by ½σ²).
    - `input_law`: `"gaussian"` or `"sphere"`.
    """

    teacher: NeuronMeasure
    context_len: int = eqx.field(static=True)
    noise: float = eqx.field(static=True)
    input_law: str = eqx.field(static=True)

    def __check_init__(self):
        check.positive_int("context_len", self.context_len)
        check.finite_nonnegative("noise", self.noise)
        check.one_of("input_law", self.input_law, INPUT_LAWS)

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
        return sample_inputs(self.input_law, n, self.d, self.teacher.a.dtype, key=key)

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
    activation: str = "sigmoid",
    context_len: int = 1000,
    noise: float = 0.0,
    input_law: str = "gaussian",
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
        law="independent",
        activation=activation,
        dtype=dtype,
        key=key,
    )
    return FeatureRegression(
        teacher=teacher, context_len=context_len, noise=noise, input_law=input_law
    )
