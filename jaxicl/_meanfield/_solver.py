"""The mean-field particle solver: the trainer driving the particle flow, with W static or
trained, optional perturbations and birth–death, and records on a held-out input sample.

An ensemble of particle systems (seeds, or measures of different M padded to one size) is one
`train_ensemble_steps` call, like any other ensemble.
"""

from typing import NamedTuple

import equinox as eqx
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from .. import _validation as check
from .._train._options import Members, Record
from .._train._state import TrainState, Trajectory, init_ensemble_state
from .._train._trainer import train_ensemble_steps
from ._flow import AbstractAttentionTreatment, OptimalAttention, particle_flow
from ._loss import losses_from_moments, moments
from ._model import FeatureAttention
from ._moves import AfterSteps, BirthDeath
from ._objectives import InContextFeatureLoss, MeanFieldLoss
from ._perturbations import PERTURBATIONS, AbstractPerturbation, NoPerturbation
from ._saddle import dissipation, least_splitting_curvature
from ._task import FeatureRegression


class MeanFieldObservables(eqx.Module):
    """Records of one model on a held-out input sample: `loss` L(µ), `transformer_loss`
    L_TF(µ, W), `condition` (of Σ_µµ), `teacher_singular_values` (of Σ_µ°µ, descending), and
    particle statistics (mass-weighted): `a_norm`, `w_norm`, `w_spread` (RMS distance of the
    w_j to their mean; 0 when all particles coincide).

    With `geometry` (a Hessian per particle per record, so off by default) also
    `splitting_curvature` (the least eigenvalue over particles of ∇²_θ δL/δµ: −κ < 0 where a
    split atom grows at rate κ) and, on `flow_sample` (the fixed training sample the flow
    descends, whose critical points it approaches), `flow_dissipation` (−dL/dt there:
    Σ_j m_j ‖∇_θ δL/δµ(θ_j)‖²) and `flow_splitting_curvature` (the flow's own rate of
    splitting); both NaN without one (in context), so every run records the same names."""

    inputs: Float[Array, "n d"]
    targets: Float[Array, "n k"]
    jitter: float | None = eqx.field(static=True, default=None)
    flow_sample: tuple[Float[Array, "n_train d"], Float[Array, "n_train k"]] | None = None
    geometry: bool = eqx.field(static=True, default=False)

    def __call__(self, model: FeatureAttention) -> dict:
        p = model.particles
        # one pass over the held-out inputs serves every record
        h, sigma, cross = moments(p, self.inputs, self.targets)
        loss, loss_tf = losses_from_moments(h, sigma, cross, self.targets, model.W, self.jitter)
        eigenvalues = jnp.linalg.eigvalsh(sigma)
        w_mean = p.mass @ p.w
        out = {
            "loss": loss,
            "transformer_loss": loss_tf,
            "condition": eigenvalues[-1] / eigenvalues[0],
            "teacher_singular_values": jnp.linalg.svd(cross, compute_uv=False),
            "a_norm": p.mass @ jnp.linalg.norm(p.a, axis=1),
            "w_norm": p.mass @ jnp.linalg.norm(p.w, axis=1),
            "w_spread": jnp.sqrt(p.mass @ jnp.sum((p.w - w_mean[None]) ** 2, axis=1)),
        }
        return {**out, **self._geometry(p, loss.dtype)} if self.geometry else out

    def _geometry(self, p, dtype) -> dict:
        held_out = least_splitting_curvature(p, self.inputs, self.targets, self.jitter)
        if self.flow_sample is None:
            nan = jnp.full((), jnp.nan, dtype)
            flow = {"flow_dissipation": nan, "flow_splitting_curvature": nan}
        else:
            flow = {
                "flow_dissipation": dissipation(p, *self.flow_sample, self.jitter),
                "flow_splitting_curvature": least_splitting_curvature(
                    p, *self.flow_sample, self.jitter
                ),
            }
        return {"splitting_curvature": held_out, **flow}


class ParticleSolver(NamedTuple):
    """What the trainer needs to run the particle flow (from `particle_solver`)."""

    objective: MeanFieldLoss
    optimizer: optax.GradientTransformation
    after_step: AfterSteps
    observe: MeanFieldObservables

    def init(self, models: FeatureAttention) -> TrainState:
        """Stacked train states for a stacked ensemble of models."""
        return init_ensemble_state(models, self.optimizer)

    def run(
        self,
        states: TrainState,
        *,
        steps: int,
        key: PRNGKeyArray,
        record_every: int | None = None,
        members: Members = Members(),
    ) -> tuple[TrainState, Trajectory]:
        """Continue the ensemble `steps` Euler steps (resumable like any trainer call),
        recording the observables every `record_every` steps (None: once)."""
        return train_ensemble_steps(
            states,
            self.objective,
            self.optimizer,
            steps=steps,
            key=key,
            record=Record(every=record_every, observe=self.observe),
            members=members,
            after_step=self.after_step,
        )


def particle_solver(
    task: FeatureRegression,
    *,
    learning_rate: float,
    eval_inputs: Float[Array, "n_eval d"],
    inputs: Float[Array, "n_inputs d"] | None = None,
    batch_size: int | None = None,
    attention: AbstractAttentionTreatment = OptimalAttention(),
    attention_ratio: float = 10.0,
    perturbation: AbstractPerturbation = NoPerturbation(),
    perturbation_size: float = 0.0,
    perturb_every: int = 1,
    birth_death_rate: float = 0.0,
    jitter: float | None = None,
    context_len: int | None = None,
    geometry: bool = False,
) -> ParticleSolver:
    """Configure the particle solver of the Wasserstein gradient flow of L (or L_TF).

    **Arguments:**

    - `task`: the feature-regression task (its teacher defines f°).
    - `learning_rate`: the Euler step η of the flow (each particle moves η × its velocity).
    - `eval_inputs`: held-out inputs on which the records are computed.
    - `inputs` / `batch_size`: a fixed training sample, or fresh inputs each step (one of them).
    - `context_len`: train in context instead: `batch_size` fresh prompts of `context_len`
      token pairs each step, on the finite-n loss L^n (`InContextFeatureLoss`); W's treatment
      then reads the moments on the step's prompts' inputs.
    - `attention`: `OptimalAttention()` (W = W_µ after every step, particles follow ∇L: the
      two-timescale limit) or `JointAttention()` (particles follow ∇L_TF at the current W, and
      W follows its gradient flow on L_TF `attention_ratio` times faster; see `AttentionFlow`).
    - `perturbation`: `NoPerturbation()`, `IsotropicNoise()` or `HessianNoise()`
      (Hessian-guided), of size `perturbation_size`, every `perturb_every` steps.
    - `birth_death_rate`: rate of the birth–death jumps (0: none).
    - `jitter`: relative ridge on Σ_µµ (see `two_timescale_loss`).
    - `geometry`: also record the splitting curvature and the flow's dissipation (see
      `MeanFieldObservables`; a Hessian per particle per record).
    """
    check.finite_positive("learning_rate", learning_rate)
    check.variant("perturbation", perturbation, AbstractPerturbation, PERTURBATIONS)
    check.finite_nonnegative("birth_death_rate", birth_death_rate)
    if context_len is not None:
        if batch_size is None or inputs is not None:
            raise ValueError("In context (`context_len`), give `batch_size` (prompts per step).")
        objective = InContextFeatureLoss(task, context_len, batch_size)
    else:
        objective = MeanFieldLoss(
            task, attention=attention, inputs=inputs, batch_size=batch_size, jitter=jitter
        )
    noise = perturbation.move(size=perturbation_size, every=perturb_every, jitter=jitter)
    moves = [] if noise is None else [noise]
    if birth_death_rate > 0:
        moves.append(BirthDeath(birth_death_rate, learning_rate, jitter))
    moves.append(attention.move(learning_rate=learning_rate, ratio=attention_ratio, jitter=jitter))
    return ParticleSolver(
        objective=objective,
        optimizer=particle_flow(learning_rate),
        after_step=AfterSteps(tuple(moves)),
        observe=MeanFieldObservables(
            eval_inputs,
            task.target_features(eval_inputs),
            jitter,
            None if inputs is None else (inputs, task.target_features(inputs)),
            geometry,
        ),
    )
