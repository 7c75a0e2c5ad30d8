"""One in-context regression prompt, and its token view for attention models."""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float


class Prompt(eqx.Module):
    """A single prompt: L labelled context examples and one query.

    **Fields:**

    - `x`: context inputs, shape `(n_ctx, d)`.
    - `y`: context labels, shape `(n_ctx, n_out)` (one column per task).
    - `query_x`: the query input, shape `(d,)`.
    - `query_y`: the query target the model should predict, shape `(n_out,)`.

    Batches of prompts are the same class with a leading axis, produced by `jax.vmap`.
    """

    x: Float[Array, "n_ctx d"]
    y: Float[Array, "n_ctx n_out"]
    query_x: Float[Array, " d"]
    query_y: Float[Array, " n_out"]


def context_tokens(prompt: Prompt) -> Float[Array, "*batch n_ctx D"]:
    """Context tokens z_l = (x_l, y_l), stacked as rows: the transpose of Z = [z_1 .. z_L]
    (of each prompt, for a batch of prompts)."""
    return jnp.concatenate([prompt.x, prompt.y], axis=-1)


def query_token(prompt: Prompt) -> Float[Array, "*batch D"]:
    """Query token z_q = (x_q, 0): the label slot is empty (of each prompt of a batch)."""
    return jnp.concatenate([prompt.query_x, jnp.zeros_like(prompt.query_y)], axis=-1)
