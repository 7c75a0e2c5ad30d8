"""Experiment `ensemble-training`: many random initializations of multi-head softmax attention
trained on in-context linear regression (the single-task setting of He et al., ICML 2025),
for several head counts, compared with the reference predictors.

Each head count is one compiled program over all its members. Steps run in chunks; after each
chunk the ensemble state and its records are checkpointed, so a killed run resumes where it
stopped and finishes with the same numbers.
"""

import dataclasses
import math
import pathlib
import time

import equinox as eqx
import jax
import jax.random as jr
import numpy as np
import optax

from .. import _validation as check
from .._checkpoint import claim_run_directory, load_checkpoint, save_checkpoint, save_json
from .._init import init_normal
from .._objectives import ICLLoss, monte_carlo_loss
from .._observables import semi_singular_values
from .._predictors import (
    debiased_gd_risk,
    gd_risk,
    optimal_gd_step,
    ridge_risk_given_inputs,
)
from .._progress import progress_bar
from .._tasks import LinearRegression, sample_prompts
from .._train_state import init_ensemble_state
from .._trainer import train_ensemble_steps


@dataclasses.dataclass(frozen=True)
class EnsembleTrainingConfig:
    """Configuration of `ensemble-training`; every field is validated on construction.

    Defaults follow He et al. (d = 5, L = 40, σ² = 0.1, Adam 1e-3, 256 prompts a step) with
    a short horizon so that the whole run takes a few CPU-minutes.
    """

    d: int = 5
    context_len: int = 40
    noise_var: float = 0.1
    heads: tuple[int, ...] = (1, 2)
    n_members: int = 128
    steps: int = 3000
    record_every: int = 50
    chunk_steps: int = 500
    batch_size: int = 256
    learning_rate: float = 1e-3
    init_scale: float = 0.1
    eval_prompts: int = 4096
    seed: int = 0

    def __post_init__(self):
        for name in (
            "d",
            "context_len",
            "n_members",
            "steps",
            "record_every",
            "chunk_steps",
            "batch_size",
            "eval_prompts",
        ):
            check.positive_int(name, getattr(self, name))
        check.finite_nonnegative("noise_var", self.noise_var)
        check.finite_positive("learning_rate", self.learning_rate)
        check.finite_nonnegative("init_scale", self.init_scale)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"`seed` must be an integer, got {self.seed!r}.")
        if not self.heads:
            raise ValueError("`heads` must list at least one head count, got ().")
        for h in self.heads:
            check.positive_int("heads", h)
        if self.chunk_steps % self.record_every or self.steps % self.chunk_steps:
            raise ValueError(
                f"`record_every` ({self.record_every}) must divide `chunk_steps` "
                f"({self.chunk_steps}), which must divide `steps` ({self.steps})."
            )

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["heads"] = list(self.heads)
        return out


def reference_risks(config: EnsembleTrainingConfig, *, key) -> dict:
    """Population risks of the reference predictors in this setting.

    GD and debiased GD at their optimal step (closed forms); Bayes ridge λ = σ²d by averaging
    its closed-form risk given the inputs over sampled inputs; the zero predictor.
    """
    d, L, s2 = config.d, config.context_len, config.noise_var
    noise = dict(context_noise=math.sqrt(s2), query_noise=math.sqrt(s2))
    task = LinearRegression(d, L, **noise)
    inputs = sample_prompts(task, config.eval_prompts, key=key).x
    ridge = jax.vmap(lambda x: ridge_risk_given_inputs(x, ridge=s2 * d, **noise))(inputs)

    def best(debiased):
        return optimal_gd_step(
            d=d, context_len=L, context_noise=noise["context_noise"], debiased=debiased
        )

    return {
        "bayes_ridge": float(ridge.mean()),
        "best_gd": float(gd_risk(d=d, context_len=L, step=best(False), **noise)),
        "best_debiased_gd": float(debiased_gd_risk(d=d, context_len=L, step=best(True), **noise)),
        "zero_predictor": 1.0 + s2,
    }


def _train_group(config, n_heads, group_dir, *, progress, on_chunk):
    """Train (or resume) one head count; returns models, records and timing."""
    sigma = math.sqrt(config.noise_var)
    task = LinearRegression(config.d, config.context_len, context_noise=sigma, query_noise=sigma)
    objective = ICLLoss(task, config.batch_size)
    optimizer = optax.adam(config.learning_rate)
    root = jr.fold_in(jr.key(config.seed), n_heads)
    init_key, data_key = jr.split(root)

    def make(key):
        return init_normal(d=config.d, n_out=1, n_heads=n_heads, scale=config.init_scale, key=key)

    states = init_ensemble_state(
        eqx.filter_vmap(make)(jr.split(init_key, config.n_members)), optimizer
    )
    blocks = ((0, config.d),)
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
            "omega": trajectory.observables[0][..., 0],
            "mu": trajectory.observables[1][..., 0],
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
    return states.model, records, timings, task


@eqx.filter_jit
def _population_losses(models, task, n_prompts, key):
    """Each member's population loss by Monte Carlo on the same fresh prompts (paired)."""
    per_member = lambda model: monte_carlo_loss(model, task, n_prompts, key=key)  # noqa: E731
    return eqx.filter_vmap(per_member)(models)


def run_ensemble_training(
    config: EnsembleTrainingConfig,
    out_dir: str | pathlib.Path,
    *,
    progress: bool | None = None,
    on_chunk=None,
) -> dict:
    """Run (or resume) the experiment into `out_dir`; returns the summary that is also saved.

    Writes `config.json`, `records_H{h}.npz` (loss and (ω, μ) per member over training, final
    population losses), `summary.json` and `loss_curves.png`. `on_chunk(n_heads, steps_done)` is
    called after every checkpoint.
    """
    from .._plots import plot_ensemble_training

    out_dir = pathlib.Path(out_dir)
    claim_run_directory(out_dir, config.as_dict())
    eval_key, reference_key = jr.split(jr.fold_in(jr.key(config.seed), 10_000))
    summary = {
        "config": config.as_dict(),
        "device": str(jax.devices()[0].device_kind),
        "references": reference_risks(config, key=reference_key),
        "groups": {},
    }
    results = {}
    for n_heads in config.heads:
        models, records, timings, task = _train_group(
            config, n_heads, out_dir / f"H{n_heads}", progress=progress, on_chunk=on_chunk
        )
        losses, errors = _population_losses(models, task, config.eval_prompts, eval_key)
        records = dict(records, final_loss=np.asarray(losses), final_loss_stderr=np.asarray(errors))
        np.savez(out_dir / f"records_H{n_heads}.npz", **records)
        results[n_heads] = records
        summary["groups"][str(n_heads)] = _group_summary(config, records, timings)
    save_json(out_dir / "summary.json", summary)
    plot_ensemble_training(results, summary["references"], out_dir / "loss_curves.png")
    return summary


def _group_summary(config, records, timings) -> dict:
    final = records["final_loss"]
    healthy = final[~records["diverged"][:, -1]]
    mu = records["mu"][:, -1]
    group = {
        "members": int(final.shape[0]),
        "diverged": int(records["diverged"][:, -1].sum()),
        "final_loss_median": float(np.median(healthy)),
        "final_loss_q10": float(np.quantile(healthy, 0.1)),
        "final_loss_q90": float(np.quantile(healthy, 0.9)),
        "sum_mu_median": float(np.median(mu.sum(axis=1))),
    }
    if mu.shape[1] >= 2:
        group["mixed_sign_mu_fraction"] = float(
            np.mean((mu > 0).any(axis=1) & (mu < 0).any(axis=1))
        )
    if len(timings) > 1:
        # The first chunk of a fresh process includes compilation; later chunks do not.
        group["member_steps_per_s"] = (
            config.n_members * config.chunk_steps / float(np.median(timings[1:]))
        )
        group["first_chunk_s"] = float(timings[0])
    return group


def format_summary(summary: dict) -> str:
    """A short plain-text table of the saved summary."""
    refs = summary["references"]
    lines = ["heads  members  final loss median [10%, 90%]   diverged  Σμ median  mixed-sign μ"]
    for h, g in summary["groups"].items():
        mixed = g.get("mixed_sign_mu_fraction")
        lines.append(
            f"{h:>5}  {g['members']:>7}  {g['final_loss_median']:.4f} "
            f"[{g['final_loss_q10']:.4f}, {g['final_loss_q90']:.4f}]   {g['diverged']:>8}  "
            f"{g['sum_mu_median']:>9.3f}  {'-' if mixed is None else f'{mixed:.0%}':>12}"
        )
    lines.append(
        "references: Bayes ridge {bayes_ridge:.4f}, best GD {best_gd:.4f}, best debiased GD "
        "{best_debiased_gd:.4f}, zero predictor {zero_predictor:.4f}".format(**refs)
    )
    for h, g in summary["groups"].items():
        if "member_steps_per_s" in g:
            lines.append(
                f"H={h}: {g['member_steps_per_s']:.0f} member-steps/s after compilation "
                f"(first chunk incl. compile {g['first_chunk_s']:.1f} s)"
            )
    return "\n".join(lines)
