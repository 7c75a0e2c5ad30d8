"""How a head turns its scores over the L context tokens into attention weights.

An attention kind is a Module with `weights(scores, axis)` (and `mix`, the weighted sum of
values, which softmax gives a written-out derivative); the models and the shared-prompt
kernel call it and never branch on a name. `ATTENTION_KINDS` maps the names `"softmax"` and
`"linear"` to the built-in kinds at the edge (a model's `kind` may be given by name).
"""

import abc
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .. import _validation as check
from ._softmax_mix import softmax_mix


class AbstractAttentionKind(eqx.Module):
    """Attention weights from scores; `name` is how the built-in kinds are named."""

    name: ClassVar[str]

    @abc.abstractmethod
    def weights(self, scores: Float[Array, "..."], axis: int) -> Float[Array, "..."]:
        """The attention weights over the context axis `axis` of `scores`."""

    def mix(self, scores: Float[Array, "..."], values: Float[Array, "..."], axis: int):
        """Σ_l a_l v_l over the context axis `axis`, a = `weights(scores, axis)` (scores and
        values of one shape); a kind may override it with a cheaper derivative."""
        return jnp.sum(self.weights(scores, axis) * values, axis=axis)


class SoftmaxScores(AbstractAttentionKind):
    """a = softmax_l(scores): softmax attention."""

    name: ClassVar[str] = "softmax"

    def weights(self, scores, axis):
        return jax.nn.softmax(scores, axis=axis)

    def mix(self, scores, values, axis):
        return softmax_mix(scores, values, axis)


class LinearScores(AbstractAttentionKind):
    """a = scores / L: linear attention."""

    name: ClassVar[str] = "linear"

    def weights(self, scores, axis):
        return scores / scores.shape[axis]


ATTENTION_KINDS = {kind.name: kind for kind in (SoftmaxScores(), LinearScores())}


def attention_kind(kind: "str | AbstractAttentionKind") -> AbstractAttentionKind:
    """A kind given by name (`"softmax"`, `"linear"`) or as a Module."""
    if isinstance(kind, str):
        return ATTENTION_KINDS[check.one_of("kind", kind, ATTENTION_KINDS)]
    return check.variant("kind", kind, AbstractAttentionKind, ATTENTION_KINDS)
