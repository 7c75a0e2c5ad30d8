"""The state a run carries between steps and chunks, and the records it leaves behind."""

import equinox as eqx
import jax.numpy as jnp
import jax.tree_util as jtu
import optax
from jaxtyping import Array, Bool, Float, Int, PyTree


class TrainState(eqx.Module):
    """Everything needed to continue a run: model, optimizer state and counters.

    **Fields:**

    - `model`: the current model.
    - `opt_state`: the optax state for the model's inexact-array leaves.
    - `step`: optimizer steps taken so far.
    - `time`: gradient-flow time Σ lr (NaN when the optimizer does not expose its learning rate).
    - `diverged`: set, and the member frozen, once its loss or update was non-finite.
    - `member`: this member's index in its ensemble; it selects the per-member data stream.
    - `stopped`: set, and the member frozen, once `Record.stop` said its outcome is final.
    """

    model: PyTree
    opt_state: PyTree
    step: Int[Array, ""]
    time: Float[Array, ""]
    diverged: Bool[Array, ""]
    member: Int[Array, ""]
    stopped: Bool[Array, ""]


class Trajectory(eqx.Module):
    """Records taken every `record_every` steps, at steps 0, r, 2r, ... (before that step's update).

    **Fields** (leading axis `n_records`; an ensemble adds a leading member axis):

    - `step`, `time`: step index and gradient-flow time Σ lr at the record.
    - `loss`: the training loss at that step (on that step's batch).
    - `loss_mean`: the mean training loss over the `record_every` steps that follow the record;
      far less noisy when every member shares each step's batch.
    - `diverged`: whether the member was frozen by the end of the record's block (the
      `record_every` steps that follow the record), so the last record's flag is the final
      state's: a member that diverges in the last block is never reported healthy.
    - `observables`: whatever `observe(model)` returned, stacked over records.
    - `stopped`: whether the member was stopped by `Record.stop` at or before the record (a
      member stopped at a record is frozen from that record's step on, so the record and every
      later one are its frozen state's).
    """

    step: Int[Array, "*members n_records"]
    time: Float[Array, "*members n_records"]
    loss: Float[Array, "*members n_records"]
    loss_mean: Float[Array, "*members n_records"]
    diverged: Bool[Array, "*members n_records"]
    observables: PyTree
    stopped: Bool[Array, "*members n_records"]


def learning_rate(opt_state, default):
    """The learning rate an `optax.inject_hyperparams` optimizer used last, else `default`."""
    return optax.tree_utils.tree_get(
        opt_state, "learning_rate", default, filtering=lambda _, value: eqx.is_array(value)
    )


def init_train_state(
    model: PyTree, optimizer: optax.GradientTransformation, *, member=0
) -> TrainState:
    """A fresh `TrainState` at step 0. `member` is the index used for per-member data streams.

    For an ensemble use `init_ensemble_state`, which numbers the members.
    """
    params = eqx.filter(model, eqx.is_inexact_array)
    opt_state = optimizer.init(params)
    leaves = jtu.tree_leaves(params)
    dtype = leaves[0].dtype if leaves else jnp.dtype(jnp.float32)
    has_learning_rate = learning_rate(opt_state, None) is not None
    return TrainState(
        model=model,
        opt_state=opt_state,
        step=jnp.asarray(0, jnp.int32),
        time=jnp.asarray(0.0 if has_learning_rate else jnp.nan, dtype),
        diverged=jnp.asarray(False),
        member=jnp.asarray(member, jnp.int32),
        stopped=jnp.asarray(False),
    )


def init_ensemble_state(
    models: PyTree, optimizer: optax.GradientTransformation, *, first_member: int = 0
) -> TrainState:
    """Stacked `TrainState`s for stacked models; member i gets index `first_member + i`."""
    leaves = jtu.tree_leaves(eqx.filter(models, eqx.is_array))
    if not leaves:
        raise ValueError("`models` has no array leaves; expected a stacked ensemble of models.")
    members = first_member + jnp.arange(leaves[0].shape[0], dtype=jnp.int32)

    def init_member(model, member):
        return init_train_state(model, optimizer, member=member)

    return eqx.filter_vmap(init_member)(models, members)
