"""`task-allocation`'s optimality check: each group's converged loss against the best multi-head
model of its head count (every layout and sign, `best_layout_loss`), the reduced optimum with
the full model's loss at it by Monte Carlo beside it."""

import jax.random as jr
import numpy as np

from .._attention._ansatz_monte_carlo import ansatz_monte_carlo_loss
from .._attention._layout_optimum import best_layout_loss


def layout_optima(config) -> dict:
    """Per head count: the lowest reduced ℓ found (summed over tasks), the restarts that found
    it, and the full model's loss at that state (Monte Carlo, `separation_prompts` prompts)."""
    out = {}
    for n_heads in config.heads:
        key = jr.fold_in(jr.fold_in(jr.key(config.seed), 11), n_heads)
        best = best_layout_loss(
            config.study.block_sizes, config.study.context_len, n_heads, key=key
        )
        full = ansatz_monte_carlo_loss(
            best.omega,
            best.mu,
            d=config.study.d,
            context_len=config.study.context_len,
            n_prompts=config.separation_prompts,
            key=jr.fold_in(key, 1),
        )
        out[n_heads] = {
            "reduced": best.loss,
            "full_model": float(full.loss),
            "full_model_stderr": float(full.loss_stderr),
            "found_by": best.found_by,
            "untrusted": best.untrusted,
            "restarts": best.restarts,
        }
    return out


def loss_ratio(final_losses, settled, optimum: float, n_tasks: int, flow: str) -> dict | None:
    """The converged loss over the optimum, per seed that settled (the flow's loss is ℓ/n under
    the weights' flow): median and the 10–90% range over those seeds; None if none settled."""
    values = np.asarray(final_losses)[np.asarray(settled) & np.isfinite(final_losses)]
    if not values.size:
        return None
    ratio = values * (n_tasks if flow == "weights" else 1) / optimum
    return {
        "median": float(np.median(ratio)),
        "q10": float(np.quantile(ratio, 0.1)),
        "q90": float(np.quantile(ratio, 0.9)),
        "seeds": int(values.size),
    }
