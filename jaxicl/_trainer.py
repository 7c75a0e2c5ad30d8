"""The trainer: a pure `lax.scan` over optimizer steps, for one model or a vmapped ensemble.

Randomness is step-indexed: step t of a run with data key k uses `fold_in(k, t)` (shared data)
or `fold_in(fold_in(k, member), t)` (per-member data). So a member's trajectory does not depend
on the ensemble size, on how the steps are split into chunks, or on resumption.
"""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import optax
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray, PyTree

from . import _validation as check


Objective = Callable[..., Float[Array, ""]]


class TrainState(eqx.Module):
    """Everything needed to continue a run: model, optimizer state and counters.

    **Fields:**

    - `model`: the current model.
    - `opt_state`: the optax state for the model's inexact-array leaves.
    - `step`: optimizer steps taken so far.
    - `time`: gradient-flow time Σ lr (NaN when the optimizer does not expose its learning rate).
    - `diverged`: set, and the member frozen, once its loss or update was non-finite.
    - `member`: this member's index in its ensemble; it selects the per-member data stream.
    """

    model: PyTree
    opt_state: PyTree
    step: Int[Array, ""]
    time: Float[Array, ""]
    diverged: Bool[Array, ""]
    member: Int[Array, ""]


class Trajectory(eqx.Module):
    """Records taken every `record_every` steps, at steps 0, r, 2r, ... (before that step's update).

    **Fields** (leading axis `n_records`; an ensemble adds a leading member axis):

    - `step`, `time`: step index and gradient-flow time Σ lr at the record.
    - `loss`: the training loss at that step (on that step's batch).
    - `diverged`: whether the member was frozen by then.
    - `observables`: whatever `observe(model)` returned, stacked over records.
    """

    step: Int[Array, " n_records"]
    time: Float[Array, " n_records"]
    loss: Float[Array, " n_records"]
    diverged: Bool[Array, " n_records"]
    observables: PyTree


def init_train_state(
    model: PyTree, optimizer: optax.GradientTransformation, *, member=0
) -> TrainState:
    """A fresh `TrainState` at step 0. `member` is the index used for per-member data streams.

    For an ensemble use `init_ensemble_state`, which numbers the members.
    """
    params = eqx.filter(model, eqx.is_inexact_array)
    opt_state = optimizer.init(params)
    has_learning_rate = _learning_rate(opt_state, None) is not None
    return TrainState(
        model=model,
        opt_state=opt_state,
        step=jnp.asarray(0, jnp.int32),
        time=jnp.asarray(0.0 if has_learning_rate else jnp.nan, _float_dtype(params)),
        diverged=jnp.asarray(False),
        member=jnp.asarray(member, jnp.int32),
    )


def init_ensemble_state(
    models: PyTree, optimizer: optax.GradientTransformation, *, first_member: int = 0
) -> TrainState:
    """Stacked `TrainState`s for stacked models; member i gets index `first_member + i`."""
    n_members = _ensemble_size(models)
    members = first_member + jnp.arange(n_members, dtype=jnp.int32)

    def init_member(model, member):
        return init_train_state(model, optimizer, member=member)

    return eqx.filter_vmap(init_member)(models, members)


def _float_dtype(params) -> jnp.dtype:
    leaves = jtu.tree_leaves(params)
    return leaves[0].dtype if leaves else jnp.dtype(jnp.float32)


def _ensemble_size(models) -> int:
    leaves = jtu.tree_leaves(eqx.filter(models, eqx.is_array))
    if not leaves:
        raise ValueError("`models` has no array leaves; expected a stacked ensemble of models.")
    return leaves[0].shape[0]


def _learning_rate(opt_state, default):
    """The learning rate an `optax.inject_hyperparams` optimizer used last, else `default`."""
    return optax.tree_utils.tree_get(
        opt_state, "learning_rate", default, filtering=lambda _, value: eqx.is_array(value)
    )


def _select(keep_new, new_tree, old_tree):
    return jtu.tree_map(lambda n, o: jnp.where(keep_new, n, o), new_tree, old_tree)


def _all_finite(tree) -> Bool[Array, ""]:
    leaves = jtu.tree_leaves(eqx.filter(tree, eqx.is_inexact_array))
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def _step(state: TrainState, objective, optimizer, step_key) -> tuple[TrainState, Array]:
    """One optimizer step; a non-finite loss or update freezes the member instead of applying."""
    params, static = eqx.partition(state.model, eqx.is_inexact_array)

    def loss_of(p):
        return objective(eqx.combine(p, static), key=step_key)

    loss, grads = jax.value_and_grad(loss_of)(params)
    # Optax mixes Python floats with int counters; keep its arithmetic under standard promotion
    # even when a caller (e.g. the test suite) runs jaxicl under strict promotion.
    with jax.numpy_dtype_promotion("standard"):
        updates, opt_state = optimizer.update(grads, state.opt_state, params)
    new_params = eqx.apply_updates(params, updates)
    healthy = jnp.isfinite(loss) & _all_finite(new_params) & ~state.diverged
    lr = jnp.asarray(_learning_rate(opt_state, jnp.nan), state.time.dtype)
    new_state = TrainState(
        model=eqx.combine(_select(healthy, new_params, params), static),
        opt_state=_select(healthy, opt_state, state.opt_state),
        step=state.step + 1,
        time=jnp.where(healthy, state.time + lr, state.time),
        diverged=~healthy,
        member=state.member,
    )
    return new_state, loss


def _run(state, objective, optimizer, key, start_step, steps, record_every, observe, shared_data):
    # Step keys come from `start_step + i`, which is unbatched even inside an ensemble vmap, so
    # shared data is drawn once per step rather than once per member.
    data_key = key if shared_data else jr.fold_in(key, state.member)

    def one_step(carry, step):
        return _step(carry, objective, optimizer, jr.fold_in(data_key, step))

    def one_block(carry, block_steps):
        observed = observe(carry.model)
        header = (carry.step, carry.time, carry.diverged)
        carry, losses = lax.scan(one_step, carry, block_steps)
        return carry, (*header, losses[0], observed)

    n_blocks = steps // record_every
    block_steps = start_step + jnp.arange(steps, dtype=jnp.int32).reshape(n_blocks, record_every)
    state, (step, time, diverged, loss, observed) = lax.scan(one_block, state, block_steps)
    return state, Trajectory(
        step=step, time=time, loss=loss, diverged=diverged, observables=observed
    )


def _no_observables(model) -> tuple:
    return ()


def _check_schedule(steps, record_every) -> None:
    check.positive_int("steps", steps)
    check.positive_int("record_every", record_every)
    if steps % record_every:
        raise ValueError(
            f"`steps` ({steps}) must be a multiple of `record_every` ({record_every})."
        )


@eqx.filter_jit
def _train_steps_jit(state, objective, optimizer, key, steps, record_every, observe):
    args = (objective, optimizer, key, state.step, steps, record_every, observe, True)
    return _run(state, *args)


@eqx.filter_jit
def _train_ensemble_steps_jit(
    states, objective, optimizer, key, steps, record_every, observe, shared_data
):
    args = (objective, optimizer, key, states.step[0], steps, record_every, observe, shared_data)
    return eqx.filter_vmap(lambda state: _run(state, *args))(states)


def train_steps(
    state: TrainState,
    objective: Objective,
    optimizer: optax.GradientTransformation,
    *,
    steps: int,
    record_every: int,
    observe: Callable[[PyTree], PyTree] = _no_observables,
    key: PRNGKeyArray,
) -> tuple[TrainState, Trajectory]:
    """Continue one run for `steps` more steps; compiled once per shape and configuration.

    Running 100 steps, or 40 then 60 from the returned state with the same `key`, gives the same
    result: each step's data key is `fold_in(key, state.step)`.

    **Arguments:**

    - `state`: from `init_train_state` or a previous call.
    - `objective`: maps `(model, key=...)` to a scalar loss, e.g. `ICLLoss`.
    - `optimizer`: an optax transformation. Wrap it in `optax.inject_hyperparams` (as
      `jaxicl.sgd` does) to record gradient-flow time Σ lr.
    - `steps`, `record_every`: `steps` must be a multiple of `record_every`.
    - `observe`: maps a model to a pytree of observables recorded with the loss.
    - `key`: the data key of the run.

    **Returns:** `(state, trajectory)`.
    """
    _check_schedule(steps, record_every)
    return _train_steps_jit(state, objective, optimizer, key, steps, record_every, observe)


def train(
    model: PyTree,
    objective: Objective,
    optimizer: optax.GradientTransformation,
    *,
    steps: int,
    record_every: int,
    observe: Callable[[PyTree], PyTree] = _no_observables,
    key: PRNGKeyArray,
) -> tuple[PyTree, Trajectory]:
    """Train one model from scratch (`train_steps` from a fresh state).

    **Returns:** `(model, trajectory)`.
    """
    state, trajectory = train_steps(
        init_train_state(model, optimizer),
        objective,
        optimizer,
        steps=steps,
        record_every=record_every,
        observe=observe,
        key=key,
    )
    return state.model, trajectory


def train_ensemble_steps(
    states: TrainState,
    objective: Objective,
    optimizer: optax.GradientTransformation,
    *,
    steps: int,
    record_every: int,
    observe: Callable[[PyTree], PyTree] = _no_observables,
    shared_data: bool = True,
    key: PRNGKeyArray,
) -> tuple[TrainState, Trajectory]:
    """Continue a stacked ensemble (from `init_ensemble_state`) in one compiled program.

    With `shared_data=True` (the default) every member sees the same prompts at a given step
    (common random numbers): the prompts are drawn once per step, not once per member, which
    matters on CPU where random-number generation dominates. With `shared_data=False` member i
    draws from `fold_in(key, i)`. Either way member i's trajectory equals training it alone
    with `train_steps` on the same keys. A diverging member is frozen and flagged; the others
    carry on.

    **Returns:** stacked `(states, trajectories)` with a leading member axis.
    """
    _check_schedule(steps, record_every)
    if not isinstance(shared_data, bool):
        raise ValueError(f"`shared_data` must be True or False, got {shared_data!r}.")
    if not bool(jnp.all(states.step == states.step[0])):
        raise ValueError(
            "`states` must all be at the same step; continue mixed ensembles separately."
        )
    return _train_ensemble_steps_jit(
        states, objective, optimizer, key, steps, record_every, observe, shared_data
    )


def train_ensemble(
    models: PyTree,
    objective: Objective,
    optimizer: optax.GradientTransformation,
    *,
    steps: int,
    record_every: int,
    observe: Callable[[PyTree], PyTree] = _no_observables,
    shared_data: bool = True,
    key: PRNGKeyArray,
) -> tuple[PyTree, Trajectory]:
    """Train a stacked ensemble from scratch. Returns stacked `(models, trajectories)`."""
    states, trajectories = train_ensemble_steps(
        init_ensemble_state(models, optimizer),
        objective,
        optimizer,
        steps=steps,
        record_every=record_every,
        observe=observe,
        shared_data=shared_data,
        key=key,
    )
    return states.model, trajectories


def sgd(learning_rate) -> optax.GradientTransformation:
    """Plain SGD (`optax.sgd`) with its learning rate exposed, so the trainer records Σ lr."""
    return optax.inject_hyperparams(optax.sgd)(learning_rate=learning_rate)
