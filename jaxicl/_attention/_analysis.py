"""Analysis of trajectories and trained heads: phase times and task allocation.

Pure functions of arrays for one member; vmap them over an ensemble.
"""

import math

import equinox as eqx
import jax.lax as lax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int


class Phases(eqx.Module):
    """Phase times of one loss curve; NaN (with a flag saying why) where the curve never got
    there within the record.

    - `warmup_end`: the loss has fallen by 10% of ℓ(0) − `floor` (the plateau is left).
    - `emergence_end`: 90% of the total drop is made (the fast emergence is over).
    - `convergence`: 99% of the total drop is made.
    - `drop`: total drop ℓ(0) − ℓ(end) of the smoothed, monotone envelope.
    - `left_warmup`: the curve left its plateau (else every time is NaN: still in warm-up).
    - `settled`: the curve is flat at the end (else the total drop is not known, and
      `emergence_end` and `convergence` are NaN: still moving).
    """

    warmup_end: Float[Array, ""]
    emergence_end: Float[Array, ""]
    convergence: Float[Array, ""]
    drop: Float[Array, ""]
    left_warmup: Bool[Array, ""]
    settled: Bool[Array, ""]


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
    floor: float = 0.0,
    settle: float = 0.02,
    tail: float = 0.1,
    min_drop: float = 1e-6,
) -> Phases:
    """Warm-up end, emergence end and convergence time of a loss curve; never a time the curve
    did not reach.

    Definition: smooth the curve with a centred moving median of `window` records (odd; use
    5–11 for sampled losses) and take its running minimum (a monotone envelope, so that noise
    cannot undo progress). Warm-up ends at the first record where the envelope has fallen by
    `fractions[0]` of ℓ(0) − `floor` (`floor`: the lowest loss possible, 0 for a noiseless squared
    error): measured against what could be learned, not against what was, so a curve still on
    its plateau at the horizon has no warm-up end. The curve is settled if its envelope fell by at
    most `settle` of its total drop over the last `tail` of the records; only then is the total
    drop known, and emergence and convergence are the first records where progress
    (ℓ(0) − ℓ(t)) / (ℓ(0) − ℓ(end)) reaches `fractions[1]` and `fractions[2]`.
    """
    if window < 1 or window % 2 == 0:
        raise ValueError(f"`window` must be a positive odd integer, got {window}.")
    if not 0 < tail < 1:
        raise ValueError(f"`tail` must be in (0, 1), got {tail}.")
    smooth = _moving_median(loss, window) if window > 1 else loss
    envelope = lax.cummin(smooth)
    start, n = envelope[0], envelope.shape[0]
    drop = start - envelope[-1]
    learnable = start - floor
    fallen = start - envelope
    left = (drop > min_drop * jnp.abs(start)) & (learnable > 0) & (drop >= fractions[0] * learnable)
    late = max(2, math.ceil(tail * n))
    settled = envelope[max(n - late, 0)] - envelope[-1] <= settle * drop
    progress = fallen / jnp.where(drop > 0, drop, 1.0)

    def first_time(reached, valid):
        return jnp.where(valid, time[jnp.argmax(reached)], jnp.nan)

    return Phases(
        warmup_end=first_time(fallen >= fractions[0] * learnable, left),
        emergence_end=first_time(progress >= fractions[1], left & settled),
        convergence=first_time(progress >= fractions[2], left & settled),
        drop=drop,
        left_warmup=left,
        settled=settled,
    )


class Allocation(eqx.Module):
    """How the heads of one model share the tasks.

    - `strength`: |ω_{h,i} μ_{h,i}|, head h's contribution to task i's regression slope.
    - `purity`: max_i strength / Σ_i strength, per head (1: the head serves one task).
    - `task`: the task each head serves most.
    - `dead`: heads whose total strength is below `dead_fraction` of the strongest head's.
    - `covered`: tasks served by at least one live head of purity ≥ `purity_threshold`.
    - `success`: every task is covered.
    - `stalled`: the stall of Chen et al.'s random inits: not a success, with a dead head and a
      live head split between tasks (purity below the threshold).
    """

    strength: Float[Array, "H n"]
    purity: Float[Array, " H"]
    task: Int[Array, " H"]
    dead: Bool[Array, " H"]
    covered: Bool[Array, " n"]
    success: Bool[Array, ""]
    stalled: Bool[Array, ""]


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
    split = ~dead & (purity < purity_threshold)
    return Allocation(
        strength=strength,
        purity=purity,
        task=task,
        dead=dead,
        covered=covered,
        success=covered.all(),
        stalled=~covered.all() & dead.any() & split.any(),
    )
