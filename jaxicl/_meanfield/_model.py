"""The feature-attention model: an MLP feature layer under linear self-attention (Kim & Suzuki).

ŷ_q = (1/n) Σ_i y_i h_µ(x_i)ᵀ W h_µ(x_q), with h_µ the mean-field feature map of the particles
and W ∈ R^{k×k} the merged key-query matrix (value weight fixed to 1). As n → ∞ the context
average becomes vᵀ Σ_{µ°µ} and ŷ_q = vᵀ Σ_{µ°µ} W h_µ(x_q).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._tasks._prompt import Prompt
from ._activations import AbstractActivation
from ._neurons import NeuronMeasure, random_measure


class FeatureAttention(eqx.Module):
    """Linear attention over learned features.

    **Fields:**

    - `particles`: the neuron measure µ (M weighted particles).
    - `W`: the k×k attention matrix.
    """

    particles: NeuronMeasure
    W: Float[Array, "k k"]

    def __call__(self, prompt: Prompt) -> Float[Array, " 1"]:
        """The finite-n prediction for one prompt (context labels of shape `(n, 1)`)."""
        context = jax.vmap(self.particles.features)(prompt.x)
        read = prompt.y[:, 0] @ context / prompt.x.shape[0]
        return (read @ self.W @ self.particles.features(prompt.query_x))[None]

    def population_prediction(
        self,
        v: Float[Array, " k"],
        teacher_student: Float[Array, "k k"],
        query_x: Float[Array, " d"],
    ) -> Float[Array, ""]:
        """The n = ∞ prediction vᵀ Σ_{µ°µ} W h_µ(x_q) for task v (`teacher_student` = Σ_{µ°µ})."""
        return v @ teacher_student @ self.W @ self.particles.features(query_x)


def init_feature_attention(
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
) -> FeatureAttention:
    """Random particles (`random_measure`) and W = I_k."""
    particles = random_measure(
        n_particles=n_particles,
        k=k,
        d=d,
        a_scale=a_scale,
        w_scale=w_scale,
        coupled=coupled,
        activation=activation,
        padded_to=padded_to,
        dtype=dtype,
        key=key,
    )
    return FeatureAttention(particles=particles, W=jnp.eye(k, dtype=particles.a.dtype))
