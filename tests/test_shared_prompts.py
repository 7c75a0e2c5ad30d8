"""The shared-prompt kernel (every member scored at once) is the same function as the
per-member model: values and gradients in float64 against `vmap`, for every model kind, and
the trainer's results with it equal those member by member."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax
import pytest
from helpers import tree_allclose

import jaxicl as ji
from jaxicl._attention._models import AbstractAttention
from jaxicl._train._objectives import AbstractObjective
from jaxicl._train._step import JOINT_LOSS_MEMBERS


KINDS = [
    (kind, parametrization, n_out, rank)
    for kind in ("softmax", "linear")
    for parametrization in ("merged", "factorized")
    for n_out, rank in ((1, None), (2, 3))
]


def _members(kind, parametrization, n_out, rank, n_members, key):
    make = lambda k: ji.init_normal(  # noqa: E731
        d=4,
        n_out=n_out,
        n_heads=3,
        scale=0.7,
        kind=kind,
        parametrization=parametrization,
        key=k,
        **({"rank": rank} if rank and parametrization == "factorized" else {}),
    )
    return eqx.filter_vmap(make)(jr.split(key, n_members))


class MemberByMember(AbstractObjective):
    """`ICLLoss` evaluated member by member: the path every objective has."""

    loss: ji.ICLLoss

    def draw(self, key):
        return self.loss.draw(key)

    def evaluate(self, model, data):
        return self.loss.evaluate(model, data)


def _task(n_out):
    if n_out == 1:
        return ji.LinearRegression(4, 9, context_noise=0.2, query_noise=0.2)
    return ji.MultiTaskRegression(4, 9, ji.disjoint_blocks(4, n_out), context_noise=0.2)


@pytest.mark.parametrize("kind, parametrization, n_out, rank", KINDS)
def test_values_and_gradients_equal_vmap_in_float64(kind, parametrization, n_out, rank, getkey):
    models = _members(kind, parametrization, n_out, rank, 5, getkey())
    # the kernel, not the member-by-member default
    assert type(models).predict_members is not AbstractAttention.predict_members
    loss = ji.ICLLoss(_task(n_out), 7)
    data = loss.draw(getkey())
    assert data.x.dtype == jnp.float64
    params, static = eqx.partition(models, eqx.is_inexact_array)

    def total(objective):
        def f(params):
            losses = objective.evaluate_members(eqx.combine(params, static), data)
            return losses.sum(), losses

        return jax.value_and_grad(f, has_aux=True)(params)

    (_, fast), fast_grads = total(loss)
    (_, plain), plain_grads = total(MemberByMember(loss))
    assert fast.shape == (5,)
    assert jnp.allclose(fast, plain, rtol=1e-12, atol=0)
    assert tree_allclose(fast_grads, plain_grads, rtol=1e-10, atol=1e-13)
    # the per-member path is what `evaluate` computes for one model
    one = loss.evaluate(jax.tree_util.tree_map(lambda x: x[2], models), data)
    assert jnp.allclose(fast[2], one, rtol=1e-12)


def test_trainer_with_kernel_equals_member_by_member(getkey):
    """Adam on factorized softmax heads: the ensemble trained through the kernel (in chunks
    of 32, with a remainder of 8) equals the same ensemble trained member by member."""
    n_members = 40
    assert n_members >= JOINT_LOSS_MEMBERS
    models = _members("softmax", "factorized", 1, None, n_members, getkey())
    loss = ji.ICLLoss(_task(1), 16)
    adam = optax.adam(1e-2)
    kwargs = dict(steps=12, record=ji.Record(every=4), key=getkey())
    states = ji.init_ensemble_state(models, adam)
    in_chunks, at_once = ji.Members(chunk=32, shard=False), ji.Members(chunk=None, shard=False)
    fast = ji.train_ensemble_steps(states, loss, adam, members=in_chunks, **kwargs)
    plain = ji.train_ensemble_steps(states, MemberByMember(loss), adam, members=at_once, **kwargs)
    assert tree_allclose(fast, plain, rtol=1e-9, atol=1e-12)


def test_a_subclass_that_changes_the_call_is_not_given_the_parents_kernel(getkey):
    class Doubled(ji.MergedAttention):
        def __call__(self, prompt):
            return 2 * super().__call__(prompt)

    base = _members("softmax", "merged", 1, None, 3, getkey())
    doubled = eqx.filter_vmap(lambda W, U: Doubled(W=W, U=U, kind="softmax"))(base.W, base.U)
    loss = ji.ICLLoss(_task(1), 5)
    data = loss.draw(getkey())
    assert Doubled.predict_members is AbstractAttention.predict_members
    plain = MemberByMember(loss).evaluate_members(doubled, data)
    assert jnp.allclose(loss.evaluate_members(doubled, data), plain, rtol=1e-12)
    assert not jnp.allclose(loss.evaluate_members(base, data), plain)
