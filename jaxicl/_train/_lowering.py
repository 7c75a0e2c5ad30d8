"""The trainer's program for XLA's analyses, and its shapes: compiled or lowered once, all
members at once (no chunking, no sharding), or traced only."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

from ._options import Record
from ._state import TrainState
from ._step import AfterStep, Objective, StepProgram, run_steps


def compile_ensemble_steps(
    states: TrainState,
    objective: Objective,
    optimizer: optax.GradientTransformation,
    *,
    steps: int,
    record: Record = Record(),
    after_step: AfterStep | None = None,
    shared_data: bool = True,
):
    """The compiled single-device program of `steps` steps for these stacked states, all members
    at once (no chunking, no sharding), for XLA's analyses: `.memory_analysis()`,
    `.cost_analysis()`. Its math is that of `train_ensemble_steps`. `states` may be abstract
    (`jax.ShapeDtypeStruct` leaves, e.g. from `jax.eval_shape`): nothing is allocated."""
    program = StepProgram(steps, Record(observe=record.observe), after_step, shared_data)
    return lower_steps(states, objective, optimizer, program).compile()


def lower_steps(states, objective, optimizer, program: StepProgram):
    """The program of `compile_ensemble_steps`, lowered (traced, not compiled)."""
    leaf = lambda x: isinstance(x, jax.Array | np.ndarray | jax.ShapeDtypeStruct)  # noqa: E731
    dynamic, static = eqx.partition(states, leaf)

    def run(dynamic, start):
        out = run_steps(
            eqx.combine(dynamic, static), objective, optimizer, jr.key(0), start, program
        )
        return eqx.filter(out, eqx.is_array)

    start = jax.ShapeDtypeStruct((), jnp.int32)
    return jax.jit(run).lower(dynamic, start)


def ensemble_steps_shapes(
    states: TrainState,
    objective: Objective,
    optimizer: optax.GradientTransformation,
    *,
    steps: int,
    record: Record = Record(),
    after_step: AfterStep | None = None,
    shared_data: bool = True,
):
    """The shapes and dtypes of what `train_ensemble_steps` would return, from tracing alone
    (nothing compiles or runs): `(states, trajectory)` of `jax.ShapeDtypeStruct`s."""
    record.interval(steps)
    program = StepProgram(steps, record, after_step, shared_data)
    start = jnp.asarray(0, jnp.int32)
    return eqx.filter_eval_shape(run_steps, states, objective, optimizer, jr.key(0), start, program)
