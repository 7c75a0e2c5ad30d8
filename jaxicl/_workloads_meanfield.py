"""Sweep workload `feature-learning`: the mean-field particle solver on the feature-regression
task from the coupled initial law, with W = W_µ after every step (`attention = "static"`, the
two-timescale limit) or trained `attention_ratio` times faster (`"attention"`), and optional
isotropic or Hessian-guided perturbations. W starts at W_µ0 either way.

Every member of a group shares the teacher, the training sample and the held-out sample (drawn
from the group's `seed`); seeds differ by their initial particles. Per member it records L(µ)
on the held-out sample, and at the end L/L_c (L_c: the loss of constant features), whether it
fell below `success_threshold`, and the divergence flag. Runs in float64 only.
"""

import equinox as eqx
import jax
import jax.random as jr
import numpy as np

from ._feature_attention import init_feature_attention
from ._feature_regression import feature_regression
from ._meanfield_loss import constant_feature_loss, with_optimal_attention
from ._meanfield_solver import particle_solver
from ._sweep_program import ensemble_program


MEANFIELD_MEMBER_AXES = ("learning_rate", "a_scale")


def feature_learning(settings: dict):
    d, k, m = settings["d"], settings["k"], settings["particles"]
    key = jr.key(settings["seed"])
    task = feature_regression(
        d=d,
        k=k,
        teacher_neurons=settings["teacher_neurons"],
        teacher_scale=settings["teacher_scale"],
        activation=settings["activation"],
        key=jr.fold_in(key, 0),
    )
    inputs = task.inputs(settings["n_inputs"], key=jr.fold_in(key, 1))
    eval_inputs = task.inputs(settings["n_eval_inputs"], key=jr.fold_in(key, 2))
    targets = task.target_features(inputs)
    scale = float(constant_feature_loss(task.target_features(eval_inputs)))
    solver = particle_solver(
        task,
        learning_rate=settings["learning_rate"],
        inputs=inputs,
        eval_inputs=eval_inputs,
        attention=settings["attention"],
        attention_ratio=settings["attention_ratio"],
        perturbation=settings["perturbation"],
        perturbation_size=settings["perturbation_size"],
        perturb_every=settings["perturb_every"],
    )
    record_every = max(1, settings["steps"] // settings["n_records"])
    steps = record_every * np.arange(settings["n_records"])

    def make(values, member_key):
        # the coupled law is linear in a_scale: draw at 1 and scale the output weights
        model = init_feature_attention(
            n_particles=m, k=k, d=d, activation=settings["activation"], key=member_key
        )
        model = eqx.tree_at(lambda mo: mo.particles.a, model, values["a_scale"] * model.particles.a)
        return with_optimal_attention(model, inputs, targets)

    def summarize(states, series):
        final = jax.vmap(solver.observe)(states.model)["loss"] / scale
        return {
            "final_relative_loss": np.asarray(final),
            "success": np.asarray(final < settings["success_threshold"]),
            "diverged": np.asarray(states.diverged),
        }

    return ensemble_program(
        make=make,
        member_axes=MEANFIELD_MEMBER_AXES,
        seed_key=jr.fold_in(key, 4),
        objective=solver.objective,
        optimizer=solver.optimizer,
        observe=solver.observe,
        after_step=solver.after_step,
        record_every=record_every,
        time=steps,
        time_units="Euler steps (flow time: learning_rate × step)",
        series={"loss": ("float64", lambda t: t.observables["loss"])},
        summaries={"final_relative_loss": "float64", "success": "bool", "diverged": "bool"},
        summarize=summarize,
        data_key=jr.fold_in(key, 3),
    )
