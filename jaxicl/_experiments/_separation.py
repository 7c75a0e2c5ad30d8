"""Single- vs multi-head separation for `task-allocation`: the full model's ratio, with the
reduced model's value and its large-L limit beside it.

For each L the full softmax model on the ansatz is run at its optimum in two fixed-sign
layouts (one head for every task, one head per task): ω on a grid around the reduced optimum,
μ by least squares, by Monte Carlo on common prompts (`layout_optimum_monte_carlo`), so the
ratio has a standard error. The reduced optimum (`optimal_allocation_losses`) and its limit
L → ∞ (`separation_limit`, a closed form) show how far the large-L theory is from the model
at each L.
"""

import jax.numpy as jnp
import jax.random as jr

from .._attention._ansatz_monte_carlo import layout_optimum_monte_carlo, ratio_with_stderr
from .._attention._reduced import optimal_allocation_losses
from .._attention._separation_limit import separation_limit


GRID = (0.6, 1.5, 13)  # ω from 0.6× to 1.5× the reduced optimum: the full model's is larger


def separation(config) -> dict:
    """Rows per L: the full model's optimal losses and ratio (± s.e.), the reduced ones."""
    rows = []
    for length in config.separation_lengths:
        reduced = optimal_allocation_losses(config.study.block_sizes, length)
        key = jr.fold_in(jr.key(config.seed), length)  # the same prompts for both layouts
        full = {}
        for layout, single_head, centre in (
            ("one-head-per-task", False, max(reduced.one_head_per_task_omega)),
            ("single-head", True, reduced.single_head_omega),
        ):
            grid = centre * jnp.linspace(*GRID[:2], GRID[2])
            full[layout] = layout_optimum_monte_carlo(
                single_head,
                grid,
                d=config.study.d,
                n_tasks=config.study.n_tasks,
                context_len=length,
                n_prompts=config.separation_prompts,
                key=key,
            )
        ratio, stderr = ratio_with_stderr(
            full["single-head"].per_prompt, full["one-head-per-task"].per_prompt
        )
        rows.append(
            {
                "context_len": length,
                "full_single_head": full["single-head"].loss,
                "full_one_head_per_task": full["one-head-per-task"].loss,
                "full_ratio": ratio,
                "full_ratio_stderr": stderr,
                "full_single_head_omega": full["single-head"].omega[0],
                "full_one_head_per_task_omega": list(full["one-head-per-task"].omega),
                "optimum_at_grid_edge": full["single-head"].at_edge
                or full["one-head-per-task"].at_edge,
                "reduced_single_head": reduced.single_head,
                "reduced_one_head_per_task": reduced.one_head_per_task,
                "reduced_ratio": reduced.single_head / reduced.one_head_per_task,
                "reduced_single_head_omega": reduced.single_head_omega,
                "reduced_one_head_per_task_omega": list(reduced.one_head_per_task_omega),
            }
        )
    return {
        "rows": rows,
        "reduced_limit": separation_limit(config.study.block_sizes),
        "prompts": config.separation_prompts,
    }
