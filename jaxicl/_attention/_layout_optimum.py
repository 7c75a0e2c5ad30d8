"""The best multi-head model on the ansatz, over every head layout and sign.

Chen et al. state that the limit of training is "on par with the best multi-head model up to a
constant factor". The best model of H heads is the global minimum of ℓ(Ω, M) over all H×n
states, mixed signs included (He et al.'s ± pairs go below strict allocation), which has no
closed form. `best_layout_loss` searches it: Adam on ℓ from many random-sign starts of several
scales, plus the strict allocation optimum and the single head (`optimal_allocation_losses`)
as candidates; the lowest loss wins among the states where the expansion can be trusted
(`expansion_trusted`: at large ω the first-order ℓ can go below zero, and Adam finds that).
Being a search, it is an upper bound on the minimum; the restarts' spread says how often it is
found. The reduced ℓ is a large-L expansion,
so the full model's loss at the winner is also estimated by Monte Carlo
(`ansatz_monte_carlo_loss`) where a caller asks for it.
"""

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax

from .._train._trainer import train_ensemble
from ._reduced import (
    MergedSpectral,
    ReducedLoss,
    expansion_trusted,
    optimal_allocation_losses,
)


class LayoutOptimum(NamedTuple):
    """The lowest ℓ (summed over tasks) found for H heads, its state, how many restarts came
    within 1% of it, and how many ended where the expansion cannot be trusted (discarded)."""

    loss: float
    omega: jax.Array
    mu: jax.Array
    restarts: int
    found_by: int
    untrusted: int


def best_layout_loss(
    block_sizes: tuple[int, ...],
    context_len: int,
    n_heads: int,
    *,
    key,
    restarts: int = 256,
    steps: int = 4000,
    learning_rate: float = 0.01,
) -> LayoutOptimum:
    """The lowest reduced loss ℓ found over H×n states (see the module docstring): `restarts`
    runs of Adam, `steps` steps each, the learning rate decaying from `learning_rate` to 0
    (cosine) so that each run settles at its critical point."""
    n_tasks = len(block_sizes)
    objective = ReducedLoss(block_sizes, context_len)
    scales = jnp.geomspace(0.05, 1.0, restarts)

    def start(k, scale):
        omega_key, mu_key = jr.split(k)
        shape = (n_heads, n_tasks)
        # ω below the expansion's edge (2 ω ω' < 1), μ of order 1/ω
        omega = jnp.clip(scale * jr.normal(omega_key, shape), -0.6, 0.6)
        return MergedSpectral(omega, jr.normal(mu_key, shape))

    states = eqx.filter_vmap(start)(jr.split(key, restarts), scales)
    final, trajectory = train_ensemble(
        states,
        objective,
        optax.adam(optax.cosine_decay_schedule(learning_rate, steps)),
        steps=steps,
        key=key,
    )
    losses = jax.vmap(lambda s: objective.evaluate(s, None))(final)
    trusted = jax.vmap(
        lambda s: expansion_trusted(s.omega, s.mu, block_sizes=block_sizes, context_len=context_len)
    )(final)
    valid = ~trajectory.diverged[:, -1] & jnp.isfinite(losses) & trusted
    losses = jnp.where(valid, losses, jnp.inf)
    best = int(jnp.argmin(losses))
    value, omega, mu = float(losses[best]), final.omega[best], final.mu[best]
    # the closed-form layouts as candidates too (strict allocation needs H ≥ n)
    layouts = optimal_allocation_losses(block_sizes, context_len)
    candidates = [(layouts.single_head, _single_head(layouts, n_heads, n_tasks))]
    if n_heads >= n_tasks:
        candidates.append((layouts.one_head_per_task, _strict(layouts, n_heads, n_tasks)))
    for loss, (om, m) in candidates:
        if loss < value:
            value, omega, mu = loss, om, m
    found = int(jnp.sum(losses <= value * 1.01))
    return LayoutOptimum(value, omega, mu, restarts, found, int(jnp.sum(~trusted)))


def _single_head(layouts, n_heads, n_tasks):
    omega = jnp.zeros((n_heads, n_tasks)).at[0].set(layouts.single_head_omega)
    mu = jnp.zeros((n_heads, n_tasks)).at[0].set(jnp.asarray(layouts.single_head_mu))
    return omega, mu


def _strict(layouts, n_heads, n_tasks):
    tasks = jnp.arange(n_tasks)
    omega = (
        jnp.zeros((n_heads, n_tasks))
        .at[tasks, tasks]
        .set(jnp.asarray(layouts.one_head_per_task_omega))
    )
    mu = (
        jnp.zeros((n_heads, n_tasks))
        .at[tasks, tasks]
        .set(jnp.asarray(layouts.one_head_per_task_mu))
    )
    return omega, mu
