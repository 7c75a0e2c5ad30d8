"""Multi-head attention of a query over its context, in merged and factorized weights.

Both score kinds share one layer shape (Chen et al. 2024; He et al. 2025; Zhang et al.):
one layer, H heads of full token width D = d + n_out, no residual, norm, mask or bias, and only
the query position is computed. The query attends to the L context tokens, not to itself.

- softmax: a_h = softmax_l(z_lᵀ W_h z_q),  ŷ = Σ_h U_h Σ_l a_{h,l} z_l
- linear:  a_h = (z_lᵀ W_h z_q) / L,        ŷ = Σ_h U_h Σ_l a_{h,l} z_l

Merged weights: W_h (D×D, "KQ") and U_h (n_out×D, "OV"). Factorized weights: Q_h, K_h (r×D),
V_h (D_v×D), O_h (n_out×D_v), with W_h = K_hᵀQ_h/√D and U_h = O_hV_h. Gradient flow on the two
parametrizations gives different dynamics, which is why both exist.
"""

import abc
import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._tasks._prompt import Prompt, context_tokens, query_token
from ._kinds import AbstractAttentionKind, attention_kind
from ._shared_prompts import shared_prompt_predictions


def attend(
    scores: Float[Array, "H n_ctx"], tokens: Float[Array, "n_ctx D"], kind: AbstractAttentionKind
) -> Float[Array, "H D"]:
    """Σ_l a_{h,l} z_l for every head, with a = softmax(scores) or scores / L."""
    return kind.weights(scores, axis=-1) @ tokens


def _check_width(prompt: Prompt, width: int) -> None:
    """The tokens z = (x, y) must be as wide as the model (shapes are static: this runs once,
    at trace time), named in the error instead of a failing einsum."""
    d, n_out = prompt.x.shape[-1], prompt.y.shape[-1]
    if d + n_out != width:
        raise ValueError(
            f"the prompt's tokens (x, y) have width d + n_out = {d} + {n_out} = {d + n_out}, "
            f"but the model's weights have D = {width}; build the model for this task's "
            "d and n_out."
        )


class AbstractAttention(eqx.Module):
    """A multi-head attention model mapping one `Prompt` to a prediction of shape `(n_out,)`."""

    kind: eqx.AbstractVar[AbstractAttentionKind]

    @abc.abstractmethod
    def __call__(self, prompt: Prompt) -> Float[Array, " n_out"]:
        """Predict the query target of one prompt."""

    @abc.abstractmethod
    def merged(self) -> "MergedAttention":
        """The same function in merged (W, U) weights."""

    def predict_members(self, prompts: Prompt) -> Float[Array, "m B n_out"]:
        """`self` stacked over members (leading axis m): every member's prediction of every
        prompt of the shared batch `prompts`. Member by member here; the built-in models
        override it with their shared-prompt kernel."""
        return eqx.filter_vmap(lambda member: jax.vmap(member)(prompts))(self)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # A subclass that changes the prediction but not the kernel would otherwise be scored
        # by its parent's kernel, silently: it gets the member-by-member default instead.
        if "__call__" in vars(cls) and "predict_members" not in vars(cls):
            cls.predict_members = AbstractAttention.predict_members


class MergedAttention(AbstractAttention):
    """Multi-head attention in merged weights W (H×D×D, key-query) and U (H×n_out×D, output-value).

    Evaluated in the cheap order Zᵀ(W_h z_q) then U_h(Z a_h): O(H(D² + L D)) per prompt.

    **Fields:**

    - `W`: shape `(H, D, D)`; the score of context token z_l is z_lᵀ W_h z_q.
    - `U`: shape `(H, n_out, D)`.
    - `kind`: `SoftmaxScores()` or `LinearScores()`, or their names `"softmax"`, `"linear"`.
    """

    W: Float[Array, "H D D"]
    U: Float[Array, "H n_out D"]
    kind: AbstractAttentionKind = eqx.field(static=True, converter=attention_kind)

    def __check_init__(self):
        if self.W.ndim != 3 or self.W.shape[1] != self.W.shape[2]:
            raise ValueError(f"`W` must have shape (H, D, D), got {self.W.shape}.")
        if self.U.ndim != 3 or self.U.shape[::2] != self.W.shape[:2]:
            raise ValueError(
                f"`U` must have shape (H, n_out, D={self.W.shape[1]}), got {self.U.shape}."
            )

    @staticmethod
    def weight_shapes(width: int, n_out: int, n_heads: int, rank: int) -> dict:
        """Each weight's shape for tokens of width D (`rank` is the factorized form's)."""
        del rank
        return {"W": (n_heads, width, width), "U": (n_heads, n_out, width)}

    def __call__(self, prompt: Prompt) -> Float[Array, " n_out"]:
        _check_width(prompt, self.W.shape[-1])
        tokens = context_tokens(prompt)
        scores = (self.W @ query_token(prompt)) @ tokens.T
        mixed = attend(scores, tokens, self.kind)
        return jnp.einsum("hoD,hD->o", self.U, mixed)

    def merged(self) -> "MergedAttention":
        return self

    def predict_members(self, prompts: Prompt) -> Float[Array, "m B n_out"]:
        """`self` stacked over members (leading axis m): every member's prediction of every
        prompt of the shared batch `prompts`, every member at once (`shared_prompt_predictions`)."""
        _check_width(prompts, self.W.shape[-1])
        return shared_prompt_predictions(self.W, self.U, self.kind, prompts)


class FactorizedAttention(AbstractAttention):
    """Multi-head attention in factorized weights Q, K, V, O (one set per head).

    score_{h,l} = <Q_h z_q, K_h z_l> / √D and ŷ = Σ_h O_h V_h Σ_l a_{h,l} z_l. With r = D_v = D
    this is the softmax model of Chen et al. and He et al.; a smaller r gives low-rank K, Q.

    **Fields:**

    - `Q`, `K`: shape `(H, r, D)`.
    - `V`: shape `(H, D_v, D)`.
    - `O`: shape `(H, n_out, D_v)`.
    - `kind`: `SoftmaxScores()` or `LinearScores()`, or their names `"softmax"`, `"linear"`.
    """

    Q: Float[Array, "H r D"]
    K: Float[Array, "H r D"]
    V: Float[Array, "H Dv D"]
    O: Float[Array, "H n_out Dv"]
    kind: AbstractAttentionKind = eqx.field(static=True, converter=attention_kind)

    def __check_init__(self):
        if self.Q.shape != self.K.shape or self.Q.ndim != 3:
            raise ValueError(
                f"`Q` and `K` must share shape (H, r, D), got {self.Q.shape}, {self.K.shape}."
            )
        n_heads, _, width = self.Q.shape
        if self.V.ndim != 3 or self.V.shape[0] != n_heads or self.V.shape[2] != width:
            raise ValueError(
                f"`V` must have shape (H={n_heads}, D_v, D={width}), got {self.V.shape}."
            )
        if self.O.ndim != 3 or self.O.shape[0] != n_heads or self.O.shape[2] != self.V.shape[1]:
            raise ValueError(
                f"`O` must have shape (H={n_heads}, n_out, D_v={self.V.shape[1]}), "
                f"got {self.O.shape}."
            )

    @staticmethod
    def weight_shapes(width: int, n_out: int, n_heads: int, rank: int) -> dict:
        """Each weight's shape for tokens of width D, with Q, K of rank r."""
        return {
            "Q": (n_heads, rank, width),
            "K": (n_heads, rank, width),
            "V": (n_heads, width, width),
            "O": (n_heads, n_out, width),
        }

    def __call__(self, prompt: Prompt) -> Float[Array, " n_out"]:
        _check_width(prompt, self.Q.shape[-1])
        tokens = context_tokens(prompt)
        query = jnp.einsum("hrD,D->hr", self.Q, query_token(prompt))
        key_side = jnp.einsum("hrD,hr->hD", self.K, query) / math.sqrt(tokens.shape[-1])
        mixed = attend(key_side @ tokens.T, tokens, self.kind)
        values = jnp.einsum("hvD,hD->hv", self.V, mixed)
        return jnp.einsum("hov,hv->o", self.O, values)

    def merged(self) -> MergedAttention:
        width = self.Q.shape[-1]
        W = jnp.einsum("hrD,hrE->hDE", self.K, self.Q) / math.sqrt(width)
        U = self.O @ self.V
        return MergedAttention(W=W, U=U, kind=self.kind)

    def predict_members(self, prompts: Prompt) -> Float[Array, "m B n_out"]:
        """As `MergedAttention.predict_members`, through W = KᵀQ/√D and U = OV (formed here,
        inside whatever is differentiated, so gradients reach Q, K, V, O exactly)."""
        return eqx.filter_vmap(lambda member: member.merged())(self).predict_members(prompts)
