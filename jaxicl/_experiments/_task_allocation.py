"""Experiment `task-allocation` (reduced dynamics): how often heads split the tasks, and when.

Multi-task regression over n disjoint blocks (Chen et al. 2024), integrated on the H×n
semi-singular values (Ω, M) of the decomposable ansatz for thousands of seeds per scheme,
under one reduced flow (`flow`): by default `weights`, the gradient flow of the attention
weights under the ICL loss (what training the model with plain SGD does; time is steps ×
learning rate), or `euclidean`, gradient flow of ℓ on (Ω, M) or its factors (preset
`euclidean-flow` sets steps and horizons that suit its faster clock). Init schemes:

- `balanced`: ω = s, μ = s (4s on head h's favoured task h mod n); factorized model.
  This init has no randomness, so the reduced flow integrates it once (one seed is its whole
  distribution).
- `random-positive`: ω, μ = s(1 + c U(0, 1)) entrywise (c = `init_spread`, 0.1 by default);
  balanced factorized model.
- `random-sign`: ω, μ = s N(0, 1) entrywise; merged model (signs free to change).
- `chen-code` (preset `chen-code`): the initialisation of the authors' public code.

The full softmax model against this reduced flow (and both flows' allocation rates against the
full model's) is the experiment `full-vs-reduced`.

Also: warm-up time against init scale (balanced init, both parametrizations) with the fitted
log-log slope, and the single- vs multi-head loss ratio against L at the optimum of strict
allocation. Integration is explicit Euler (SGD on the state) with per-parametrization steps
chosen stable; the tests show it is first order, so halving a step halves its error.
"""

import dataclasses
import math
import pathlib
from typing import ClassVar

import numpy as np

from .. import _validation as check
from .._attention._init_schemes import (
    INIT_SCHEMES,
    AbstractInitScheme,
    Balanced,
    Merged,
    RandomPositive,
    RandomPositiveCentre,
)
from .._host._checkpoint import claim_run_directory, save_json
from .._host._progress import progress_bar
from .._studies import ReducedAllocation
from .._sweeps._outcome import flag
from .._sweeps._runner import sweep
from ._experiment import Experiment, ExperimentConfig, setting
from ._layout_optima import layout_optima, loss_ratio
from ._separation import separation
from ._task_allocation_figure import plot_task_allocation


DEFAULT_SCHEMES = ("balanced", "random-positive", "random-sign")


# Named settings (`jaxicl run task-allocation --preset NAME`); other flags apply on top.
PRESETS = {
    # r = 5 blocks (d = 15), H = n = 3, L = 100, noiseless labels, random-positive spread
    # 1 + 0.1·U(0, 1): the smaller-block setting of the reference page's §5. The horizon
    # follows the warm-up.
    "d15-h3": dict(d=15, n_tasks=3, context_len=100, heads=(3,), init_spread=0.1, n_seeds=4096),
    # The authors' code (Chen et al., MS-Attn-Simulation, `AttentionNetwork.initialization`):
    # d = 50, n = H = 3, L = 100, Q = g s I and K = g' s I with one normal per head each, V, O
    # on the labels with s (2s on the head's task), s = L^(−3/4). Its warm-up is long and
    # spread (seeds leave it from t ≈ 500 to beyond 10⁴ under the weights' flow): fixed horizon.
    "chen-code": dict(
        d=50,
        n_tasks=3,
        context_len=100,
        heads=(3,),
        schemes=("chen-code",),
        init_scale=100**-0.75,
        horizon=20000.0,
        horizon_cap=20000.0,
        warmup_scales=(),
    ),
    # The Euclidean (Ω, M) flow, on its own clock: the steps and horizons of earlier releases.
    "euclidean-flow": dict(
        flow="euclidean",
        horizon=30.0,
        horizon_cap=400.0,
        horizon_merged=10.0,
        dt=0.005,
        dt_merged=0.0005,
    ),
}


# The factorized groups' study: every group sets its head count, scheme and (merged model,
# or a horizon the probes extended) its horizon and step.
STUDY = ReducedAllocation(
    d=50, n_tasks=3, context_len=100, init_scale=1e-3, horizon=50.0, dt=0.25, n_records=200
)


@dataclasses.dataclass(frozen=True)
class TaskAllocationConfig(ExperimentConfig):
    """Configuration of `task-allocation` (reduced dynamics); validated on construction.
    Its study's settings (`d`, `n_tasks`, `context_len`, `flow`, `init_scale`, `horizon`, `dt`,
    `n_records`) are flags of their own: `horizon` is the factorized model's shortest horizon
    (the probes may extend it, up to `horizon_cap`), `dt` its Euler step (for the weights'
    flow: the SGD learning rate)."""

    study: ReducedAllocation = setting(STUDY, "the factorized model's study")
    heads: tuple[int, ...] = setting((2, 3, 4), "head counts H, comma-separated")
    schemes: tuple[str, ...] = setting(
        DEFAULT_SCHEMES,
        "init schemes, comma-separated: balanced, random-positive, random-sign, chen-code",
    )
    n_seeds: int = setting(
        1024, "seeds per random init scheme and H (the balanced init is run once)"
    )
    init_spread: float = setting(0.1, "c in random-positive's ω, μ = s(1 + c·U(0, 1))")
    horizon_cap: float = setting(
        4000.0, "longest horizon: the factorized model runs 2.5× the probes' warm-up, at most this"
    )
    horizon_merged: float = setting(20.0, "horizon of the merged model (random-sign)")
    dt_merged: float = setting(0.005, "Euler step of the merged model")
    warmup_scales: tuple[float, ...] = setting(
        (3e-4, 1e-3, 3e-3, 1e-2), "init scales of the warm-up-against-scale panel, comma-separated"
    )
    separation_lengths: tuple[int, ...] = setting(
        (100, 400, 1600), "context lengths of the single- vs multi-head ratio"
    )
    separation_prompts: int = setting(8192, "Monte Carlo prompts of the full model's ratio")
    seed: int = setting(0, "root random seed, in [0, 2**63)")

    varied: ClassVar[tuple[str, ...]] = ("heads", "scheme", "history")

    def __post_init__(self):
        self.check_studies()
        for name in ("n_seeds", "separation_prompts"):
            check.positive_int(name, getattr(self, name))
        check.seed("seed", self.seed)
        for name in ("horizon_cap", "horizon_merged", "dt_merged"):
            check.finite_positive(name, getattr(self, name))
        if not self.heads or not self.schemes or not self.separation_lengths:
            raise ValueError("`heads`, `schemes` and `separation_lengths` must be non-empty.")
        for h in self.heads:
            check.positive_int("heads", h)
        for scheme in self.schemes:
            check.one_of("schemes", scheme, INIT_SCHEMES)
        for name in ("heads", "schemes", "warmup_scales", "separation_lengths"):
            check.distinct(name, getattr(self, name))
        check.finite_nonnegative("init_spread", self.init_spread)
        if self.horizon_cap < self.study.horizon:
            raise ValueError(
                f"`horizon_cap` must be at least `horizon` ({self.study.horizon}), got "
                f"{self.horizon_cap}."
            )
        for s in self.warmup_scales:
            check.finite_positive("warmup_scales", s)
        for length in self.separation_lengths:
            check.positive_int("separation_lengths", length)
        check.whole_record_blocks(
            "`horizon_merged` / `dt_merged`",
            self.horizon_merged / self.dt_merged,
            self.study.n_records,
            "`n_records`",
        )


def init_scheme(config, name: str) -> AbstractInitScheme:
    """The scheme called `name`, with this configuration's random-positive spread."""
    return RandomPositive(config.init_spread) if name == "random-positive" else INIT_SCHEMES[name]


def _warmup_end(config, scheme, scale, dt, horizon, store, progress) -> tuple[float, bool]:
    """The warm-up end of one deterministic start (a probe of the horizon or a point of the
    warm-up scan, H = n), and whether it diverged (then the end is NaN, as for a start still in
    warm-up: the flag tells them apart). Run through the sweep runner like every other member:
    resumable in `store` (None: in memory), keyed by the run's seed (the reduced flows draw no
    data)."""
    study = dataclasses.replace(
        config.study,
        heads=config.study.n_tasks,
        scheme=scheme,
        init_scale=scale,
        horizon=horizon,
        dt=dt,
    )
    result = sweep(
        study, seeds=1, store=store, root_seed=config.seed, members_per_call=1, progress=progress
    )
    diverged = bool(flag(result["diverged"]).reshape(-1)[0])
    return float(result["warmup_end"].values.reshape(-1)[0]), diverged


def _probe_store(out_dir, name):
    return None if out_dir is None else pathlib.Path(out_dir) / "sweeps" / name


def _on_grid(config, horizon: float, dt: float) -> float:
    """`horizon` rounded up to a whole number of record blocks of step `dt`."""
    block = dt * config.study.n_records
    return math.ceil(horizon / block - 1e-9) * block


def factorized_horizon(config, out_dir=None, *, progress=None) -> float:
    """Horizon of the balanced factorized flow's groups: at least `horizon`, and 2.5 times the
    warm-up end of the slower of two deterministic probes (the balanced init, and the symmetric
    start ω = μ = s(1 + c/2) at the centre of random-positive's law), so that seeds leave
    their plateau and settle; at most `horizon_cap`. Warm-up ∝ 1/s and grows as r shrinks, so
    no fixed horizon fits every d (at d = 15 it ends near t ≈ 50 from s = 1e-3). The probes
    stream into `out_dir/sweeps/probe-*` when `out_dir` is given."""
    probes = {"balanced": Balanced(), "centre": RandomPositiveCentre(config.init_spread)}
    cap = _on_grid(config, config.horizon_cap, config.study.dt)
    ends = [
        _warmup_end(
            config,
            scheme,
            config.study.init_scale,
            config.study.dt,
            cap,
            _probe_store(out_dir, f"probe-{name}"),
            progress,
        )
        for name, scheme in probes.items()
    ]
    ends = [end for end, _ in ends]  # a diverged probe has no end: the cap, as in warm-up
    wanted = 2.5 * max(ends) if all(np.isfinite(ends)) else cap
    return min(cap, _on_grid(config, max(config.study.horizon, wanted), config.study.dt))


# Whole (Ω, M) histories only for a few example seeds: they are large.
EXAMPLE_SEEDS = 8


# what to raise when a parametrization's seeds are still in warm-up at its horizon
_HORIZON_FLAGS = {"factorized": "`--horizon` (and `--horizon-cap`)", "merged": "`--horizon-merged`"}


def _parametrization(scheme: str) -> str:
    """The merged model for schemes whose signs must be free to change (its own step and
    horizon), else the factorized one."""
    return "merged" if INIT_SCHEMES[scheme].merged else "factorized"


def _scheme_study(config, scheme: str, horizon: float, heads: int, **changes) -> ReducedAllocation:
    """One scheme's members: a merged-model scheme on the merged step and horizon."""
    merged = _parametrization(scheme) == "merged"
    return dataclasses.replace(
        config.study,
        heads=heads,
        scheme=init_scheme(config, scheme),
        horizon=config.horizon_merged if merged else horizon,
        dt=config.dt_merged if merged else config.study.dt,
        **changes,
    )


def _scheme_sweeps(config, scheme: str, horizon: float, out_dir, *, progress, on_chunk) -> dict:
    """A scheme's groups: one sweep over the head counts × seeds (each member's summaries),
    and per head count a sweep of the first example seeds with their whole (Ω, M) histories
    (the same members: seed s starts from the same key in both). Both stream into stores under
    `out_dir/sweeps/`, so an interrupted run resumes inside a group."""
    seeds = 1 if INIT_SCHEMES[scheme].deterministic else config.n_seeds
    run = dict(root_seed=config.seed, progress=progress, on_chunk=on_chunk)
    members = sweep(
        _scheme_study(config, scheme, horizon, config.heads[0]),
        grid={"heads": list(config.heads)},
        seeds=seeds,
        store=out_dir / "sweeps" / scheme,
        members_per_call=seeds,
        **run,
    )
    groups = {}
    for n_heads in config.heads:
        examples = min(EXAMPLE_SEEDS, seeds)
        history = sweep(
            _scheme_study(config, scheme, horizon, n_heads, history=True),
            seeds=examples,
            store=out_dir / "sweeps" / f"{scheme}-H{n_heads}-examples",
            members_per_call=examples,
            **run,
        )
        groups[(scheme, n_heads)] = _group_arrays(members.sel(heads=n_heads), history)
    return groups


def _group_arrays(members, history) -> dict:
    """A group's per-seed arrays, as `groups.npz` holds them (flags as booleans: a member
    without an outcome, NaN in the store, is neither a success nor a stall)."""
    return {
        "time": members["time"].values,
        "loss": members["loss"].values,
        "omega_t": history["omega"].values,
        "mu_t": history["mu"].values,
        **{name: flag(members[name]) for name in ("success", "stalled", "diverged")},
        # `stopped` is stored only under a stop rule (`--stop-tol`)
        "stopped": flag(members["stopped"])
        if "stopped" in members
        else np.zeros_like(flag(members["success"])),
        **{name: flag(members[name]) for name in ("left_warmup", "settled")},
        **{name: members[name].values for name in ("warmup_end", "emergence_end", "convergence")},
    }


def warmup_scaling(config, horizon, out_dir=None, *, progress=None) -> dict:
    """Warm-up end against init scale for the balanced init (H = n), both parametrizations,
    with the least-squares slope of log(warm-up) on log(scale) over the scales whose run left
    warm-up. The factorized horizon grows ∝ 1/scale below `init_scale` (up to the cap). Each
    run streams into `out_dir/sweeps/warmup-*` when `out_dir` is given."""
    out = {}
    if not config.warmup_scales:
        return out
    # The merged model leaves the plateau at a rate that does not shrink with s (warm-up
    # ~ log(1/s)): its horizon, with a 10× smaller step.
    for flow in ("factorized", "merged"):
        times, diverged = [], []
        for scale in config.warmup_scales:
            if flow == "merged":
                scheme, dt = Merged(Balanced()), config.dt_merged / 10
                length = config.horizon_merged
            else:
                scheme, dt = Balanced(), config.study.dt
                stretched = horizon * max(1.0, config.study.init_scale / scale)
                length = min(
                    _on_grid(config, stretched, dt), _on_grid(config, config.horizon_cap, dt)
                )
            store = _probe_store(out_dir, f"warmup-{flow}-{scale:g}")
            end, lost = _warmup_end(config, scheme, scale, dt, length, store, progress)
            times.append(end)
            diverged.append(lost)
        times, diverged = np.asarray(times), np.asarray(diverged)
        finite = np.isfinite(times)
        slope = (
            np.polyfit(np.log(np.asarray(config.warmup_scales)[finite]), np.log(times[finite]), 1)[
                0
            ]
            if finite.sum() >= 2
            else float("nan")
        )
        out[flow] = {
            "scales": list(config.warmup_scales),
            "warmup_end": times.tolist(),
            "still_in_warmup": int((~finite & ~diverged).sum()),
            "diverged": int(diverged.sum()),
            "loglog_slope": float(slope),
        }
    return out


def run_task_allocation(config: TaskAllocationConfig, out_dir, *, progress=None, on_chunk=None):
    """Run (or resume) the experiment into `out_dir`: `groups.npz`, `summary.json`,
    `task_allocation.png`. The groups stream into sweep stores under `sweeps/`, so an
    interrupted run resumes at the first step chunk it had not stored. `on_chunk(unit, chunk)`
    is called after each stored step chunk of every sweep."""

    out_dir = pathlib.Path(out_dir)
    claim_run_directory(out_dir, config.as_dict())
    # Seeds as the unit: the rate and ETA are in member terms; the stage is the postfix.
    # the deterministic probes, the warm-up scan and the separation: one bar of stages; each
    # scheme's sweeps show their own member-step bars
    bar = progress_bar(4, description="task-allocation", unit="stage", enabled=progress)
    bar.set_postfix_str("horizon from deterministic probes")
    horizon = factorized_horizon(config, out_dir, progress=progress)
    bar.update(1)
    groups = {}
    for scheme in config.schemes:
        groups.update(
            _scheme_sweeps(config, scheme, horizon, out_dir, progress=progress, on_chunk=on_chunk)
        )
    bar.set_postfix_str("warm-up against init scale")
    scaling = warmup_scaling(config, horizon, out_dir, progress=progress)
    bar.update(1)
    bar.set_postfix_str("separation ratio (Monte Carlo of the full model)")
    separation_rows = separation(config)
    bar.update(1)
    bar.set_postfix_str("best multi-head models (every layout and sign)")
    optima = layout_optima(config)
    bar.update(1)
    bar.close()
    summary = {
        "config": config.as_dict(),
        "horizon_used": horizon,
        "groups": {},
        "warmup_scaling": scaling,
        "separation": separation_rows,
        "optima": {f"H{h}": v for h, v in optima.items()},
    }
    arrays = {}
    for (scheme, n_heads), g in groups.items():
        integrated_to = _scheme_study(config, scheme, horizon, n_heads).horizon
        summary["groups"][f"{scheme}/H{n_heads}"] = {
            **_group_summary(g),
            "loss_over_optimum": loss_ratio(
                g["loss"][:, -1],
                g["settled"] & ~g["diverged"],
                optima[n_heads]["reduced"],
                config.study.n_tasks,
                config.study.flow.name,
            ),
            "parametrization": _parametrization(scheme),
            "horizon": integrated_to,
        }
        arrays.update({f"{scheme}/H{n_heads}/{k}": v for k, v in g.items()})
    np.savez(out_dir / "groups.npz", **arrays)
    save_json(out_dir / "summary.json", summary)
    plot_task_allocation(groups, summary, config, out_dir / "task_allocation.png")
    return summary


def _nanmedian(values) -> float:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else float("nan")


def _group_summary(g) -> dict:
    """Counts first: a seed still in warm-up has no phase times and no allocation outcome, so
    while any is, the group has no success rate (None) and the table says why. A diverged seed
    is counted as such and has no outcome either; the rate is over the healthy seeds."""
    healthy = ~g["diverged"]
    n = int(healthy.sum())
    waiting = int((healthy & ~g["left_warmup"]).sum())
    rate = float(g["success"][healthy].mean()) if n and waiting == 0 else None
    failures = int((healthy & ~g["success"]).sum())
    stalled = int((healthy & g["stalled"]).sum())
    return {
        "seeds": int(g["success"].size),
        "still_in_warmup": waiting,
        "not_settled": int((healthy & g["left_warmup"] & ~g["settled"]).sum()),
        "success_rate": rate,
        "success_stderr": None if rate is None else math.sqrt(rate * (1 - rate) / n),
        # while seeds wait, only bounds: every waiting seed failing, or every one allocating
        "success_bounds": None
        if rate is not None or not n
        else [
            float((healthy & g["left_warmup"] & g["success"]).sum() / n),
            float(((healthy & g["left_warmup"] & g["success"]).sum() + waiting) / n),
        ],
        "stalled": stalled if rate is not None else None,
        "other_failures": failures - stalled if rate is not None else None,
        "diverged": int(g["diverged"].sum()),
        "stopped": int(g["stopped"].sum()) if "stopped" in g else 0,
        "final_loss_median": _nanmedian(np.where(healthy, g["loss"][:, -1], np.nan)),
        "warmup_end_median": _nanmedian(g["warmup_end"]),
        "emergence_end_median": _nanmedian(g["emergence_end"]),
        "convergence_median": _nanmedian(g["convergence"]),
    }


_FLOW_TEXT = {
    "weights": "weights' gradient flow (plain SGD on the attention weights; time = steps × lr)",
    "euclidean": "Euclidean gradient flow of ℓ on (Ω, M) (its own clock)",
}


def _time(value: float) -> str:
    return "     —" if not np.isfinite(value) else f"{value:6.2f}"


def format_allocation_summary(summary: dict) -> str:
    config = summary["config"]
    lines = [
        f"d = {config['d']} in {config['n_tasks']} blocks, L = {config['context_len']}, init scale "
        f"{config['init_scale']:g}, random-positive spread 1 + {config['init_spread']:g}·U(0, 1); "
        f"{_FLOW_TEXT[config['flow']]}; factorized model integrated to t = "
        f"{summary['horizon_used']:g}",
        "scheme/H              seeds  allocated (±1 s.e.)  stalled  in warm-up  moving  "
        "diverged  final loss  warm-up  emergence  converged (medians over seeds that got there)",
    ]
    waiting = []
    for name, g in summary["groups"].items():
        if g["success_rate"] is None:
            bounds = g.get("success_bounds")
            allocated = "        n/a         "
            if bounds is not None:
                allocated = f"in [{bounds[0]:.1%}, {bounds[1]:.1%}]".ljust(20)
            stalled = "    n/a"
            if g["still_in_warmup"]:
                waiting.append(name)
        else:
            allocated = f"{g['success_rate']:7.1%} ± {g['success_stderr']:.1%}    "
            stalled = f"{g['stalled']:7d}"
        loss = g["final_loss_median"]
        lines.append(
            f"{name:<20} {g['seeds']:>6}  {allocated} {stalled}  {g['still_in_warmup']:>10}  "
            f"{g['not_settled']:>6}  {g['diverged']:>8}  "
            f"{'—' if not np.isfinite(loss) else f'{loss:.3f}':>10}  "
            f"{_time(g['warmup_end_median'])}  {_time(g['emergence_end_median']):>9}  "
            f"{_time(g['convergence_median']):>9}"
        )
    for flow, flags in _HORIZON_FLAGS.items():
        names = [name for name in waiting if summary["groups"][name]["parametrization"] == flow]
        if names:
            horizon = summary["groups"][names[0]]["horizon"]  # one per flow
            lines.append(
                f"no allocation rate for {', '.join(names)}: seeds still in warm-up at the "
                f"horizon (t = {horizon:g}), only bounds (each waiting seed failing, or "
                f"allocating); raise {flags}."
            )
    lines.append(
        "stalled: not allocated, with a dead head and a live head split between tasks; moving: "
        "left warm-up but not settled at the horizon; a diverged seed has no outcome, phase or "
        "loss (rates are over the others)"
    )
    stopped = [f"{name} {g['stopped']}" for name, g in summary["groups"].items() if g["stopped"]]
    if stopped:
        lines.append(
            f"stopped at a strict minimum with under {config['stop_tol']:g} of the loss left to "
            f"gain (--stop-tol; records hold the state from there): {', '.join(stopped)}"
        )
    for flow, w in summary["warmup_scaling"].items():
        counts = [(w["still_in_warmup"], "still in warm-up"), (w.get("diverged", 0), "diverged")]
        note = "".join(f" ({n} scales {what})" for n, what in counts if n)
        lines.append(
            f"warm-up vs init scale ({flow} model): log-log slope {w['loglog_slope']:.2f}{note}"
        )
    sep = summary["separation"]
    lines.append(
        "single- vs multi-head loss ratio at the optimum (fixed signs), full model by Monte Carlo "
        f"({sep['prompts']} prompts) vs reduced ℓ:"
    )
    for r in sep["rows"]:
        edge = "  (optimum at the ω grid's edge)" if r["optimum_at_grid_edge"] else ""
        lines.append(
            f"  L = {r['context_len']:>5}: full model {r['full_ratio']:.2f} ± "
            f"{r['full_ratio_stderr']:.2f}, reduced {r['reduced_ratio']:.2f}{edge}"
        )
    lines.append(f"  reduced, L → ∞: {sep['reduced_limit']:.2f}")
    lines += _optimality_lines(summary)
    return "\n".join(lines)


def _optimality_lines(summary) -> list[str]:
    """Converged loss over the best multi-head model of the same H (every layout and sign)."""
    lines = [
        "converged loss / best H-head model (every layout and sign, reduced ℓ; median and "
        "10–90% over settled seeds); the full model's loss at that optimum by Monte Carlo:"
    ]
    for name, g in summary["groups"].items():
        heads = name.rsplit("/H", 1)[1]
        best = summary["optima"][f"H{heads}"]
        ratio = g["loss_over_optimum"]
        text = (
            "no settled seed"
            if ratio is None
            else f"{ratio['median']:.2f} [{ratio['q10']:.2f}, {ratio['q90']:.2f}]"
        )
        lines.append(
            f"  {name:<20} {text:<22} optimum ℓ {best['reduced']:.3f} (found by "
            f"{best['found_by']}/{best['restarts']} restarts, {best['untrusted']} discarded "
            "where ℓ is not trusted; full model there "
            f"{best['full_model']:.3f} ± {best['full_model_stderr']:.3f})"
        )
    return lines


EXPERIMENT = Experiment(
    name="task-allocation",
    config=TaskAllocationConfig,
    run=run_task_allocation,
    describe=format_allocation_summary,
    studies=(ReducedAllocation,),
    presets=PRESETS,
)
