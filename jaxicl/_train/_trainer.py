"""The trainer's public entry points: one pure `lax.scan` over optimizer steps (`_step.py`),
for one model or a stacked ensemble, members mapped over chunks and devices (`_members.py`).

A single run is an ensemble of one, so both paths execute the same code.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import optax
from jaxtyping import PRNGKeyArray, PyTree

from ._lowering import lower_steps
from ._members import AutoChunks, member_devices, run_sharded
from ._options import Members, Record, check_matmul_precision
from ._state import TrainState, Trajectory, init_ensemble_state, init_train_state
from ._step import AfterStep, Objective, StepProgram, run_steps


_run_jit = eqx.filter_jit(run_steps)
# "auto" member chunks, by workload: the memory probe compiles once per workload and process
_AUTO_CHUNKS = AutoChunks()


def train_ensemble_steps(
    states: TrainState,
    objective: Objective,
    optimizer: optax.GradientTransformation,
    *,
    steps: int,
    key: PRNGKeyArray,
    record: Record = Record(),
    members: Members = Members(),
    after_step: AfterStep | None = None,
    shared_data: bool = True,
    matmul_precision: str = "highest",
) -> tuple[TrainState, Trajectory]:
    """Continue a stacked ensemble (from `init_ensemble_state`) in one compiled program.

    **Arguments:**

    - `states`: stacked `TrainState`s, all at the same step.
    - `objective`: maps `(model, key=...)` to a scalar loss, e.g. `ICLLoss`. An
      `AbstractObjective` lets shared data be drawn once per step for the whole ensemble.
    - `optimizer`: an optax transformation, applied to each member separately. Wrap it in
      `optax.inject_hyperparams` (as `jaxicl.sgd` does) to record gradient-flow time Σ lr.
    - `steps`: optimizer steps to take.
    - `key`: the data key of the run.
    - `record`: what is recorded and how often, e.g. `Record(every=10, observe=f)` (default:
      the loss, once).
    - `members`: how members are mapped inside a step, e.g. `Members(chunk=32, shard=False)`
      (default: chunks chosen from XLA's memory analysis, sharded over local devices).
      Results do not depend on it beyond rounding (bit for bit only at the same chunk shape).
    - `after_step`: `(model, data, step, key) -> model`, applied after every optimizer step
      (e.g. particle perturbations or birth–death); `key` is per member and per step.
    - `shared_data`: `True` (default): every member sees the same prompts at a given step
      (common random numbers; on CPU random-number generation would otherwise dominate).
      `False`: member i draws from `fold_in(key, i)`.
    - `matmul_precision`: the precision of float32 matrix products: `"highest"` (default: true
      float32, which JAX's own default is not on recent NVIDIA GPUs), `"high"` or `"default"`
      (the device's fastest). CPUs compute float32 products exactly whatever is asked.

    Member i's trajectory equals training it alone with `train_steps` on the same key (with
    `fold_in(key, i)` for per-member data). A diverging member is frozen and flagged; the others
    carry on. So is a member whose `record.stop` says its outcome is final (flagged `stopped`).

    **Returns:** stacked `(states, trajectories)` with a leading member axis.
    """
    for name, value, kind in (("record", record, Record), ("members", members, Members)):
        if not isinstance(value, kind):
            raise ValueError(f"`{name}` must be a jaxicl.{kind.__name__}, got {value!r}.")
    record.interval(steps)
    check_matmul_precision("matmul_precision", matmul_precision)
    if not isinstance(shared_data, bool):
        raise ValueError(f"`shared_data` must be True or False, got {shared_data!r}.")
    host_steps = np.asarray(states.step)
    member_steps = np.unique(host_steps)
    if member_steps.size != 1:
        raise ValueError("`states` must all be at the same step; continue them separately.")
    n_devices, chunk = _mapping(
        states,
        objective,
        optimizer,
        members,
        record.observe,
        after_step,
        shared_data,
        matmul_precision,
    )
    # the precision is part of what jit traces, so each setting has its own programs
    with jax.default_matmul_precision(matmul_precision):
        start_step = jnp.asarray(member_steps[0], jnp.int32)
        program = StepProgram(steps, record, after_step, shared_data, chunk)
        if n_devices > 1:
            return run_sharded(
                run_steps, states, objective, optimizer, key, start_step, program, n_devices
            )
        return _run_jit(states, objective, optimizer, key, start_step, program)


def resolved_member_chunk(
    states: TrainState,
    objective: Objective,
    optimizer: optax.GradientTransformation,
    *,
    members: Members = Members(),
    observe=Record().observe,
    after_step: AfterStep | None = None,
    shared_data: bool = True,
    matmul_precision: str = "highest",
) -> int | None:
    """The chunk a device maps its members in when `train_ensemble_steps` trains these states
    with these options (`None`: all at once), "auto" resolved as the trainer resolves it."""
    return _mapping(
        states, objective, optimizer, members, observe, after_step, shared_data, matmul_precision
    )[1]


def _mapping(states, objective, optimizer, members, observe, after_step, shared_data, precision):
    """`(n_devices, chunk)`: how `train_ensemble_steps` maps these members."""
    n_devices = member_devices(members.shard, np.shape(states.step)[0])
    one_step = StepProgram(1, Record(observe=observe), after_step, shared_data)

    def lower_probe(k):
        probe = jtu.tree_map(
            lambda x: jax.ShapeDtypeStruct((k, *x.shape[1:]), x.dtype) if eqx.is_array(x) else x,
            states,
        )
        return lower_steps(probe, objective, optimizer, one_step)

    with jax.default_matmul_precision(precision):
        workload = (objective, optimizer, one_step, states, precision)
        chunk = _AUTO_CHUNKS.resolve(members.chunk, states, lower_probe, workload, n_devices)
    return n_devices, chunk


# what only an ensemble has: a single run is one member, all at once, on one device
_ENSEMBLE_ONLY = ("shared_data", "members")


def train_steps(
    state: TrainState, objective: Objective, optimizer: optax.GradientTransformation, **options
) -> tuple[TrainState, Trajectory]:
    """Continue one run for `steps` more steps (compiled once per shape and configuration).

    Running 100 steps, or 40 then 60 from the returned state with the same `key`, gives the same
    result: step t's data key is `fold_in(key, t)`. `options`: `steps`, `key` and optionally
    `record`, `after_step`, as in `train_ensemble_steps`.

    **Returns:** `(state, trajectory)`.
    """
    for name in _ENSEMBLE_ONLY:
        if name in options:
            raise TypeError(f"`{name}` is an ensemble's option; one run takes no `{name}`.")
    stacked = jtu.tree_map(lambda x: x[None] if eqx.is_array(x) else x, state)
    states, trajectory = train_ensemble_steps(
        stacked, objective, optimizer, members=Members(chunk=None, shard=False), **options
    )
    return jtu.tree_map(lambda x: x[0] if eqx.is_array(x) else x, (states, trajectory))


def train(
    model: PyTree, objective: Objective, optimizer: optax.GradientTransformation, **options
) -> tuple[PyTree, Trajectory]:
    """Train one model from scratch (`train_steps` from a fresh state; the same `options`).

    **Returns:** `(model, trajectory)`.
    """
    state = init_train_state(model, optimizer)
    state, trajectory = train_steps(state, objective, optimizer, **options)
    return state.model, trajectory


def train_ensemble(
    models: PyTree, objective: Objective, optimizer: optax.GradientTransformation, **options
) -> tuple[PyTree, Trajectory]:
    """Train a stacked ensemble from scratch (`train_ensemble_steps` from fresh states; the
    same `options`). Returns stacked `(models, trajectories)`."""
    states = init_ensemble_state(models, optimizer)
    states, trajectories = train_ensemble_steps(states, objective, optimizer, **options)
    return states.model, trajectories
