"""Analysis of trajectories and trained heads: phase times and task allocation.

Pure functions of arrays for one member; vmap them over an ensemble.
"""

import equinox as eqx
import jax.lax as lax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int


class Phases(eqx.Module):
    """Phase times of one loss curve (NaN where the curve never gets there).

    - `warmup_end`: the loss has made 10% of its total drop (the slow warm-up is over).
    - `emergence_end`: 90% of the drop is made (the fast emergence is over).
    - `convergence`: 99% of the drop is made.
    - `drop`: total drop ℓ(0) − ℓ(end) of the smoothed, monotone envelope.
    """

    warmup_end: Float[Array, ""]
    emergence_end: Float[Array, ""]
    convergence: Float[Array, ""]
    drop: Float[Array, ""]


def _moving_median(values: Float[Array, " n"], window: int) -> Float[Array, " n"]:
    half = window // 2
    padded = jnp.pad(values, half, mode="edge")
    shifted = jnp.stack([padded[i : i + values.shape[0]] for i in range(window)])
    return jnp.median(shifted, axis=0)


def detect_phases(
    time: Float[Array, " n"],
    loss: Float[Array, " n"],
    *,
    window: int = 1,
    fractions: tuple[float, float, float] = (0.1, 0.9, 0.99),
    min_drop: float = 1e-6,
) -> Phases:
    """Warm-up end, emergence end and convergence time of a loss curve.

    Definition: smooth the curve with a centred moving median of `window` records (odd; use
    5–11 for sampled losses), take its running minimum (a monotone envelope, so that noise
    cannot undo progress), and measure progress p(t) = (ℓ(0) − ℓ(t)) / (ℓ(0) − ℓ(end)). The
    three times are the first records where p reaches `fractions` = (10%, 90%, 99%). If the total
    drop is below `min_drop` (relative to ℓ(0)) nothing was learned and all times are NaN.
    """
    if window < 1 or window % 2 == 0:
        raise ValueError(f"`window` must be a positive odd integer, got {window}.")
    smooth = _moving_median(loss, window) if window > 1 else loss
    envelope = lax.cummin(smooth)
    drop = envelope[0] - envelope[-1]
    progress = (envelope[0] - envelope) / jnp.where(drop > 0, drop, 1.0)
    learned = drop > min_drop * jnp.abs(envelope[0])

    def first_time(fraction):
        index = jnp.argmax(progress >= fraction)
        return jnp.where(learned, time[index], jnp.nan)

    warmup, emergence, converged = (first_time(f) for f in fractions)
    return Phases(warmup_end=warmup, emergence_end=emergence, convergence=converged, drop=drop)


class Allocation(eqx.Module):
    """How the heads of one model share the tasks.

    - `strength`: |ω_{h,i} μ_{h,i}|, head h's contribution to task i's regression slope.
    - `purity`: max_i strength / Σ_i strength, per head (1: the head serves one task).
    - `task`: the task each head serves most.
    - `dead`: heads whose total strength is below `dead_fraction` of the strongest head's.
    - `covered`: tasks served by at least one live head of purity ≥ `purity_threshold`.
    - `success`: every task is covered.
    """

    strength: Float[Array, "H n"]
    purity: Float[Array, " H"]
    task: Int[Array, " H"]
    dead: Bool[Array, " H"]
    covered: Bool[Array, " n"]
    success: Bool[Array, ""]


def task_allocation(
    omega: Float[Array, "H n"],
    mu: Float[Array, "H n"],
    *,
    purity_threshold: float = 0.9,
    dead_fraction: float = 0.05,
) -> Allocation:
    """Which head serves which task, from the semi-singular values (ω, μ) of one model."""
    strength = jnp.abs(omega * mu)
    total = strength.sum(axis=1)
    purity = strength.max(axis=1) / jnp.where(total > 0, total, 1.0)
    task = jnp.argmax(strength, axis=1)
    dead = total < dead_fraction * total.max()
    serving = (~dead & (purity >= purity_threshold))[:, None] & (
        task[:, None] == jnp.arange(omega.shape[1])[None, :]
    )
    covered = serving.any(axis=0)
    return Allocation(
        strength=strength,
        purity=purity,
        task=task,
        dead=dead,
        covered=covered,
        success=covered.all(),
    )
