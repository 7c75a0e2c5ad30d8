"""Risks against context length L: trained models (evaluated away from their training L) and
the reference predictors, each at its best setting for that L (He et al. 2025)."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr

from .._attention._predictors import (
    debiased_gd_risk,
    gd_risk,
    kernel_smoother_risk,
    optimal_gd_step,
    ridge_risk_given_inputs,
)
from .._tasks._regression import LinearRegression, sample_prompts
from .._train._objectives import population_losses


def _task(d, context_len, noise_var):
    sigma = math.sqrt(noise_var)
    return LinearRegression(d, context_len, context_noise=sigma, query_noise=sigma)


@eqx.filter_jit
def _sampled_risks(task, n_prompts: int, omegas, key):
    """Bayes ridge λ = σ²d (closed form given the inputs, averaged over sampled inputs) and the
    best kernel smoother on one sample of the task's prompts: one compiled program per L (run
    op by op, the sampling alone compiled a dozen small programs per L)."""
    prompts = sample_prompts(task, n_prompts, key=key)
    noise = dict(context_noise=task.context_noise, query_noise=task.query_noise)
    ridge = jax.vmap(
        lambda x: ridge_risk_given_inputs(x, ridge=task.context_noise**2 * task.d, **noise)
    )
    return ridge(prompts.x).mean(), kernel_smoother_risk(prompts, omegas)


def predictor_risks(d: int, lengths, noise_var: float, n_prompts: int, *, key) -> dict:
    """Population risk of each reference predictor at each L (lists aligned with `lengths`).

    GD and debiased GD at their optimal step (closed forms), Bayes ridge λ = σ²d (closed form
    given the inputs, averaged over sampled inputs), the kernel smoother at its best (ω, μ) (Monte
    Carlo, ω on a grid; in-sample μ makes it optimistic by O(1/`n_prompts`)), zero predictor.
    """
    sigma = math.sqrt(noise_var)
    noise = dict(context_noise=sigma, query_noise=sigma)
    out = {k: [] for k in ("gd", "debiased_gd", "bayes_ridge", "kernel_smoother", "zero")}
    omegas = jnp.linspace(0.0, 1.5, 61)
    for length in lengths:
        length_key = jr.fold_in(key, length)
        for name, debiased, risk in (
            ("gd", False, gd_risk),
            ("debiased_gd", True, debiased_gd_risk),
        ):
            step = optimal_gd_step(d=d, context_len=length, context_noise=sigma, debiased=debiased)
            out[name].append(float(risk(d=d, context_len=length, step=step, **noise)))
        ridge, smoother = _sampled_risks(_task(d, length, noise_var), n_prompts, omegas, length_key)
        out["bayes_ridge"].append(float(ridge))
        out["kernel_smoother"].append(float(smoother))
        out["zero"].append(1.0 + noise_var)
    return out


def model_losses_by_length(
    models, d: int, lengths, noise_var: float, n_prompts: int, *, key, members_at=None
):
    """Population loss (Monte Carlo, the same prompts for every member) of each stacked model at
    each L; shape (members, len(lengths)). `members_at(L)`: members evaluated at once at L
    (None: all)."""
    columns = []
    for length in lengths:
        task = _task(d, length, noise_var)
        at_once = None if members_at is None else members_at(length)
        estimates, _ = population_losses(models, task, n_prompts, jr.fold_in(key, length), at_once)
        columns.append(estimates)
    return jnp.stack(columns, axis=1)
