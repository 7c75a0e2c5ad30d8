"""Chunked, checkpointed ensemble training shared by the attention experiments.

Each head count is one compiled program over all its members. Steps run in chunks; after each
chunk the ensemble state and its records are checkpointed, so a killed run resumes where it
stopped and finishes with the same numbers.
"""

import time

import equinox as eqx
import jax
import jax.random as jr
import numpy as np
import optax

from .. import _validation as check
from .._checkpoint import load_checkpoint, save_checkpoint
from .._init import init_normal
from .._objectives import ICLLoss, monte_carlo_loss
from .._observables import semi_singular_values
from .._progress import progress_bar
from .._train_state import init_ensemble_state
from .._trainer import train_ensemble_steps


def train_group(config, task, n_heads: int, group_dir, *, progress, on_chunk):
    """Train (or resume) `config.n_members` random inits with `n_heads` heads on `task`.

    Adam at `config.learning_rate`, `config.batch_size` fresh prompts a step (shared by the
    members), `config.steps` steps in chunks of `config.chunk_steps`, each followed by a
    checkpoint in `group_dir`. Records every `config.record_every` steps: the step, each
    member's block-mean loss, its (ω, μ) of shape (H, n_tasks), and the divergence flags.

    **Returns:** `(models, records, chunk_timings)`.
    """
    objective = ICLLoss(task, config.batch_size)
    optimizer = optax.adam(config.learning_rate)
    root = jr.fold_in(jr.key(config.seed), n_heads)
    init_key, data_key = jr.split(root)

    def make(key):
        return init_normal(
            d=task.d, n_out=task.n_out, n_heads=n_heads, scale=config.init_scale, key=key
        )

    states = init_ensemble_state(
        eqx.filter_vmap(make)(jr.split(init_key, config.n_members)), optimizer
    )
    blocks = getattr(task, "blocks", ((0, task.d),))
    observe = lambda model: semi_singular_values(model, blocks)  # noqa: E731
    checkpoint = group_dir / "checkpoint"
    records = {}
    loaded = load_checkpoint(checkpoint, states)
    if loaded is not None:
        states, records = loaded
    done = int(np.asarray(states.step)[0])
    bar = progress_bar(config.steps, description=f"H={n_heads}", unit="step", enabled=progress)
    bar.update(done)
    timings = []
    while done < config.steps:
        start = time.perf_counter()
        states, trajectory = train_ensemble_steps(
            states,
            objective,
            optimizer,
            steps=config.chunk_steps,
            record_every=config.record_every,
            observe=observe,
            key=data_key,
        )
        jax.block_until_ready(states)
        timings.append(time.perf_counter() - start)
        new = {
            "step": trajectory.step[0],
            "loss_mean": trajectory.loss_mean,
            "omega": trajectory.observables[0],
            "mu": trajectory.observables[1],
            "diverged": trajectory.diverged,
        }
        records = {
            k: np.concatenate([records[k], np.asarray(v)], axis=-1 if k == "step" else 1)
            if k in records
            else np.asarray(v)
            for k, v in new.items()
        }
        save_checkpoint(checkpoint, states, records)
        done += config.chunk_steps
        bar.update(config.chunk_steps)
        bar.set_postfix(
            member_steps_per_s=f"{config.n_members * config.chunk_steps / timings[-1]:.3g}"
        )
        if on_chunk is not None:
            on_chunk(n_heads, done)
    bar.close()
    return states.model, records, timings


@eqx.filter_jit
def population_losses(models, task, n_prompts: int, key):
    """Each stacked member's population loss on `task` by Monte Carlo, all members on the
    same prompts (paired comparisons); returns `(estimates, standard_errors)`."""
    per_member = lambda model: monte_carlo_loss(model, task, n_prompts, key=key)  # noqa: E731
    return eqx.filter_vmap(per_member)(models)


def check_training_config(config) -> None:
    """Validate the fields `train_group` reads (and `heads`, `noise_var`, `eval_prompts`),
    naming the field, before anything compiles."""
    for name in ("n_members", "steps", "record_every", "chunk_steps", "batch_size", "eval_prompts"):
        check.positive_int(name, getattr(config, name))
    check.finite_nonnegative("noise_var", config.noise_var)
    check.finite_positive("learning_rate", config.learning_rate)
    # At scale 0 every weight stays 0: no gradient moves it and the statistics are 0/0.
    check.finite_positive("init_scale", config.init_scale)
    check.seed("seed", config.seed)
    if not config.heads:
        raise ValueError("`heads` must list at least one head count, got ().")
    for h in config.heads:
        check.positive_int("heads", h)
    check.distinct("heads", config.heads)
    if config.chunk_steps % config.record_every or config.steps % config.chunk_steps:
        raise ValueError(
            f"`record_every` ({config.record_every}) must divide `chunk_steps` "
            f"({config.chunk_steps}), which must divide `steps` ({config.steps})."
        )
