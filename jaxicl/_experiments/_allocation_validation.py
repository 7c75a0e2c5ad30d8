"""Allocation rates of the full model against both reduced flows, for `full-vs-reduced`.

At a size the full model can afford (default d = 6 in 3 blocks, L = 40, H = 3), the same
random-positive inits run three ways: the full softmax model (all weights, `alloc_batch_size`
fresh prompts per member and step, plain SGD with one learning rate), the reduced flow of the
weights' gradient flow on the same clock and horizon, and the Euclidean (Ω, M) flow on its own
clock, integrated until it settles. Each member's data are its own (no shared stream), so the
full model's allocation outcomes are independent and its rate has a binomial standard error.
A rate is given only when every healthy member has left warm-up; diverged members are counted
and excluded.
"""

import dataclasses
import math

import numpy as np

from .._attention._init_schemes import AbstractInitScheme, Merged, RandomPositive
from .._attention._reduced_flows import EuclideanFlow
from .._studies._ansatz_dynamics import AnsatzDynamics, FullModel, ReducedFlow
from .._sweeps._outcome import flag
from .._sweeps._runner import sweep


# the command line's names of the two parametrizations of the random-positive start
PARAMETRIZATIONS = {"factorized": lambda scheme: scheme, "merged": Merged}


def random_positive_start(parametrization: str, spread: float) -> AbstractInitScheme:
    """The random-positive scheme of `spread`, in the parametrization named (the factorized
    one, or the merged one)."""
    return PARAMETRIZATIONS[parametrization](RandomPositive(spread))


# The full model's size where it affords many members: d = 6 in 3 blocks, L = 40; its steps
# and horizon on the weights' flow's clock.
ALLOCATION_STUDY = AnsatzDynamics(
    d=6, context_len=40, batch_size=256, init_scale=0.03, dt=0.2, horizon=200.0, n_records=50
)
# the allocation check's own settings: its start's spread, members, the Euclidean flow's clock
ALLOCATION_DEFAULTS = dict(init_spread=1.0, members=128, euclidean_horizon=40.0, euclidean_dt=0.01)


def _studies(config):
    base = dataclasses.replace(
        config.alloc,
        n_tasks=config.study.n_tasks,
        heads=config.study.heads,
        scheme=random_positive_start(config.parametrization, config.alloc_init_spread),
    )
    yield "reduced", dataclasses.replace(base, dynamics=ReducedFlow())
    euclidean = ReducedFlow(EuclideanFlow())
    yield (
        euclidean.name,
        dataclasses.replace(
            base,
            dynamics=euclidean,
            dt=config.alloc_euclidean_dt,
            horizon=config.alloc_euclidean_horizon,
        ),
    )
    yield "full", dataclasses.replace(base, dynamics=FullModel())


def _outcomes(dataset) -> dict:
    """Per member (the study's summaries): allocated at the end, left warm-up, diverged."""
    per_seed = lambda name: dataset[name].transpose("seed", ...).values.reshape(-1)  # noqa: E731
    return {
        "success": flag(per_seed("success")),
        "left_warmup": flag(per_seed("left_warmup")),
        "warmup_end": per_seed("warmup_end"),
        "diverged": flag(per_seed("diverged")),
    }


def _rate(outcome: dict) -> dict:
    healthy = ~outcome["diverged"]
    n = int(healthy.sum())
    waiting = int((healthy & ~outcome["left_warmup"]).sum())
    rate = float(outcome["success"][healthy].mean()) if n and not waiting else None
    warm = outcome["warmup_end"][healthy & outcome["left_warmup"]]
    return {
        "members": int(outcome["success"].size),
        "diverged": int(outcome["diverged"].sum()),
        "still_in_warmup": waiting,
        "rate": rate,
        "stderr": None if rate is None else math.sqrt(rate * (1 - rate) / n),
        "warmup_end_median": float(np.median(warm)) if warm.size else None,
    }


def allocation_validation(config, out_dir, *, progress=None) -> tuple[dict, dict]:
    """The three sweeps (streamed into `out_dir/sweeps/alloc-*`, resumable) and their rates:
    (summary, per-member outcomes by dynamics)."""
    outcomes = {}
    for name, study in _studies(config):
        dataset = sweep(
            study,
            seeds=config.alloc_members,
            store=out_dir / "sweeps" / f"alloc-{name}",
            root_seed=config.seed,
            members_per_call=config.alloc_members,
            progress=progress,
        ).load()
        outcomes[name] = _outcomes(dataset)
    rows = {name: _rate(outcome) for name, outcome in outcomes.items()}
    full, reduced = outcomes["full"], outcomes["reduced"]
    both = ~full["diverged"] & ~reduced["diverged"]
    summary = {
        "rows": rows,
        # the same inits: how often the full model and the weights' reduced flow agree
        "agreement_with_reduced": float((full["success"] == reduced["success"])[both].mean())
        if both.any()
        else None,
        # the discordant members, by direction: a one-sided split is a bias, not noise
        "only_full_allocates": int((full["success"] & ~reduced["success"])[both].sum()),
        "only_reduced_allocates": int((~full["success"] & reduced["success"])[both].sum()),
        "settings": {
            "d": config.alloc.d,
            "context_len": config.alloc.context_len,
            "heads": config.study.heads,
            "init_scale": config.alloc.init_scale,
            "init_spread": config.alloc_init_spread,
            "batch": config.alloc.batch_size,
            "learning_rate": config.alloc.dt,
            "horizon": config.alloc.horizon,
            "euclidean_dt": config.alloc_euclidean_dt,
            "euclidean_horizon": config.alloc_euclidean_horizon,
        },
    }
    return summary, outcomes


def _percent(row) -> str:
    if row["rate"] is None:
        return f"n/a ({row['still_in_warmup']} in warm-up)"
    return f"{row['rate']:.1%} ± {row['stderr']:.1%}"


def format_allocation_validation(summary: dict) -> list[str]:
    s, rows = summary["settings"], summary["rows"]
    lines = [
        f"allocation rates from the same {rows['full']['members']} random-positive inits "
        f"(d = {s['d']}, L = {s['context_len']}, H = {s['heads']}, s = {s['init_scale']:g}, "
        f"spread {s['init_spread']:g}; ± 1 binomial s.e.):",
        f"  full model (plain SGD, lr {s['learning_rate']:g}, {s['batch']} prompts a step, "
        f"t = {s['horizon']:g})   {_percent(rows['full'])}",
        f"  reduced, weights' gradient flow (same clock, t = {s['horizon']:g})   "
        f"{_percent(rows['reduced'])}",
        f"  reduced, Euclidean (Ω, M) flow (own clock, t = {s['euclidean_horizon']:g})   "
        f"{_percent(rows['reduced-euclidean'])}",
    ]
    if summary["agreement_with_reduced"] is not None:
        lines.append(
            "  same outcome, full model and weights' reduced flow, member by member: "
            f"{summary['agreement_with_reduced']:.1%} (only the full model allocates: "
            f"{summary['only_full_allocates']}, only the reduced flow: "
            f"{summary['only_reduced_allocates']})"
        )
    for name, row in rows.items():
        if row["diverged"]:
            lines.append(f"  {name}: {row['diverged']} diverged (excluded)")
    return lines
