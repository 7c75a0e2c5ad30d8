"""What a sweep runs: workloads and their compiled programs.

A `Workload` names its settings and splits its axes: `group_axes` change shapes or the
objective (one compiled `Program` per combination of values); `member_axes` are per-member
inputs of one program (with the seed, they are vmapped together in one call).

A `Program` runs an ensemble in step chunks, so a sweep can stream records and checkpoint
between chunks: `init` builds the stacked states of some members, `advance` continues them by a
number of records and returns those records, `summarize` derives per-member summaries from the
final states and the whole series. `ensemble_program` builds one from the pieces of a trainer
run; every workload of the package uses it.
"""

import dataclasses
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

from ._train_state import init_ensemble_state
from ._trainer import compile_ensemble_steps, train_ensemble_steps


@dataclasses.dataclass(frozen=True)
class Workload:
    """`defaults` of every setting; `checks[name](field, value)` validates one value (naming
    `field`); `check_sweep(settings, grid)` validates combinations; `build(settings)` makes
    the `Program` of one group; `float64` workloads refuse to run in float32."""

    description: str
    defaults: dict
    group_axes: tuple[str, ...]
    member_axes: tuple[str, ...]
    checks: dict
    build: Callable
    float64: bool = False
    check_sweep: Callable = lambda settings, grid: None

    def check(self, field: str, name: str, value) -> None:
        self.checks[name](field, value)


@dataclasses.dataclass(frozen=True)
class Program:
    """One compiled group.

    - `init(member_values, seeds)`: stacked states; `member_values` maps every member axis to
      one value per member, `seeds` gives each member's seed.
    - `advance(states, n_records)`: `(states, {name: (members, n_records) array})`.
    - `summarize(states, series)`: `{name: (members,) array}` from the final states and the
      whole series of these members.
    - `series`, `summaries`: name → dtype of what `advance` and `summarize` return.
    - `time`: the coordinate of the records; `time_units` says what it counts;
      `record_every`: optimizer steps per record.
    - `memory(n_members, n_records)`: XLA's memory analysis (bytes) of one `advance` call.
    """

    init: Callable
    advance: Callable
    summarize: Callable
    series: dict
    summaries: dict
    time: np.ndarray
    time_units: str
    record_every: int
    memory: Callable


def with_learning_rates(states, rates):
    """Stacked states whose optimizer (an `optax.inject_hyperparams` one) uses one learning rate
    per member."""
    opt_state = optax.tree_utils.tree_set(states.opt_state, learning_rate=jnp.asarray(rates))
    return eqx.tree_at(lambda s: s.opt_state, states, opt_state)


def ensemble_program(
    *,
    make: Callable,
    member_axes: tuple[str, ...],
    seed_key,
    objective,
    optimizer: optax.GradientTransformation,
    record_every: int,
    time: np.ndarray,
    time_units: str,
    series: dict,
    summaries: dict,
    summarize: Callable,
    observe: Callable | None = None,
    after_step: Callable | None = None,
    member_chunk: int | None | str = "auto",
    data_key=None,
) -> Program:
    """A `Program` over `train_ensemble_steps`.

    `make(values, key)` builds one member's model from its member-axis `values` (a dict of
    scalars); member i gets the key `fold_in(seed_key, seed_i)`, so a seed starts from the same
    draw at every value of the member axes. A `learning_rate` member axis sets each member's
    learning rate in its optimizer state. `series[name] = (dtype, extract)` with
    `extract(trajectory)` of shape (members, records); `summarize` as in `Program`.
    """
    data_key = jr.key(0) if data_key is None else data_key
    extra = {} if observe is None else {"observe": observe}
    if after_step is not None:
        extra["after_step"] = after_step

    def init(member_values: dict, seeds: np.ndarray):
        keys = jax.vmap(lambda s: jr.fold_in(seed_key, s))(jnp.asarray(seeds))
        values = {name: jnp.asarray(member_values[name]) for name in member_axes}
        states = init_ensemble_state(eqx.filter_vmap(make)(values, keys), optimizer)
        if "learning_rate" in member_axes:
            states = with_learning_rates(states, values["learning_rate"])
        return states

    def advance(states, n_records: int):
        states, trajectory = train_ensemble_steps(
            states,
            objective,
            optimizer,
            steps=n_records * record_every,
            record_every=record_every,
            member_chunk=member_chunk,
            key=data_key,
            **extra,
        )
        return states, {name: np.asarray(get(trajectory)) for name, (_, get) in series.items()}

    def memory(n_members: int, n_records: int) -> int:
        # all members at once, unchunked: an upper bound of what `advance` holds
        states = init({name: np.ones(n_members) for name in member_axes}, np.arange(n_members))
        compiled = compile_ensemble_steps(
            states, objective, optimizer, steps=n_records * record_every, **extra
        )
        analysis = compiled.memory_analysis()
        return int(
            analysis.argument_size_in_bytes
            + analysis.output_size_in_bytes
            + analysis.temp_size_in_bytes
        )

    return Program(
        init=init,
        advance=advance,
        summarize=summarize,
        series={name: dtype for name, (dtype, _) in series.items()},
        summaries=summaries,
        time=np.asarray(time),
        time_units=time_units,
        record_every=record_every,
        memory=memory,
    )
