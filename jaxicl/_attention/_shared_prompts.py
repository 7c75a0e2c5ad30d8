"""Many members' predictions on one shared batch of prompts, with members as the vector axis.

When every member of an ensemble sees the same prompts (the trainer's default), the work of
all members is a few products with the members and heads as their wide side:

- the key side W_{m,h} z_q of every member, head and prompt is one GEMM of the queries (B × D)
  against every W stacked as (D × D·m·H);
- each prompt's scores z_lᵀ W_{m,h} z_q are its context tokens (L × D) against its own
  (D × m·H) block of key sides, a batched product with the (member, head) axis minor;
- the values U_{m,h} z_l of every member are one GEMM of the tokens against the stacked U.

The softmax and the weighted sum over the context then run elementwise with members and heads
as the contiguous (vectorized) axis, through the kind's `mix` (softmax's has its derivative
written out, `_softmax_mix.py`).

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
    n_columns = n_heads * n_members
    # Every array below is (B, L, H·m) or (B, H·m): the (head, member) axis minor, where the
    # vector lanes run (XLA's CPU reductions over a unit or small minor axis ran 20× slower).
    # Columns are ordered (head, member), so the sum over heads is over a major axis.
    # Measured on a 2-core CPU, one core, 32 members a chunk, forward and backward: scoring
    # through the key sides took 0.69× the time of one GEMM against the prompts'
    # outer-product features vec(z_l z_qᵀ) (B·L × D²), the form before, which does D times
    # the flops; the products are 2-d where they can be (batched 3-d GEMMs and their
    # gradients' transposes took 2.4× as long).
    by_query = jnp.transpose(W, (3, 2, 1, 0)).reshape(width, width * n_columns)
    key_sides = (query @ by_query).reshape(n_prompts, width, n_columns)
    scores = jnp.einsum("bld,bdc->blc", tokens, key_sides)
    token_rows = tokens.reshape(n_prompts * n_ctx, width)
    outputs = []
    for o in range(n_out):
        value_columns = jnp.transpose(U[:, :, o], (2, 1, 0)).reshape(width, n_columns)
        values = (token_rows @ value_columns).reshape(n_prompts, n_ctx, n_columns)
        heads = kind.mix(scores, values, axis=1)
        outputs.append(heads.reshape(n_prompts, n_heads, n_members).sum(axis=1))
    return jnp.stack(outputs, axis=-1).transpose(1, 0, 2)
