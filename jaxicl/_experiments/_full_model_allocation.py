"""The full softmax model beside the reduced dynamics, for the `task-allocation` experiment.

A few seeds of each scheme are trained as full attention models (all D×D weights, sampled
prompts, SGD) from the decomposable init of the same (Ω, M) the reduced ensemble starts from:
`FactorizedAttention` for the balanced factorized flow, `MergedAttention` for the merged flow.
`reduced_time_scales` puts the ansatz entries on the reduced flow's clock, so both run over the
same time axis; the same seeds are integrated in the reduced dynamics over the same horizon
and the two are compared: allocation, final loss, phase times, distance in (Ω, M), and the
weight that left the ansatz.

One difference is structural: the balanced factorized flow preserves every sign, but in the full
factorized model the balance q² = k² of a near-zero entry is broken by sampling noise and the
off-ansatz weights, so an off-task ω or μ can cross zero. A head that serves one task can then
take the opposite sign on another, the mixed-sign mechanism of the merged flow, and the full
model leaves strict allocation for a lower loss. Allocation is therefore recorded both at the
end and at any time (`ever_success`).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .._analysis import detect_phases, task_allocation
from .._decomposable import decomposable_attention, reduced_time_scales
from .._objectives import ICLLoss
from .._observables import semi_singular_values
from .._tasks import MultiTaskRegression, disjoint_blocks
from .._trainer import preconditioned_sgd, train_ensemble


def _off_ansatz_fraction(model, blocks, d):
    """‖W − W_ansatz‖ / ‖W‖ and the same for U, for one model (merged weights)."""
    merged = model.merged()
    on = decomposable_attention(*semi_singular_values(model, blocks), blocks, d)
    off = lambda full, ansatz: jnp.linalg.norm(full - ansatz) / jnp.linalg.norm(full)  # noqa: E731
    return off(merged.W, on.W), off(merged.U, on.U)


def full_model_group(
    config, initial_states, reduced_run, *, merged: bool, dt: float, horizon: float
) -> dict:
    """Train the full model from each initial reduced state (stacked) with step `dt` over
    `horizon`, and compare with `reduced_run` = (final states, trajectory) of the reduced flow
    from the same states on the same schedule; returns per-seed arrays for both."""
    blocks = disjoint_blocks(config.d, config.n_tasks)
    steps = round(horizon / dt)
    schedule = dict(steps=steps, record_every=steps // config.n_records, key=jr.key(config.seed))

    def build(state):
        omega, mu = state.spectral()
        return decomposable_attention(omega, mu, blocks, config.d, factorized=not merged)

    models = eqx.filter_vmap(build)(initial_states)
    one_model = build(jax.tree.map(lambda x: x[0], initial_states))
    optimizer = preconditioned_sgd(dt, reduced_time_scales(one_model, blocks))
    task = MultiTaskRegression(config.d, config.context_len, blocks)
    observe = lambda model: semi_singular_values(model, blocks)  # noqa: E731
    # Per-member prompts: seeds of a deterministic init (balanced) then differ by their
    # sampling noise instead of repeating one run.
    full, full_traj = train_ensemble(
        models,
        ICLLoss(task, config.full_batch),
        optimizer,
        observe=observe,
        shared_data=False,
        **schedule,
    )
    reduced, reduced_traj = reduced_run
    # The ICL loss averages the n outputs; ℓ sums them.
    full_loss = config.n_tasks * full_traj.loss
    full_phases = jax.vmap(lambda t, l: detect_phases(t, l, window=9))(full_traj.time, full_loss)
    reduced_phases = jax.vmap(detect_phases)(reduced_traj.time, reduced_traj.loss)
    omega, mu = jax.vmap(lambda m: semi_singular_values(m, blocks))(full)
    off_w, off_u = jax.vmap(lambda m: _off_ansatz_fraction(m, blocks, config.d))(full)
    scale = jnp.maximum(
        jnp.abs(reduced_traj.observables[0]).max(axis=(1, 2, 3)),
        jnp.abs(reduced_traj.observables[1]).max(axis=(1, 2, 3)),
    )
    gap = jnp.maximum(
        jnp.abs(full_traj.observables[0] - reduced_traj.observables[0]).max(axis=(2, 3)),
        jnp.abs(full_traj.observables[1] - reduced_traj.observables[1]).max(axis=(2, 3)),
    )
    return {
        "time": np.asarray(full_traj.time[0]),
        "loss": np.asarray(full_loss),
        "reduced_loss": np.asarray(reduced_traj.loss),
        "success": np.asarray(jax.vmap(task_allocation)(omega, mu).success),
        # Allocation can be transient in the full model (see the module docstring).
        "ever_success": np.asarray(
            jax.vmap(jax.vmap(lambda o, m: task_allocation(o, m).success))(
                *full_traj.observables
            ).any(axis=1)
        ),
        "reduced_success": np.asarray(
            jax.vmap(lambda s: task_allocation(*s.spectral()))(reduced).success
        ),
        "final_loss": np.asarray(full_loss[:, -10:].mean(axis=1)),
        "reduced_final_loss": np.asarray(reduced_traj.loss[:, -1]),
        "left_warmup": np.asarray(full_phases.left_warmup),
        "reduced_left_warmup": np.asarray(reduced_phases.left_warmup),
        "warmup_end": np.asarray(full_phases.warmup_end),
        "reduced_warmup_end": np.asarray(reduced_phases.warmup_end),
        "emergence_end": np.asarray(full_phases.emergence_end),
        "reduced_emergence_end": np.asarray(reduced_phases.emergence_end),
        "spectral_gap": np.asarray(gap / scale[:, None]),
        "off_ansatz_W": np.asarray(off_w),
        "off_ansatz_U": np.asarray(off_u),
        "diverged": np.asarray(full_traj.diverged[:, -1]),
    }
