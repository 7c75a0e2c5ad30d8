"""Experiment `paired-heads`: many random initializations of multi-head softmax attention
trained on in-context linear regression (the single-task setting of He et al., ICML 2025),
for several head counts, compared with the reference predictors.

Training is `train_group` (one sweep of `AttentionRegression` per head count, streamed into a
store, so a killed run resumes to the same numbers); evaluation of the trained models rebuilt
from the stores adds the learned-structure statistics and the loss against context length.
"""

import dataclasses
import math
import pathlib

import equinox as eqx
import jax
import jax.random as jr
import numpy as np

from .. import _validation as check
from .._attention._observables import head_structure
from .._host._checkpoint import claim_run_directory, save_json
from .._studies._attention_regression import AttentionRegression
from .._tasks._regression import LinearRegression
from .._train._objectives import population_losses
from ._attention_groups import (
    CONTEXT_LEN,
    HEADS,
    N_MEMBERS,
    STUDY_HELP,
    AttentionTraining,
    check_training_config,
    evaluation_members,
    group_study,
    train_group,
)
from ._experiment import Experiment, setting
from ._length_generalization import model_losses_by_length, predictor_risks
from ._paired_heads_figure import plot_paired_heads


@dataclasses.dataclass(frozen=True)
class PairedHeadsConfig(AttentionTraining):
    """Configuration of `paired-heads`; every field is validated on construction.

    Defaults follow He et al. (d = 5, L = 40, σ² = 0.1, Adam 1e-3, 256 prompts a step) with
    a short horizon so that the whole run takes a few CPU-minutes.
    """

    d: int = setting(5, "input dimension x ∈ R^d")
    context_len: int = setting(40, CONTEXT_LEN)
    study: AttentionRegression = setting(group_study(3000), STUDY_HELP)
    heads: tuple[int, ...] = setting((1, 2, 4, 8), HEADS)
    n_members: int = setting(64, N_MEMBERS)
    eval_lengths: tuple[int, ...] = setting(
        (10, 20, 40, 60, 80, 100), "context lengths L of the length-generalization curve"
    )

    def __post_init__(self):
        check.positive_int("d", self.d)
        check.positive_int("context_len", self.context_len)
        check_training_config(self)
        if not self.eval_lengths:
            raise ValueError("`eval_lengths` must list at least one context length, got ().")
        for length in self.eval_lengths:
            check.positive_int("eval_lengths", length)


def reference_risks(config: PairedHeadsConfig, *, key) -> tuple[dict, dict]:
    """The reference predictors' risks (`predictor_risks`), computed once for the training
    length and the evaluation lengths. Returns `(at_training_length, by_length)`: the first
    under the names the summary and figure use, the second aligned with `eval_lengths`."""
    lengths = sorted({config.context_len, *config.eval_lengths})
    risks = predictor_risks(config.d, lengths, config.noise_var, config.eval_prompts, key=key)
    names = dict(
        bayes_ridge="bayes_ridge",
        best_gd="gd",
        best_debiased_gd="debiased_gd",
        kernel_smoother="kernel_smoother",
        zero_predictor="zero",
    )
    train = lengths.index(config.context_len)
    at_training_length = {name: risks[source][train] for name, source in names.items()}
    by_length = {
        name: [values[lengths.index(length)] for length in config.eval_lengths]
        for name, values in risks.items()
    }
    return at_training_length, by_length


def run_paired_heads(
    config: PairedHeadsConfig,
    out_dir: str | pathlib.Path,
    *,
    progress: bool | str | None = None,
    on_chunk=None,
) -> dict:
    """Run (or resume) the experiment into `out_dir`; returns the summary that is also saved.

    Writes `config.json`, the sweep stores `sweeps/H{h}`, `records_H{h}.npz` (loss and (ω, μ)
    per member over training, final population losses, losses at every evaluation length),
    `summary.json` and `paired_heads.png`. `on_chunk(n_heads, steps_done)` is called after
    every stored step chunk.
    """

    out_dir = pathlib.Path(out_dir)
    claim_run_directory(out_dir, config.as_dict())
    eval_key, reference_key, length_key = jr.split(jr.fold_in(jr.key(config.seed), 10_000), 3)
    lengths = config.eval_lengths
    results, groups, models_median = {}, {}, {}
    sigma = math.sqrt(config.noise_var)
    task = LinearRegression(config.d, config.context_len, context_noise=sigma, query_noise=sigma)
    for n_heads in config.heads:
        models, records = train_group(
            config, task, n_heads, out_dir, progress=progress, on_chunk=on_chunk
        )
        # One task: keep (members, records, H) rather than a trailing task axis of size 1.
        records = dict(records, omega=records["omega"][..., 0], mu=records["mu"][..., 0])
        at_once = evaluation_members(config, n_heads, config.context_len)
        losses, errors = population_losses(models, task, config.eval_prompts, eval_key, at_once)
        by_length = model_losses_by_length(
            models,
            config.d,
            lengths,
            config.noise_var,
            config.eval_prompts,
            key=length_key,
            members_at=lambda length: evaluation_members(config, n_heads, length),
        )
        records = dict(
            records,
            final_loss=np.asarray(losses),
            final_loss_stderr=np.asarray(errors),
            loss_by_length=np.asarray(by_length),
        )
        np.savez(out_dir / f"records_H{n_heads}.npz", **records)
        results[n_heads] = records
        # Diverged members are frozen where they blew up: counted, left out of every statistic.
        healthy = ~records["diverged"][:, -1]
        groups[str(n_heads)] = dict(_group_summary(records), **_structure_summary(models, healthy))
        models_median[str(n_heads)] = (
            np.median(records["loss_by_length"][healthy], axis=0).tolist()
            if healthy.any()
            else [None] * len(lengths)
        )
    # after training, so that sizes that cannot fit are refused before anything is computed
    references, predictors_by_length = reference_risks(config, key=reference_key)
    summary = {
        "config": config.as_dict(),
        "device": str(jax.devices()[0].device_kind),
        "references": references,
        "by_length": {
            "lengths": list(lengths),
            "predictors": predictors_by_length,
            "models_median": models_median,
        },
        "groups": groups,
    }
    save_json(out_dir / "summary.json", summary)
    plot_paired_heads(results, summary, out_dir / "paired_heads.png")
    return summary


def _structure_summary(models, healthy) -> dict:
    """Medians over live heads (|ω μ| ≥ 5% of the member's strongest head) of the structure
    statistics, the zero-sum measure |Σ_h μ_h| / Σ_h |μ_h|, and the fraction of members whose
    live heads come in both signs while each still fits the data (ω_h μ_h > 0): ± pairs."""
    names = (
        "kq_diagonal_ratio",
        "kq_diagonal_spread",
        "kq_label_ratio",
        "ov_last_entry_ratio",
        "zero_sum_median",
        "paired_fraction",
        "live_heads_median",
    )
    if not healthy.any():
        return dict.fromkeys(names)
    models = jax.tree.map(lambda x: x[healthy] if eqx.is_array(x) else x, models)
    structure = jax.vmap(head_structure)(models)
    strength = np.abs(np.asarray(structure.omega * structure.mu))
    live = strength >= 0.05 * strength.max(axis=1, keepdims=True)
    omega, mu = np.asarray(structure.omega), np.asarray(structure.mu)
    out = {
        name: float(np.median(np.asarray(getattr(structure, name))[live]))
        for name in (
            "kq_diagonal_ratio",
            "kq_diagonal_spread",
            "kq_label_ratio",
            "ov_last_entry_ratio",
        )
    }
    out["zero_sum_median"] = float(np.median(np.abs(mu.sum(axis=1)) / np.abs(mu).sum(axis=1)))
    both_signs = ((omega > 0) & live).any(axis=1) & ((omega < 0) & live).any(axis=1)
    aligned = np.where(live, omega * mu > 0, True).all(axis=1)
    out["paired_fraction"] = float(np.mean(both_signs & aligned))
    out["live_heads_median"] = float(np.median(live.sum(axis=1)))
    return out


def _group_summary(records) -> dict:
    final = records["final_loss"]
    healthy = final[~records["diverged"][:, -1]]
    mu = records["mu"][:, -1][~records["diverged"][:, -1]]
    # Diverged members are counted, never averaged; with none healthy there is no number.
    some = healthy.size > 0
    group = {
        "members": int(final.shape[0]),
        "diverged": int(records["diverged"][:, -1].sum()),
        "final_loss_median": float(np.median(healthy)) if some else None,
        "final_loss_q10": float(np.quantile(healthy, 0.1)) if some else None,
        "final_loss_q90": float(np.quantile(healthy, 0.9)) if some else None,
        "final_loss_mean": float(healthy.mean()) if some else None,
        "final_loss_stderr": float(healthy.std(ddof=1) / np.sqrt(healthy.size))
        if healthy.size > 1
        else None,
        "sum_mu_median": float(np.median(mu.sum(axis=1))) if some else None,
    }
    if mu.shape[1] >= 2 and some:
        group["mixed_sign_mu_fraction"] = float(
            np.mean((mu > 0).any(axis=1) & (mu < 0).any(axis=1))
        )
    return group


def _or_dash(value, spec: str) -> str:
    width = int(spec.split(".")[0])
    return f"{'—':>{width}}" if value is None else format(value, spec)


def _loss_cell(g) -> str:
    """mean ± s.e. (median) of the healthy members, or why there is none."""
    if g["final_loss_mean"] is None:
        return f"{'all ' + str(g['diverged']) + ' diverged':<30}"
    stderr = "—" if g["final_loss_stderr"] is None else f"{g['final_loss_stderr']:.4f}"
    text = f"{g['final_loss_mean']:.4f} ± {stderr} ({g['final_loss_median']:.4f})"
    return text + (f" [{g['diverged']} diverged]" if g["diverged"] else "")


def format_paired_heads_summary(summary: dict) -> str:
    """A short plain-text table of the saved summary."""
    refs = summary["references"]
    lines = [
        "heads  members  final loss mean ± s.e. (median)  diag KQ  spread  last-entry OV  "
        "|Σμ|/Σ|μ|  ± pairs  live heads"
    ]
    for h, g in summary["groups"].items():
        cell = lambda name, spec: _or_dash(g[name], spec)  # noqa: E731
        lines.append(
            f"{h:>5}  {g['members']:>7}  {_loss_cell(g)}   {cell('kq_diagonal_ratio', '6.3f')}  "
            f"{cell('kq_diagonal_spread', '6.3f')}  {cell('ov_last_entry_ratio', '13.3f')}  "
            f"{cell('zero_sum_median', '9.3f')}  {cell('paired_fraction', '7.0%')}  "
            f"{cell('live_heads_median', '10.0f')}"
        )
    lines.append(
        "references at the training L: Bayes ridge {bayes_ridge:.4f}, best GD {best_gd:.4f}, "
        "best debiased GD {best_debiased_gd:.4f}, best kernel smoother {kernel_smoother:.4f}, "
        "zero {zero_predictor:.4f}".format(**refs)
    )
    by_length = summary["by_length"]
    lines.append(
        "loss against context length L: " + "  ".join(f"{n:>6}" for n in by_length["lengths"])
    )
    rows = [(f"H={h} (median)", v) for h, v in by_length["models_median"].items()]
    rows += [(name, v) for name, v in by_length["predictors"].items()]
    for name, values in rows:
        lines.append(f"  {name:<29}" + "  ".join(_or_dash(v, "6.3f") for v in values))
    return "\n".join(lines)


EXPERIMENT = Experiment(
    name="paired-heads",
    config=PairedHeadsConfig,
    run=run_paired_heads,
    describe=format_paired_heads_summary,
    studies=(AttentionRegression,),
)
