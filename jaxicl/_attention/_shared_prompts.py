"""Many members' predictions on one shared batch of prompts, as GEMMs over shared features.

When every member of an ensemble sees the same prompts (the trainer's default), the scores of
all members are one matrix product: z_lᵀ W_{m,h} z_q = vec(W_{m,h}) · vec(z_l z_qᵀ), so with
the prompts' outer-product features F[b, l] = vec(z_{b,l} z_{q,b}ᵀ) (length D²) the scores of
every member and head are F @ Wᵀ, one GEMM with the members and heads as its wide side.
Likewise the values U_{m,h} z_{b,l} of every member are one GEMM against the tokens. The
softmax and the weighted sum over the context then run elementwise with members and heads as
the contiguous (vectorized) axis.

Per member this is the same function as `MergedAttention.__call__`, evaluated in another
order: vmap of the per-prompt model contracts length-D vectors per member and prompt, which
neither the matrix units nor the vector lanes fill. Factorized weights enter through
W = KᵀQ/√D and U = OV inside the differentiated function, so gradients stay exact.
"""

import jax.numpy as jnp
from jaxtyping import Array, Float

from .._tasks._prompt import Prompt, context_tokens, query_token
from ._kinds import AbstractAttentionKind


def shared_prompt_predictions(
    W: Float[Array, "m H D D"],
    U: Float[Array, "m H n_out D"],
    kind: AbstractAttentionKind,
    prompts: Prompt,
) -> Float[Array, "m B n_out"]:
    """Every member's prediction for every prompt of a batch (leading axis B) shared by all.

    `W`, `U`: the members' merged weights, stacked on a leading member axis; `kind`:
    how scores become attention weights.
    """
    n_members, n_heads, width, _ = W.shape
    n_out = U.shape[2]
    tokens = context_tokens(prompts)  # (B, L, D)
    query = query_token(prompts)  # (B, D)
    n_prompts, n_ctx, _ = tokens.shape
    if query.ndim != 2 or tokens.shape[-1] != width:
        raise ValueError(
            f"expected a batch of prompts with tokens of width D = {width}, got tokens of "
            f"shape {tokens.shape} and queries of shape {query.shape}."
        )
    features = jnp.einsum("bld,be->blde", tokens, query).reshape(n_prompts, n_ctx, width**2)
    # Every array below is (B, L, m·H) or (B, m·H): the (member, head) axis minor, where the
    # vector lanes run. XLA's CPU reductions over arrays with a unit or small minor axis ran
    # 20× slower, hence one 3-d product per output rather than one 4-d one.
    # columns ordered (head, member), so the sum over heads is over a major axis
    columns = lambda A: jnp.swapaxes(A, 0, 1).reshape(n_heads * n_members, -1).T  # noqa: E731
    scores = features @ columns(W.reshape(n_members, n_heads, width**2))
    weights = kind.weights(scores, axis=1)
    outputs = []
    for o in range(n_out):
        values = tokens @ columns(U[:, :, o])
        heads = jnp.sum(weights * values, axis=1)
        outputs.append(heads.reshape(n_prompts, n_heads, n_members).sum(axis=1))
    return jnp.stack(outputs, axis=-1).transpose(1, 0, 2)
