"""Workloads a sweep can run: what their settings are, which axes change shapes (one compiled
group per value) and which are per-member inputs of one program, and what each member records.

`reduced-allocation`: the reduced (Ω, M) dynamics of multi-head softmax attention on disjoint
tasks (the `task-allocation` experiment's flow) from one init scheme; per member it records the
loss curve, whether the heads allocate the tasks at the end, and the warm-up end.
"""

import dataclasses
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from . import _validation as check
from ._analysis import detect_phases, task_allocation
from ._reduced import ReducedLoss
from ._tasks import disjoint_blocks
from ._train_state import init_ensemble_state
from ._trainer import compile_ensemble_steps, sgd, train_ensemble


@dataclasses.dataclass(frozen=True)
class Workload:
    defaults: dict
    shape_axes: tuple[str, ...]
    member_axes: tuple[str, ...]
    checks: dict
    build: Callable  # (settings of one group, shape axes included) -> Program

    def check(self, field: str, name: str, value) -> None:
        self.checks[name](field, value)


@dataclasses.dataclass(frozen=True)
class Program:
    """One compiled group: `run(member_values, seeds)` → dict of NumPy records (members first);
    `records` names each record and its trailing dimensions; `time` labels the record axis;
    `memory(n)` is XLA's memory analysis (bytes) of the compiled call for n members."""

    run: Callable
    records: dict
    time: np.ndarray
    memory: Callable


def _allocation_program(settings: dict) -> Program:
    from ._experiments._task_allocation import initial_state

    d, n_tasks, heads = settings["d"], settings["n_tasks"], settings["heads"]
    sizes = tuple(b - a for a, b in disjoint_blocks(d, n_tasks))
    objective = ReducedLoss(sizes, settings["context_len"])
    steps = round(settings["horizon"] / settings["dt"])
    record_every = max(1, steps // settings["n_records"])
    steps = record_every * settings["n_records"]
    root = jr.fold_in(jr.key(settings["seed"]), heads)
    optimizer = sgd(settings["dt"])
    # Tiny states: 64 members per chunk is fastest on CPU (measured for `task-allocation`);
    # accelerators map them all at once.
    member_chunk = 64 if jax.default_backend() == "cpu" else None

    def initial(member_values: dict, seeds) -> eqx.Module:
        scales = jnp.asarray(member_values["init_scale"])
        keys = jax.vmap(lambda s: jr.fold_in(root, s))(jnp.asarray(seeds))
        make = lambda scale, key: initial_state(  # noqa: E731
            settings["scheme"], heads, n_tasks, scale, key=key
        )
        return eqx.filter_vmap(make)(scales, keys)

    def memory(n: int) -> int:
        # all members at once, unchunked: an upper bound of what `run` holds
        states = init_ensemble_state(initial({"init_scale": np.ones(n)}, np.arange(n)), optimizer)
        compiled = compile_ensemble_steps(states, objective, optimizer, steps=record_every)
        analysis = compiled.memory_analysis()
        return int(
            analysis.argument_size_in_bytes
            + analysis.output_size_in_bytes
            + analysis.temp_size_in_bytes
        )

    def run(member_values: dict, seeds: np.ndarray) -> dict:
        final, traj = train_ensemble(
            initial(member_values, seeds),
            objective,
            optimizer,
            steps=steps,
            record_every=record_every,
            member_chunk=member_chunk,
            key=jr.key(0),
        )
        omega, mu = final.spectral()
        phases = jax.vmap(detect_phases)(traj.time, traj.loss)
        return {
            "loss": np.asarray(traj.loss),
            "success": np.asarray(jax.vmap(task_allocation)(omega, mu).success),
            "warmup_end": np.asarray(phases.warmup_end),
            "diverged": np.asarray(traj.diverged[:, -1]),
        }

    records = {
        "loss": (("time",), "float32"),
        "success": ((), "bool"),
        "warmup_end": ((), "float32"),
        "diverged": ((), "bool"),
    }
    time = settings["dt"] * record_every * np.arange(settings["n_records"])
    return Program(run=run, records=records, time=time, memory=memory)


def _positive_int(field, value):
    check.positive_int(field, value)


def _positive_float(field, value):
    check.finite_positive(field, value)


def _scheme(field, value):
    from ._experiments._task_allocation import SCHEMES

    check.one_of(field, value, SCHEMES)


WORKLOADS = {
    "reduced-allocation": Workload(
        defaults=dict(
            d=50,
            n_tasks=3,
            heads=3,
            context_len=100,
            scheme="random-positive",
            init_scale=1e-3,
            horizon=20.0,
            dt=0.005,
            n_records=40,
            seed=0,
        ),
        shape_axes=("heads", "context_len"),
        member_axes=("init_scale",),
        checks=dict(
            d=_positive_int,
            n_tasks=_positive_int,
            heads=_positive_int,
            context_len=_positive_int,
            scheme=_scheme,
            init_scale=_positive_float,
            horizon=_positive_float,
            dt=_positive_float,
            n_records=_positive_int,
            seed=lambda field, value: check.nonnegative_int(field, value),
        ),
        build=_allocation_program,
    ),
}
