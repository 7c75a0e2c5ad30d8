"""One step of the trainer and the scan over steps and records: drawing data, each member's
loss and gradient, the optimizer update, `after_step`, divergence freezing, and the records.

Randomness is step-indexed: step t of a run with data key k uses `fold_in(k, t)` (shared data)
or `fold_in(fold_in(k, member), t)` (per-member data). So a member's trajectory does not depend
on the ensemble size, on member chunking, on how steps are split into calls, or on resumption.
"""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
from jaxtyping import Array, Bool, Float, PRNGKeyArray, PyTree

from ._members import map_members
from ._objectives import AbstractObjective
from ._options import Record
from ._state import TrainState, Trajectory, learning_rate


Objective = Callable[..., Float[Array, ""]]
AfterStep = Callable[[PyTree, PyTree, Array, PRNGKeyArray], PyTree]


class StepProgram(eqx.Module):
    """What one compiled training program does besides the objective and optimizer: `steps`
    steps recorded as `record` says, `after_step` after each step, on data shared by the
    members or not, `member_chunk` members mapped at once (None: all; "auto" is resolved
    before a program is built)."""

    steps: int = eqx.field(static=True)
    record: Record = Record()
    after_step: AfterStep | None = None
    shared_data: bool = eqx.field(static=True, default=True)
    member_chunk: int | None = eqx.field(static=True, default=None)


def _draw_and_evaluate(objective):
    """Split an objective into draw(key) -> data, evaluate(model, data) -> loss and
    evaluate_members(stacked models, data) -> each member's loss (`None`: member by member)."""
    if isinstance(objective, AbstractObjective):
        return objective.draw, objective.evaluate, objective.evaluate_members
    return (lambda key: key), (lambda model, key: objective(model, key=key)), None


def _member_by_member(evaluate):
    """`evaluate(model, data)` as a loss of stacked models on the same data."""
    return lambda models, data: eqx.filter_vmap(lambda model: evaluate(model, data))(models)


def _select(keep_new, new_tree, old_tree):
    return jtu.tree_map(lambda n, o: jnp.where(keep_new, n, o), new_tree, old_tree)


def _all_finite(tree) -> Bool[Array, ""]:
    leaves = jtu.tree_leaves(eqx.filter(tree, eqx.is_inexact_array))
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def _apply(state: TrainState, loss, grads, optimizer, data, after_step, step, key) -> TrainState:
    """One optimizer step from the member's gradients, then `after_step` (if any) on the
    updated model; a non-finite loss or result freezes the member instead of applying, and a
    stopped member stays as it is."""
    params, static = eqx.partition(state.model, eqx.is_inexact_array)
    # Optax mixes Python floats with int counters; keep its arithmetic under standard promotion
    # even when a caller (e.g. the test suite) runs jaxicl under strict promotion.
    with jax.numpy_dtype_promotion("standard"):
        updates, opt_state = optimizer.update(grads, state.opt_state, params)
    new_params = eqx.apply_updates(params, updates)
    if after_step is not None:
        moved = after_step(eqx.combine(new_params, static), data, step, key)
        new_params = eqx.filter(moved, eqx.is_inexact_array)
    finite = jnp.isfinite(loss) & _all_finite(new_params)
    # a stopped member is frozen as it stands: its update is not applied, whatever it holds
    moves = finite & ~state.diverged & ~state.stopped
    lr = jnp.asarray(learning_rate(opt_state, jnp.nan), state.time.dtype)
    return TrainState(
        model=eqx.combine(_select(moves, new_params, params), static),
        opt_state=_select(moves, opt_state, state.opt_state),
        step=state.step + 1,
        time=jnp.where(moves, state.time + lr, state.time),
        diverged=state.diverged | (~finite & ~state.stopped),
        member=state.member,
        stopped=state.stopped,
    )


def _member_gradients(states: TrainState, evaluate_members, data):
    """Each stacked member's loss and gradient on the same `data`: the gradient of the sum of
    the members' losses, which is each member's own since members do not interact."""
    params, static = eqx.partition(states.model, eqx.is_inexact_array)

    def total(params):
        losses = evaluate_members(eqx.combine(params, static), data)
        return losses.sum(), losses

    (_, losses), grads = jax.value_and_grad(total, has_aux=True)(params)
    return losses, grads


# the fewest members on a device for which the objective's joint loss is used (see `_run`)
JOINT_LOSS_MEMBERS = 8

# Per-member randomness of `after_step` comes from its own stream, so it never correlates with
# the data, which may be shared by all members.
_AFTER_STEP_STREAM = 0x5EED


def run_steps(states, objective, optimizer, key, start_step, program: "StepProgram"):
    """`program.steps` steps of the stacked `states` from `start_step`: the whole training loop
    of one device (members mapped by `map_members`), returning `(states, trajectory)`."""
    steps, record_every = program.steps, program.record.interval(program.steps)
    observe, stop, shared_data = program.record.observe, program.record.stop, program.shared_data
    member_chunk, after_step = program.member_chunk, program.after_step
    draw, evaluate, evaluate_members = _draw_and_evaluate(objective)
    after_key = jr.fold_in(key, _AFTER_STEP_STREAM)

    # The objective's joint loss of a chunk (e.g. the shared-prompt kernel) pays per step a
    # fixed cost that member-by-member evaluation does not. On a 2-core CPU (2 devices) the
    # current kernel lost at 1, 2 and 4 members a device (536, 1,132, 2,198 against 760,
    # 1,220, 2,709 member-steps/s) and won from 8 (5,829 and 6,019 against 4,460 and 3,589 at 16
    # members); the first kernel lost below 64. The member count of this device is static here.
    n_local = jtu.tree_leaves(eqx.filter(states, eqx.is_array))[0].shape[0]
    joint_loss = evaluate_members
    if joint_loss is None or n_local < JOINT_LOSS_MEMBERS:
        joint_loss = _member_by_member(evaluate)

    def member_key(state, step):
        return jr.fold_in(jr.fold_in(after_key, state.member), step)

    def own_data_step(state, step):
        data = draw(jr.fold_in(jr.fold_in(key, state.member), step))
        params, static = eqx.partition(state.model, eqx.is_inexact_array)
        loss, grads = jax.value_and_grad(lambda p: evaluate(eqx.combine(p, static), data))(params)
        # `step` (not `state.step`) is unbatched, so a move scheduled on it branches for real.
        new_state = _apply(
            state, loss, grads, optimizer, data, after_step, step, member_key(state, step)
        )
        return new_state, loss

    def one_step(states, step):
        if not shared_data:
            return map_members(
                eqx.filter_vmap(lambda s: own_data_step(s, step)), states, member_chunk
            )
        # Shared data is drawn once per step, outside the member map; `step` is unbatched.
        data = draw(jr.fold_in(key, step))

        def chunk_step(chunk):
            losses, grads = _member_gradients(chunk, joint_loss, data)
            apply = lambda s, loss, g: _apply(  # noqa: E731
                s, loss, g, optimizer, data, after_step, step, member_key(s, step)
            )
            return eqx.filter_vmap(apply)(chunk, losses, grads), losses

        return map_members(chunk_step, states, member_chunk)

    def one_block(states, block_steps):
        observed = map_members(eqx.filter_vmap(lambda s: observe(s.model)), states, member_chunk)
        if stop is not None:  # a member stopped at this record is frozen from its step on
            final = map_members(eqx.filter_vmap(lambda s: stop(s.model)), states, member_chunk)
            final = jnp.asarray(final)
            if final.dtype != jnp.bool_:  # a number would stop every member where it is nonzero
                raise ValueError(
                    f"`Record.stop` must return a boolean (e.g. `loss < 0.1`), got {final.dtype}."
                )
            final = final.reshape(states.stopped.shape)
            states = eqx.tree_at(
                lambda s: s.stopped, states, states.stopped | (final & ~states.diverged)
            )
        header = (states.step, states.time)
        states, losses = lax.scan(one_step, states, block_steps)
        # The mean loss of the block sums the stacked losses one step after another in a loop,
        # not as a reduction: XLA's CPU backend hands a reduction over 32 KiB to a library
        # kernel (YNNPACK) that sums in another order, so the mean's last bit depended on how
        # many members shared the call (and compaction, which trains fewer, stores other bits).
        total, _ = lax.scan(
            lambda total, loss: (total + loss, None), jnp.zeros_like(losses[0]), losses
        )
        # The flag at the end of the block: divergence inside the last block is still reported.
        return states, (
            *header,
            states.diverged,
            losses[0],
            total / record_every,
            observed,
            states.stopped,
        )

    n_blocks = steps // record_every
    block_steps = start_step + jnp.arange(steps, dtype=jnp.int32).reshape(n_blocks, record_every)
    states, records = lax.scan(one_block, states, block_steps)
    # Scan stacks records as (n_records, members, ...); members lead in the public layout.
    step, time, diverged, loss, loss_mean, observed, stopped = jtu.tree_map(
        lambda x: jnp.swapaxes(x, 0, 1), records
    )
    trajectory = Trajectory(
        step=step,
        time=time,
        loss=loss,
        loss_mean=loss_mean,
        diverged=diverged,
        observables=observed,
        stopped=stopped,
    )
    return states, trajectory
