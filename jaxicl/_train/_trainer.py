"""The trainer: one pure `lax.scan` over optimizer steps, for one model or a stacked ensemble.

Randomness is step-indexed: step t of a run with data key k uses `fold_in(k, t)` (shared data)
or `fold_in(fold_in(k, member), t)` (per-member data). So a member's trajectory does not depend
on the ensemble size, on member chunking, on how steps are split into calls, or on resumption.

A single run is an ensemble of one, so both paths execute the same code.
"""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
import optax
from jaxtyping import Array, Bool, Float, PRNGKeyArray, PyTree

from .. import _validation as check
from ._member_chunk import auto_member_chunk
from ._objectives import AbstractObjective
from ._state import (
    TrainState,
    Trajectory,
    init_ensemble_state,
    init_train_state,
    learning_rate,
)


Objective = Callable[..., Float[Array, ""]]
AfterStep = Callable[[PyTree, PyTree, Array, PRNGKeyArray], PyTree]


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
    updated model; a non-finite loss or result freezes the member instead of applying."""
    params, static = eqx.partition(state.model, eqx.is_inexact_array)
    # Optax mixes Python floats with int counters; keep its arithmetic under standard promotion
    # even when a caller (e.g. the test suite) runs jaxicl under strict promotion.
    with jax.numpy_dtype_promotion("standard"):
        updates, opt_state = optimizer.update(grads, state.opt_state, params)
    new_params = eqx.apply_updates(params, updates)
    if after_step is not None:
        moved = after_step(eqx.combine(new_params, static), data, step, key)
        new_params = eqx.filter(moved, eqx.is_inexact_array)
    healthy = jnp.isfinite(loss) & _all_finite(new_params) & ~state.diverged
    lr = jnp.asarray(learning_rate(opt_state, jnp.nan), state.time.dtype)
    return TrainState(
        model=eqx.combine(_select(healthy, new_params, params), static),
        opt_state=_select(healthy, opt_state, state.opt_state),
        step=state.step + 1,
        time=jnp.where(healthy, state.time + lr, state.time),
        diverged=~healthy,
        member=state.member,
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


def _map_members(fn, states, member_chunk):
    """Apply `fn` (stacked states of some members -> stacked results) to every member: all
    at once, or `member_chunk` at a time in a loop (and the remainder last).

    On CPU small chunks win: the (members × prompts × heads × context) score tensor of one
    chunk stays in cache instead of streaming through memory.
    """
    arrays, static = eqx.partition(states, eqx.is_array)

    def on_arrays(member_arrays):
        return fn(eqx.combine(member_arrays, static))

    if member_chunk is None:
        return on_arrays(arrays)
    n_members = jtu.tree_leaves(arrays)[0].shape[0]
    n_chunks = n_members // member_chunk
    split = n_chunks * member_chunk
    chunked = jtu.tree_map(
        lambda x: x[:split].reshape(n_chunks, member_chunk, *x.shape[1:]), arrays
    )
    out = jtu.tree_map(lambda x: x.reshape(split, *x.shape[2:]), lax.map(on_arrays, chunked))
    if split == n_members:
        return out
    rest = on_arrays(jtu.tree_map(lambda x: x[split:], arrays))
    return jtu.tree_map(lambda a, b: jnp.concatenate([a, b]), out, rest)


# the fewest members on a device for which the objective's joint loss is used (see `_run`)
JOINT_LOSS_MEMBERS = 64

# Per-member randomness of `after_step` comes from its own stream, so it never correlates with
# the data, which may be shared by all members.
_AFTER_STEP_STREAM = 0x5EED


def _run(states, objective, optimizer, key, start_step, config):
    steps, record_every, observe, shared_data, member_chunk, after_step = config
    draw, evaluate, evaluate_members = _draw_and_evaluate(objective)
    after_key = jr.fold_in(key, _AFTER_STEP_STREAM)

    # The objective's joint loss of a chunk (e.g. the shared-prompt GEMM kernel) pays per step
    # a fixed cost that member-by-member evaluation does not: on a 2-core CPU it lost below
    # 64 members a device (2.0k vs 2.7k member-steps/s at 8) and won from there (1.4× at
    # 1024). The member count of this device is static here.
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
            return _map_members(
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

        return _map_members(chunk_step, states, member_chunk)

    def one_block(states, block_steps):
        observed = _map_members(eqx.filter_vmap(lambda s: observe(s.model)), states, member_chunk)
        header = (states.step, states.time)
        states, losses = lax.scan(one_step, states, block_steps)
        # The flag at the end of the block: divergence inside the last block is still reported.
        return states, (*header, states.diverged, losses[0], losses.mean(axis=0), observed)

    n_blocks = steps // record_every
    block_steps = start_step + jnp.arange(steps, dtype=jnp.int32).reshape(n_blocks, record_every)
    states, records = lax.scan(one_block, states, block_steps)
    # Scan stacks records as (n_records, members, ...); members lead in the public layout.
    step, time, diverged, loss, loss_mean, observed = jtu.tree_map(
        lambda x: jnp.swapaxes(x, 0, 1), records
    )
    trajectory = Trajectory(
        step=step,
        time=time,
        loss=loss,
        loss_mean=loss_mean,
        diverged=diverged,
        observables=observed,
    )
    return states, trajectory


_run_jit = eqx.filter_jit(_run)


@eqx.filter_jit
def _run_sharded(states, objective, optimizer, key, start_step, config, n_devices):
    """`_run` with the member axis split over `n_devices` local devices (one program each).

    Members never interact, so each device runs the plain single-device loop on its share;
    shared data is drawn from the same key on every device.
    """
    mesh = jax.sharding.Mesh(jax.local_devices()[:n_devices], ("members",))
    arrays, static = eqx.partition(states, eqx.is_array)
    out_static = []  # shard_map returns arrays only; keep the rest from its single trace

    def local_run(local_arrays, key, start_step):
        out = _run(eqx.combine(local_arrays, static), objective, optimizer, key, start_step, config)
        out_arrays, rest = eqx.partition(out, eqx.is_array)
        out_static.append(rest)
        return out_arrays

    members, replicated = jax.sharding.PartitionSpec("members"), jax.sharding.PartitionSpec()
    sharded = jax.shard_map(
        local_run,
        mesh=mesh,
        in_specs=(members, replicated, replicated),
        out_specs=members,
        check_vma=False,
    )
    out_arrays = sharded(arrays, key, start_step)
    return eqx.combine(out_arrays, out_static[-1])


def _no_observables(model) -> tuple:
    return ()


def _check_schedule(steps, record_every) -> None:
    check.positive_int("steps", steps)
    check.positive_int("record_every", record_every)
    if steps % record_every:
        raise ValueError(
            f"`steps` ({steps}) must be a multiple of `record_every` ({record_every})."
        )


def _member_devices(shard_members, n_members) -> int:
    """How many local devices share the members: all of them when they divide the count."""
    if not isinstance(shard_members, bool):
        raise ValueError(f"`shard_members` must be True or False, got {shard_members!r}.")
    n_devices = jax.local_device_count()
    return n_devices if shard_members and n_devices > 1 and n_members % n_devices == 0 else 1


# the chunks "auto" chose, by workload: the objects themselves are kept (not their ids, which
# Python reuses once an object is gone) in the key's tuple; a few recent workloads suffice
_AUTO_CHUNKS: list = []


def _resolve_member_chunk(member_chunk, states, objective, optimizer, config, n_devices):
    """An explicit chunk (`None` or ≥ `n_members`: all at once), or for "auto" the one
    `auto_member_chunk` chooses from XLA's memory analysis of this workload."""
    n_members = jtu.tree_leaves(eqx.filter(states, eqx.is_array))[0].shape[0] // n_devices
    if member_chunk == "auto":
        _, _, observe, shared_data, _, after_step = config
        shapes = tuple(
            (x.shape[1:], x.dtype) for x in jtu.tree_leaves(eqx.filter(states, eqx.is_array))
        )
        workload = (
            objective,
            optimizer,
            observe,
            after_step,
            shared_data,
            jtu.tree_structure(states),
            shapes,
        )
        key = (workload, n_members, n_devices)
        found = next((chunk for k, chunk in _AUTO_CHUNKS if _same(k, key)), "missing")
        if found != "missing":
            return found

        def lower_probe(k):
            probe = jtu.tree_map(
                lambda x: (
                    jax.ShapeDtypeStruct((k, *x.shape[1:]), x.dtype) if eqx.is_array(x) else x
                ),
                states,
            )
            return _lower_steps(probe, objective, optimizer, 1, observe, after_step, shared_data)

        found = auto_member_chunk(lower_probe, n_members, n_devices)
        del _AUTO_CHUNKS[:-31]
        _AUTO_CHUNKS.append((key, found))
        return found
    if member_chunk is None:
        return None
    check.positive_int("member_chunk", member_chunk)
    return None if member_chunk >= n_members else member_chunk


def _same(a, b) -> bool:
    """Key equality with the workload's objects compared by identity."""
    (wa, na, da), (wb, nb, db) = a, b
    return all(x is y for x, y in zip(wa[:4], wb[:4])) and wa[4:] == wb[4:] and (na, da) == (nb, db)


def train_ensemble_steps(
    states: TrainState,
    objective: Objective,
    optimizer: optax.GradientTransformation,
    *,
    steps: int,
    record_every: int,
    observe: Callable[[PyTree], PyTree] = _no_observables,
    after_step: AfterStep | None = None,
    shared_data: bool = True,
    member_chunk: int | None | str = "auto",
    shard_members: bool = True,
    key: PRNGKeyArray,
) -> tuple[TrainState, Trajectory]:
    """Continue a stacked ensemble (from `init_ensemble_state`) in one compiled program.

    **Arguments:**

    - `states`: stacked `TrainState`s, all at the same step.
    - `objective`: maps `(model, key=...)` to a scalar loss, e.g. `ICLLoss`. An
      `AbstractObjective` lets shared data be drawn once per step for the whole ensemble.
    - `optimizer`: an optax transformation, applied to each member separately. Wrap it in
      `optax.inject_hyperparams` (as `jaxicl.sgd` does) to record gradient-flow time Σ lr.
    - `steps`, `record_every`: `steps` must be a multiple of `record_every`.
    - `observe`: maps one model to a pytree of observables recorded with the loss.
    - `after_step`: `(model, data, step, key) -> model`, applied after every optimizer step
      (e.g. particle perturbations or birth–death); `key` is per member and per step.
    - `shared_data`: `True` (default): every member sees the same prompts at a given step
      (common random numbers; on CPU random-number generation would otherwise dominate).
      `False`: member i draws from `fold_in(key, i)`.
    - `member_chunk`: members processed at a time inside each step; `None` for all at once;
      `"auto"`: on CPU the largest power of two whose step temporaries (XLA's memory analysis
      of this workload, compiled once per process) fit in the smallest cache level holding
      16 members' (see `_member_chunk.py`); all at once on accelerators and for at most 16
      members a device. Results do not depend on it.
    - `shard_members`: split the members over all local devices when their number divides the
      ensemble size (on CPU, `jax.config.update("jax_num_cpu_devices", n)` before first use
      gives one device per core). Results do not depend on it.
    - `key`: the data key of the run.

    Member i's trajectory equals training it alone with `train_steps` on the same key (with
    `fold_in(key, i)` for per-member data). A diverging member is frozen and flagged; the others
    carry on.

    **Returns:** stacked `(states, trajectories)` with a leading member axis.
    """
    _check_schedule(steps, record_every)
    if not isinstance(shared_data, bool):
        raise ValueError(f"`shared_data` must be True or False, got {shared_data!r}.")
    host_steps = np.asarray(states.step)
    member_steps = np.unique(host_steps)
    if member_steps.size != 1:
        raise ValueError("`states` must all be at the same step; continue them separately.")
    n_members = host_steps.shape[0]
    n_devices = _member_devices(shard_members, n_members)
    config = (steps, record_every, observe, shared_data, None, after_step)
    chunk = _resolve_member_chunk(member_chunk, states, objective, optimizer, config, n_devices)
    start_step = jnp.asarray(member_steps[0], jnp.int32)
    config = (steps, record_every, observe, shared_data, chunk, after_step)
    if n_devices > 1:
        return _run_sharded(states, objective, optimizer, key, start_step, config, n_devices)
    return _run_jit(states, objective, optimizer, key, start_step, config)


def compile_ensemble_steps(
    states: TrainState,
    objective: Objective,
    optimizer: optax.GradientTransformation,
    *,
    steps: int,
    observe: Callable[[PyTree], PyTree] = _no_observables,
    after_step: AfterStep | None = None,
    shared_data: bool = True,
):
    """The compiled single-device program of `steps` steps for these stacked states, all members
    at once (no chunking, no sharding), for XLA's analyses: `.memory_analysis()`,
    `.cost_analysis()`. Its math is that of `train_ensemble_steps`. `states` may be abstract
    (`jax.ShapeDtypeStruct` leaves, e.g. from `jax.eval_shape`): nothing is allocated."""
    return _lower_steps(
        states, objective, optimizer, steps, observe, after_step, shared_data
    ).compile()


def _lower_steps(states, objective, optimizer, steps, observe, after_step, shared_data):
    """`compile_ensemble_steps`'s program, lowered (traced, not compiled)."""
    config = (steps, steps, observe, shared_data, None, after_step)
    leaf = lambda x: isinstance(x, jax.Array | np.ndarray | jax.ShapeDtypeStruct)  # noqa: E731
    dynamic, static = eqx.partition(states, leaf)

    def run(dynamic, start):
        out = _run(eqx.combine(dynamic, static), objective, optimizer, jr.key(0), start, config)
        return eqx.filter(out, eqx.is_array)

    start = jax.ShapeDtypeStruct((), jnp.int32)
    return jax.jit(run).lower(dynamic, start)


def ensemble_steps_shapes(
    states: TrainState,
    objective: Objective,
    optimizer: optax.GradientTransformation,
    *,
    steps: int,
    record_every: int,
    observe: Callable[[PyTree], PyTree] = _no_observables,
    after_step: AfterStep | None = None,
    shared_data: bool = True,
):
    """The shapes and dtypes of what `train_ensemble_steps` would return, from tracing alone
    (nothing compiles or runs): `(states, trajectory)` of `jax.ShapeDtypeStruct`s."""
    _check_schedule(steps, record_every)
    config = (steps, record_every, observe, shared_data, None, after_step)
    start = jnp.asarray(0, jnp.int32)
    return eqx.filter_eval_shape(_run, states, objective, optimizer, jr.key(0), start, config)


def train_steps(
    state: TrainState,
    objective: Objective,
    optimizer: optax.GradientTransformation,
    *,
    steps: int,
    record_every: int,
    observe: Callable[[PyTree], PyTree] = _no_observables,
    after_step: AfterStep | None = None,
    key: PRNGKeyArray,
) -> tuple[TrainState, Trajectory]:
    """Continue one run for `steps` more steps (compiled once per shape and configuration).

    Running 100 steps, or 40 then 60 from the returned state with the same `key`, gives the same
    result: step t's data key is `fold_in(key, t)`. Arguments as in `train_ensemble_steps`.

    **Returns:** `(state, trajectory)`.
    """
    stacked = jtu.tree_map(lambda x: x[None] if eqx.is_array(x) else x, state)
    states, trajectory = train_ensemble_steps(
        stacked,
        objective,
        optimizer,
        steps=steps,
        record_every=record_every,
        observe=observe,
        after_step=after_step,
        member_chunk=None,
        shard_members=False,
        key=key,
    )
    return jtu.tree_map(lambda x: x[0] if eqx.is_array(x) else x, (states, trajectory))


def train(
    model: PyTree,
    objective: Objective,
    optimizer: optax.GradientTransformation,
    *,
    steps: int,
    record_every: int,
    observe: Callable[[PyTree], PyTree] = _no_observables,
    after_step: AfterStep | None = None,
    key: PRNGKeyArray,
) -> tuple[PyTree, Trajectory]:
    """Train one model from scratch (`train_steps` from a fresh state).

    **Returns:** `(model, trajectory)`.
    """
    state = init_train_state(model, optimizer)
    kwargs = dict(
        steps=steps, record_every=record_every, observe=observe, after_step=after_step, key=key
    )
    state, trajectory = train_steps(state, objective, optimizer, **kwargs)
    return state.model, trajectory


def train_ensemble(
    models: PyTree,
    objective: Objective,
    optimizer: optax.GradientTransformation,
    *,
    steps: int,
    record_every: int,
    observe: Callable[[PyTree], PyTree] = _no_observables,
    after_step: AfterStep | None = None,
    shared_data: bool = True,
    member_chunk: int | None | str = "auto",
    shard_members: bool = True,
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
        after_step=after_step,
        shared_data=shared_data,
        member_chunk=member_chunk,
        shard_members=shard_members,
        key=key,
    )
    return states.model, trajectories


def sgd(learning_rate) -> optax.GradientTransformation:
    """Plain SGD (`optax.sgd`) with its learning rate exposed, so the trainer records Σ lr."""
    return optax.inject_hyperparams(optax.sgd)(learning_rate=learning_rate)
