"""Experiment `overlapping-tasks`: two regression tasks sharing input coordinates (He et al.
2025; d = 6, task 1 reads x[0:4], task 2 reads x[2:6], L = 48), trained from random inits for
several head counts. With N = 2 tasks, He et al. report superposition (heads mixing both
tasks) for H < 2N and a ± pair of heads per task for H ≥ 2N.

A head's strength on task k is |ω_{h,k} μ_{h,k}|, with ω_{h,k} the mean KQ diagonal over the
coordinates only task k reads (x[0:2], x[4:6]; the shared ones cannot tell the tasks apart) and
μ_{h,k} = U_h[k, d + k]. Purity is the larger strength over the sum; a member is *split* when
each task is served by live heads of purity ≥ 0.9 of both signs of ω (its own ± pair).
"""

import dataclasses
import math
import pathlib

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .. import _validation as check
from .._attention._analysis import task_allocation
from .._attention._observables import own_semi_singular_values
from .._host._checkpoint import claim_run_directory, save_json
from .._studies._attention_regression import AttentionRegression
from .._tasks._regression import overlapping_two_task
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
from ._overlapping_tasks_figure import plot_overlapping_tasks


PURITY_THRESHOLD = 0.9
LIVE_FRACTION = 0.05


@dataclasses.dataclass(frozen=True)
class OverlappingTasksConfig(AttentionTraining):
    """Configuration of `overlapping-tasks`; every field is validated on construction."""

    context_len: int = setting(48, CONTEXT_LEN)
    study: AttentionRegression = setting(group_study(4000), STUDY_HELP)
    heads: tuple[int, ...] = setting((2, 3, 4, 6), HEADS)
    n_members: int = setting(32, N_MEMBERS)

    def __post_init__(self):
        check.positive_int("context_len", self.context_len)
        check_training_config(self)


def _split_statistics(omega, mu) -> dict:
    """Per member (leading axis): strengths, purity and liveness of the heads
    (`task_allocation`), and whether every task has its own ± pair of pure live heads."""
    allocation = jax.vmap(
        lambda o, m: task_allocation(
            o, m, purity_threshold=PURITY_THRESHOLD, dead_fraction=LIVE_FRACTION
        )
    )(jnp.asarray(omega), jnp.asarray(mu))
    strength, purity, task, live = (
        np.asarray(a)
        for a in (allocation.strength, allocation.purity, allocation.task, ~allocation.dead)
    )
    pure = live & (purity >= PURITY_THRESHOLD)
    own_omega = np.take_along_axis(np.asarray(omega), task[..., None], axis=2)[..., 0]
    split = np.ones(strength.shape[0], bool)
    for k in range(strength.shape[2]):
        serving = pure & (task == k)
        split &= (serving & (own_omega > 0)).any(axis=1) & (serving & (own_omega < 0)).any(axis=1)
    return {"strength": strength, "purity": purity, "live": live, "split": split}


def group_summary(stats: dict, loss, diverged) -> dict:
    """One head count's numbers over the members that did not diverge (a diverged member is
    frozen where it broke: its weights and loss are not an outcome); those are counted."""
    healthy = ~np.asarray(diverged, bool)
    loss = np.asarray(loss)[healthy]
    out = {"members": int(loss.size), "diverged": int((~healthy).sum())}
    if not loss.size:
        return out
    live_purity = stats["purity"][healthy][stats["live"][healthy]]
    rate = float(stats["split"][healthy].mean())
    return {
        **out,
        "split_rate": rate,
        "split_stderr": math.sqrt(rate * (1 - rate) / loss.size),
        "mixed_head_fraction": float(np.mean(live_purity < PURITY_THRESHOLD)),
        "purity_median": float(np.median(live_purity)),
        "final_loss_median": float(np.median(loss)),
        "final_loss_q10": float(np.quantile(loss, 0.1)),
        "final_loss_q90": float(np.quantile(loss, 0.9)),
    }


def run_overlapping_tasks(config: OverlappingTasksConfig, out_dir, *, progress=None, on_chunk=None):
    """Run (or resume) into `out_dir`: the sweep stores `sweeps/H{h}`, `records_H{h}.npz`,
    `summary.json`, `overlapping_tasks.png`."""

    out_dir = pathlib.Path(out_dir)
    claim_run_directory(out_dir, config.as_dict())
    task = overlapping_two_task(sigma2=config.noise_var, context_len=config.context_len)
    eval_key = jr.fold_in(jr.key(config.seed), 10_000)
    summary = {"config": config.as_dict(), "groups": {}}
    results = {}
    for n_heads in config.heads:
        models, records = train_group(
            config, task, n_heads, out_dir, progress=progress, on_chunk=on_chunk
        )
        stats = _split_statistics(
            *jax.vmap(lambda m: own_semi_singular_values(m, task.blocks))(models)
        )
        at_once = evaluation_members(config, n_heads, config.context_len)
        losses = population_losses(models, task, config.eval_prompts, eval_key, at_once)
        loss = np.asarray(losses[0])
        results[n_heads] = dict(records, final_loss=loss, **stats)
        np.savez(out_dir / f"records_H{n_heads}.npz", **results[n_heads])
        diverged = records["diverged"][:, -1]
        summary["groups"][str(n_heads)] = group_summary(stats, loss, diverged)
    save_json(out_dir / "summary.json", summary)
    plot_overlapping_tasks(results, summary, out_dir / "overlapping_tasks.png")
    return summary


def format_overlapping_summary(summary: dict) -> str:
    lines = [
        "heads  members  split (own ± pair per task)  mixed live heads  purity median  "
        "final loss median [10%, 90%]"
    ]
    for h, g in summary["groups"].items():
        if not g["members"]:
            lines.append(f"{h:>5}  every member diverged ({g['diverged']})")
            continue
        lines.append(
            f"{h:>5}  {g['members']:>7}  {g['split_rate']:14.0%} ± {g['split_stderr']:.0%}"
            f"       {g['mixed_head_fraction']:15.0%}  {g['purity_median']:13.3f}  "
            f"{g['final_loss_median']:.4f} [{g['final_loss_q10']:.4f}, {g['final_loss_q90']:.4f}]"
            + (f"  [{g['diverged']} diverged, not counted]" if g["diverged"] else "")
        )
    return "\n".join(lines)


EXPERIMENT = Experiment(
    name="overlapping-tasks",
    config=OverlappingTasksConfig,
    run=run_overlapping_tasks,
    describe=format_overlapping_summary,
    studies=(AttentionRegression,),
)
