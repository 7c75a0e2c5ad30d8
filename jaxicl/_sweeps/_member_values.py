"""Member axes reach the computation: each member's optimizer is its study's `optimizer()` built
with that member's own values of the member axes (traced), and an axis the run never reads is
refused before the sweep starts.

Why: a study that writes `optax.sgd(self.learning_rate)` or `optax.adam(self.learning_rate)`
and sweeps `learning_rate` as a member axis must train each member at its own rate. Building
the optimizer once from the study's default would train every member at that default while the
dataset labels them with the swept values: a silently wrong result.
"""

from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax._src.interpreters import partial_eval

from ._study import AbstractStudy


class MemberOptState(NamedTuple):
    """A member's optimizer state: its member-axis values (in `member_axes` order) and the
    state of its own optimizer."""

    values: tuple
    inner: Any


def with_member_values(study: AbstractStudy, values: dict) -> AbstractStudy:
    """`study` with its member-axis fields replaced by `values` (traced arrays allowed: the
    fields were checked with the concrete values when the grid's studies were built)."""
    names = tuple(values)
    if not names:
        return study
    return eqx.tree_at(lambda s: tuple(getattr(s, n) for n in names), study, tuple(values.values()))


def _dtype(tree):
    leaves = [x for x in jax.tree.leaves(tree) if eqx.is_inexact_array(x)]
    return leaves[0].dtype if leaves else None


def _at_precision(values: tuple, like) -> tuple:
    """A member's values at its parameters' precision (strict promotion mixes no dtypes)."""
    dtype = _dtype(like)
    return tuple(jnp.asarray(v) if dtype is None else jnp.asarray(v, dtype) for v in values)


def member_optimizer(study: AbstractStudy) -> optax.GradientTransformation:
    """The optimizer the trainer runs for every member: `study.optimizer()` rebuilt inside the
    member's update from the values in its state (`MemberOptState`). `init` starts from the
    study's own values; `member_optimizer_state` from a member's."""
    names = tuple(type(study).member_axes)

    def build(values: tuple):
        return with_member_values(study, dict(zip(names, values))).optimizer()

    def init(params):
        values = _at_precision(tuple(getattr(study, n) for n in names), params)
        return MemberOptState(values, build(values).init(params))

    def update(updates, state, params=None):
        inner_updates, inner = build(state.values).update(updates, state.inner, params)
        return inner_updates, MemberOptState(state.values, inner)

    return optax.GradientTransformation(init, update)


def member_optimizer_state(study: AbstractStudy, params, values: dict) -> MemberOptState:
    """One member's `MemberOptState` from its own member-axis `values` (scalars)."""
    names = tuple(type(study).member_axes)
    ordered = _at_precision(tuple(values[n] for n in names), params)
    inner = with_member_values(study, dict(zip(names, ordered))).optimizer().init(params)
    return MemberOptState(ordered, inner)


def unused_inputs(fn, values: dict) -> tuple[str, ...]:
    """The names of `values` that nothing `fn(values)` returns depends on, from the traced
    program with its dead code removed (an input flowing only into unused results counts as
    unused)."""
    closed = jax.make_jaxpr(fn)(values)
    _, used = partial_eval.dce_jaxpr(closed.jaxpr, [True] * len(closed.jaxpr.outvars))
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(values)[0]]
    by_name = {name: jax.tree_util.keystr((jax.tree_util.DictKey(name),)) for name in values}
    return tuple(name for name, path in by_name.items() if not used[paths.index(path)])
