"""Sweep workloads of multi-head softmax attention on disjoint tasks.

- `reduced-allocation`: the reduced (Ω, M) flow (the `task-allocation` experiment's dynamics)
  from one init scheme; SGD steps of `dt` on the flow's clock.
- `full-allocation`: full factorized softmax attention (all weights) trained with Adam on the
  sampled in-context loss, `batch_size` prompts a step shared by the members; noise std
  `context_noise` on the context labels. `init = "normal"`: every weight i.i.d.
  N(0, init_scale²) (random signs); or one of `task-allocation`'s schemes, whose (Ω, M) is put
  into the weights through the decomposable ansatz (zero off the ansatz).

Both record the loss at every record and, per member, whether the heads allocate the tasks at
the end (`task_allocation`), the warm-up end and the divergence flag.
"""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

from ._analysis import detect_phases, task_allocation
from ._decomposable import decomposable_attention
from ._init import init_normal
from ._objectives import ICLLoss
from ._observables import semi_singular_values
from ._reduced import ReducedLoss
from ._sweep_program import ensemble_program
from ._tasks import MultiTaskRegression, disjoint_blocks
from ._trainer import sgd


def _schedule(settings, steps: int):
    record_every = max(1, steps // settings["n_records"])
    return record_every, record_every * np.arange(settings["n_records"])


def _warmup_end(time, loss, window: int):
    return np.asarray(jax.vmap(lambda l: detect_phases(time, l, window=window).warmup_end)(loss))


REDUCED_MEMBER_AXES = ("init_scale",)
FULL_MEMBER_AXES = ("init_scale", "learning_rate")


def reduced_allocation(settings: dict):
    from ._experiments._task_allocation import initial_state

    d, n_tasks, heads = settings["d"], settings["n_tasks"], settings["heads"]
    sizes = tuple(b - a for a, b in disjoint_blocks(d, n_tasks))
    dt = settings["dt"]
    record_every, steps = _schedule(settings, round(settings["horizon"] / dt))
    time = dt * steps

    def make(values, key):
        return initial_state(settings["scheme"], heads, n_tasks, values["init_scale"], key=key)

    def summarize(states, series):
        omega, mu = states.model.spectral()
        loss_time = jnp.asarray(time, series["loss"].dtype)
        return {
            "success": np.asarray(jax.vmap(task_allocation)(omega, mu).success),
            "warmup_end": _warmup_end(loss_time, jnp.asarray(series["loss"]), window=1),
            "diverged": np.asarray(states.diverged),
        }

    return ensemble_program(
        make=make,
        member_axes=REDUCED_MEMBER_AXES,
        seed_key=jr.fold_in(jr.key(settings["seed"]), heads),
        objective=ReducedLoss(sizes, settings["context_len"]),
        optimizer=sgd(dt),
        record_every=record_every,
        time=time,
        time_units="gradient-flow time",
        series={"loss": ("float32", lambda t: t.loss)},
        summaries={"success": "bool", "warmup_end": "float32", "diverged": "bool"},
        summarize=summarize,
        # Tiny states: 64 members per chunk is fastest on CPU (measured for `task-allocation`);
        # accelerators map them all at once.
        member_chunk=64 if jax.default_backend() == "cpu" else None,
    )


def full_allocation(settings: dict):
    from ._experiments._task_allocation import initial_state

    d, n_tasks, heads = settings["d"], settings["n_tasks"], settings["heads"]
    blocks = disjoint_blocks(d, n_tasks)
    task = MultiTaskRegression(
        d, settings["context_len"], blocks, context_noise=settings["context_noise"]
    )
    record_every, steps = _schedule(settings, settings["steps"])

    def make(values, key):
        if settings["init"] == "normal":
            unit = init_normal(d=d, n_out=n_tasks, n_heads=heads, scale=1.0, key=key)
            return jax.tree.map(lambda w: values["init_scale"] * w, unit)
        state = initial_state(settings["init"], heads, n_tasks, values["init_scale"], key=key)
        return decomposable_attention(*state.spectral(), blocks, d, factorized=True)

    def summarize(states, series):
        omega, mu = jax.vmap(lambda m: semi_singular_values(m, blocks))(states.model)
        loss = jnp.asarray(series["loss"])
        tail = max(1, loss.shape[1] // 4)
        return {
            "success": np.asarray(jax.vmap(task_allocation)(omega, mu).success),
            "final_loss": np.asarray(loss[:, -tail:].mean(axis=1)),
            # sampled losses: a 9-record moving median before the phase detection
            "warmup_end": _warmup_end(jnp.asarray(steps, loss.dtype), loss, window=9),
            "diverged": np.asarray(states.diverged),
        }

    optimizer = optax.inject_hyperparams(optax.adam)(learning_rate=settings["learning_rate"])
    return ensemble_program(
        make=make,
        member_axes=FULL_MEMBER_AXES,
        seed_key=jr.fold_in(jr.key(settings["seed"]), heads),
        objective=ICLLoss(task, settings["batch_size"]),
        optimizer=optimizer,
        record_every=record_every,
        time=steps,
        time_units="optimizer steps",
        # the mean over each record's `record_every` steps: far less noisy than one batch
        series={"loss": ("float32", lambda t: t.loss_mean)},
        summaries={
            "success": "bool",
            "final_loss": "float32",
            "warmup_end": "float32",
            "diverged": "bool",
        },
        summarize=summarize,
        data_key=jr.fold_in(jr.key(settings["seed"]), 1_000_000 + heads),
    )
