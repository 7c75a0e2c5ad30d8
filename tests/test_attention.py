import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jaxtyping
import pytest
from helpers import all_model_cases, make_prompt, tree_allclose

import jaxicl as ji


D_IN, N_OUT, L = 3, 2, 6


def causal_self_attention_last_row(model: ji.FactorizedAttention, prompt: ji.Prompt):
    """Independent reference: full strictly-causal self-attention over [z_1..z_L, z_q], looped.

    Position t attends to positions s < t only; the query is the last position.
    """
    tokens = jnp.concatenate([ji.context_tokens(prompt), ji.query_token(prompt)[None, :]])
    width = tokens.shape[1]
    outputs = []
    for t in range(1, tokens.shape[0]):
        out = 0.0
        for h in range(model.Q.shape[0]):
            scores = jnp.stack(
                [
                    jnp.dot(model.Q[h] @ tokens[t], model.K[h] @ tokens[s]) / math.sqrt(width)
                    for s in range(t)
                ]
            )
            weights = (
                jax.nn.softmax(scores) if isinstance(model.kind, ji.SoftmaxScores) else scores / t
            )
            mixed = sum(weights[s] * tokens[s] for s in range(t))
            out = out + model.O[h] @ (model.V[h] @ mixed)
        outputs.append(out)
    return outputs[-1]


@pytest.mark.parametrize("name, make", all_model_cases(D_IN, N_OUT))
def test_shapes_and_dtypes(name, make, getkey):
    model = make(getkey())
    prompt = make_prompt(D_IN, N_OUT, L, key=getkey())
    out = model(prompt)
    assert out.shape == (N_OUT,) and out.dtype == jnp.float64
    one_context = make_prompt(D_IN, N_OUT, 1, key=getkey())
    assert model(one_context).shape == (N_OUT,)


@pytest.mark.parametrize("kind", ["softmax", "linear"])
def test_factorized_equals_merged(kind, getkey):
    model = ji.init_normal(d=D_IN, n_out=N_OUT, n_heads=3, scale=0.7, kind=kind, key=getkey())
    prompt = make_prompt(D_IN, N_OUT, L, key=getkey())
    assert tree_allclose(model(prompt), model.merged()(prompt), rtol=1e-12)


@pytest.mark.parametrize("kind", ["softmax", "linear"])
def test_query_only_equals_causal_self_attention_row(kind, getkey):
    model = ji.init_normal(d=D_IN, n_out=N_OUT, n_heads=2, scale=0.7, kind=kind, key=getkey())
    prompt = make_prompt(D_IN, N_OUT, L, key=getkey())
    assert tree_allclose(model(prompt), causal_self_attention_last_row(model, prompt), rtol=1e-12)


def test_low_rank_factorized_shapes(getkey):
    model = ji.init_normal(d=4, n_out=1, n_heads=2, scale=0.3, kind="linear", rank=2, key=getkey())
    assert model.Q.shape == (2, 2, 5) and model.merged().W.shape == (2, 5, 5)
    assert jnp.linalg.matrix_rank(model.merged().W[0]) == 2


def test_linear_attention_equals_gd_step(getkey):
    """Linear attention with W = η I on the x-block and U reading y is one GD step from 0."""
    d, eta = 4, 0.8
    W = jnp.zeros((1, d + 1, d + 1)).at[0, :d, :d].set(eta * jnp.eye(d))
    U = jnp.zeros((1, 1, d + 1)).at[0, 0, d].set(1.0)
    model = ji.MergedAttention(W=W, U=U, kind="linear")
    prompt = make_prompt(d, 1, 9, key=getkey())
    assert tree_allclose(model(prompt), ji.gd_prediction(prompt, step=eta), rtol=1e-12)


def test_single_head_softmax_equals_kernel_smoother(getkey):
    d, omega, mu = 3, 0.4, 1.7
    W = jnp.zeros((1, d + 1, d + 1)).at[0, :d, :d].set(omega * jnp.eye(d))
    U = jnp.zeros((1, 1, d + 1)).at[0, 0, d].set(mu)
    model = ji.MergedAttention(W=W, U=U, kind="softmax")
    prompt = make_prompt(d, 1, 9, key=getkey())
    expected = ji.kernel_smoother_prediction(prompt, omega=omega, mu=mu)
    assert tree_allclose(model(prompt), expected, rtol=1e-12)


@pytest.mark.parametrize("name, make", all_model_cases(D_IN, N_OUT))
def test_vmap_equals_python_loop(name, make, getkey):
    models = eqx.filter_vmap(make)(jr.split(getkey(), 4))
    prompts = jax.vmap(lambda k: make_prompt(D_IN, N_OUT, L, key=k))(jr.split(getkey(), 5))
    batched = eqx.filter_vmap(lambda m: jax.vmap(m)(prompts), in_axes=eqx.if_array(0))(models)
    for i in range(4):
        model_i = jax.tree_util.tree_map(lambda x: x[i] if eqx.is_array(x) else x, models)
        for j in range(5):
            prompt_j = jax.tree_util.tree_map(lambda x: x[j], prompts)
            assert tree_allclose(batched[i, j], model_i(prompt_j), rtol=1e-12)


@pytest.mark.parametrize("name, make", all_model_cases(D_IN, N_OUT))
def test_jit_equals_no_jit(name, make, getkey):
    model = make(getkey())
    prompt = make_prompt(D_IN, N_OUT, L, key=getkey())
    assert tree_allclose(
        eqx.filter_jit(lambda m, p: m(p))(model, prompt), model(prompt), rtol=1e-12
    )


@pytest.mark.parametrize("name, make", all_model_cases(D_IN, N_OUT))
def test_grad_matches_finite_differences(name, make, getkey):
    model = make(getkey())
    task = ji.MultiTaskRegression(D_IN, L, ((0, 2), (1, 3)), context_noise=0.1)
    loss = ji.ICLLoss(task, 8)
    data_key = getkey()
    params, static = eqx.partition(model, eqx.is_inexact_array)
    flat, unravel = jax.flatten_util.ravel_pytree(params)

    def f(v):
        return loss(eqx.combine(unravel(v), static), key=data_key)

    grad = jax.grad(f)(flat)
    direction = jr.normal(getkey(), flat.shape)
    h = 1e-5
    fd = (f(flat + h * direction) - f(flat - h * direction)) / (2 * h)
    assert jnp.allclose(grad @ direction, fd, rtol=1e-6, atol=1e-9)


def test_bad_model_input(getkey):
    with pytest.raises(ValueError, match="`kind`"):
        ji.MergedAttention(W=jnp.zeros((1, 3, 3)), U=jnp.zeros((1, 1, 3)), kind="relu")
    # Under pytest the jaxtyping hook may catch a shape mismatch first; both are clear errors.
    with pytest.raises((ValueError, jaxtyping.TypeCheckError)):
        ji.MergedAttention(W=jnp.zeros((1, 3, 3)), U=jnp.zeros((2, 1, 3)), kind="softmax")
    with pytest.raises((ValueError, jaxtyping.TypeCheckError)):
        ji.FactorizedAttention(
            Q=jnp.zeros((1, 2, 3)),
            K=jnp.zeros((1, 2, 3)),
            V=jnp.zeros((1, 3, 3)),
            O=jnp.zeros((1, 1, 4)),
            kind="softmax",
        )


def test_a_task_and_model_of_different_widths_name_both():
    import jax.random as jr

    import jaxicl as ji

    task = ji.LinearRegression(5, 10)
    model = ji.init_normal(d=7, n_out=1, n_heads=2, scale=0.1, key=jr.key(0))  # for d = 7
    prompt = task.sample(key=jr.key(1))
    with pytest.raises(ValueError, match=r"d \+ n_out = 5 \+ 1 = 6, but the model's weights have"):
        model(prompt)
