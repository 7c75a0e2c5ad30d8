"""Experiment `full-vs-reduced`: what separates the full softmax model from the reduced flow.

From the same decomposable init (random-positive: ω, μ = s(1 + c U(0, 1)), a few seeds), four
dynamics run on one clock, the full model's (steps × learning rate of plain SGD), over the
same horizon, for each context length L:

1. the reduced flow of the weights' gradient flow (`WeightFlow`): explicit Euler on ℓ(Ω, M)/n,
   the large-L expansion to first order in 1/L, in the weights' ansatz coordinates;
2. the exact finite-L flow on the ansatz: SGD on the same coordinates with the full model's own
   loss on the ansatz (`AnsatzICLLoss` with control variates: unbiased, small fluctuations), no
   expansion;
3. the same on the ansatz with the full model's batch B and no control variates: the full
   model's sampling noise along the ansatz, no weight off it;
4. the full model (all weights, B sampled prompts a step, plain SGD with one learning rate).

Nothing is rescaled: every loss is the ICL loss (averaged over the n outputs) and one `dt` is
one SGD step of the full model.

So the gap (4)–(1) splits into (2)–(1), the expansion error, which does not depend on B and
shrinks with L, and (4)–(2), sampling noise (and whatever leaves the ansatz), which shrinks
like 1/√B; (3)–(2) beside (4)–(2) tells how much of the latter stays on the ansatz.
Each dynamics is a sweep of the `AnsatzDynamics` study over L (and B), streamed into a store,
so an interrupted run resumes.

Then the allocation rates (`_allocation_validation.py`): at a small size, the full model's
rate with its binomial standard error beside both reduced flows' rates from the same inits.
"""

import dataclasses
import pathlib
from typing import ClassVar

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .. import _validation as check
from .._attention._ansatz_monte_carlo import ansatz_monte_carlo_loss
from .._attention._decomposable import decomposable_attention
from .._attention._models import MergedAttention
from .._host._checkpoint import claim_run_directory, save_json
from .._studies._ansatz_dynamics import DYNAMICS as VARIANTS, AnsatzDynamics
from .._sweeps._outcome import flag
from .._sweeps._runner import sweep
from .._tasks._regression import MultiTaskRegression, disjoint_blocks
from .._train._objectives import monte_carlo_loss
from ._allocation_validation import (
    ALLOCATION_DEFAULTS,
    ALLOCATION_STUDY,
    PARAMETRIZATIONS,
    allocation_validation,
    format_allocation_validation,
    random_positive_start,
)
from ._experiment import Experiment, ExperimentConfig, setting
from ._full_vs_reduced_figure import plot_full_vs_reduced


# the main runs' study: each sweep sets its dynamics, context length, batch and start
STUDY = AnsatzDynamics(
    d=15, n_tasks=3, heads=3, init_scale=0.03, dt=0.25, horizon=50.0, n_records=40
)


@dataclasses.dataclass(frozen=True)
class FullVsReducedConfig(ExperimentConfig):
    """Configuration of `full-vs-reduced` (the full model against the reduced flow); validated
    on construction. The main runs' study settings (`d`, `n_tasks`, `heads`, `init_scale`,
    `dt`: the SGD learning rate of every dynamics, `horizon`: steps × learning rate, `n_records`)
    and the allocation check's (`alloc_d`, `alloc_context_len`, `alloc_batch_size`, …) are
    flags of their own."""

    study: AnsatzDynamics = setting(STUDY, "the main runs' study")
    alloc: AnsatzDynamics = setting(ALLOCATION_STUDY, "allocation check")
    context_lens: tuple[int, ...] = setting(
        (100, 200), "context lengths L, comma-separated (one set of runs each)"
    )
    batches: tuple[int, ...] = setting(
        (256, 1024), "prompts per step B of the full model and the sampled ansatz flow"
    )
    exact_batch: int = setting(1024, "prompts per step of the exact flow (with control variates)")
    n_seeds: int = setting(2, "random-positive inits, shared by all dynamics")
    init_spread: float = setting(0.1, "c in ω, μ = s(1 + c·U(0, 1))")
    parametrization: str = setting(
        "factorized", "factorized (Q, K, V, O from a balanced start) or merged (W, U)"
    )
    eval_prompts: int = setting(8192, "Monte Carlo prompts of each final loss")
    seed: int = setting(0, "root random seed, in [0, 2**63)")
    alloc_init_spread: float = setting(
        ALLOCATION_DEFAULTS["init_spread"], "allocation check: c in ω, μ = s(1 + c·U(0, 1))"
    )
    alloc_members: int = setting(
        ALLOCATION_DEFAULTS["members"], "allocation check: members (each its own prompts)"
    )
    alloc_euclidean_horizon: float = setting(
        ALLOCATION_DEFAULTS["euclidean_horizon"],
        "allocation check: horizon of the Euclidean flow (own clock)",
    )
    alloc_euclidean_dt: float = setting(
        ALLOCATION_DEFAULTS["euclidean_dt"], "allocation check: Euler step of the Euclidean flow"
    )

    # each sweep's dynamics, start, L and B; the allocation check's tasks and heads are the
    # main runs'
    varied: ClassVar[tuple[str, ...]] = (
        "dynamics",
        "context_len",
        "batch_size",
        "scheme",
        "alloc_dynamics",
        "alloc_scheme",
        "alloc_n_tasks",
        "alloc_heads",
    )

    def __post_init__(self):
        self.check_studies()
        for name in ("exact_batch", "n_seeds", "alloc_members", "eval_prompts"):
            check.positive_int(name, getattr(self, name))
        disjoint_blocks(self.alloc.d, self.study.n_tasks)
        for name in ("alloc_euclidean_horizon", "alloc_euclidean_dt"):
            check.finite_positive(name, getattr(self, name))
        check.finite_nonnegative("alloc_init_spread", self.alloc_init_spread)
        check.seed("seed", self.seed)
        for name in ("context_lens", "batches"):
            values = getattr(self, name)
            if not values:
                raise ValueError(f"`{name}` must list at least one value, got ().")
            for v in values:
                check.positive_int(name, v)
            check.distinct(name, values)
        check.finite_nonnegative("init_spread", self.init_spread)
        check.one_of("parametrization", self.parametrization, PARAMETRIZATIONS)
        check.whole_record_blocks(
            "`alloc_euclidean_horizon` / `alloc_euclidean_dt`",
            self.alloc_euclidean_horizon / self.alloc_euclidean_dt,
            self.alloc.n_records,
            "`alloc_n_records`",
        )

    @property
    def block_sizes(self) -> tuple[int, ...]:
        return self.study.block_sizes

    @property
    def steps(self) -> int:
        return round(self.study.horizon / self.study.dt)


def _sweeps(config):
    """(dynamics, study, grid) of the four sweeps, cheapest first; every sweep has the same
    seeds (so every dynamics starts from the same (Ω, M) at seed s)."""
    base = dataclasses.replace(
        config.study,
        context_len=config.context_lens[0],
        scheme=random_positive_start(config.parametrization, config.init_spread),
    )
    lengths = {"context_len": list(config.context_lens)}
    batches = dict(lengths, batch_size=list(config.batches))
    yield "reduced", dataclasses.replace(base, dynamics=VARIANTS["reduced"]), lengths
    exact = dataclasses.replace(base, dynamics=VARIANTS["exact"], batch_size=config.exact_batch)
    yield "exact", exact, lengths
    for dynamics in ("ansatz", "full"):
        yield dynamics, dataclasses.replace(base, dynamics=VARIANTS[dynamics]), batches


def _final_loss(config, dynamics, run, length):
    """Each seed's ICL loss (averaged over the n outputs) at the end: the reduced flow's own;
    the full model's on the ansatz by Monte Carlo for the (Ω, M) dynamics; the full model's
    population loss by Monte Carlo."""
    # the same evaluation prompts for every dynamics: paired comparisons
    key = jr.fold_in(jr.key(config.seed), 7)
    if dynamics == "reduced":
        return run["loss"][:, -1]
    if dynamics != "full":
        estimate = ansatz_monte_carlo_loss(
            jnp.asarray(run["omega_final"]),
            jnp.asarray(run["mu_final"]),
            d=config.study.d,
            context_len=length,
            n_prompts=config.eval_prompts,
            key=key,
        )
        return np.asarray(estimate.loss) / config.study.n_tasks  # ℓ sums the tasks
    task = MultiTaskRegression(
        config.study.d, length, disjoint_blocks(config.study.d, config.study.n_tasks)
    )

    def population_loss(weights):
        model = MergedAttention(W=weights[0], U=weights[1], kind="softmax")
        return monte_carlo_loss(model, task, config.eval_prompts, key=key)[0]

    return np.asarray(jax.lax.map(population_loss, (run["W"], run["U"])))


def _arrays(config, dynamics, dataset, length) -> dict:
    """One run's arrays (seeds first): records, phases, allocation, final loss."""
    run = {
        name: array.transpose("seed", ...).values
        for name, array in dataset.data_vars.items()
        if "seed" in array.dims
    }
    out = {
        "time": dataset["time"].values,
        "loss": run["loss"],
        "omega_t": run["omega"],
        "mu_t": run["mu"],
        "final_loss": _final_loss(config, dynamics, run, length),
        # the study's summaries: allocated at the end, phases (NaN where not reached)
        "success": flag(run["success"]),
        "left_warmup": flag(run["left_warmup"]),
        "warmup_end": run["warmup_end"],
        "emergence_end": run["emergence_end"],
        "diverged": flag(run["diverged"]),
    }
    if dynamics == "full":
        blocks = disjoint_blocks(config.study.d, config.study.n_tasks)
        out["off_ansatz"] = np.asarray(
            jax.vmap(lambda w, u, o, m: _off_ansatz(w, u, o, m, blocks, config.study.d))(
                run["W"], run["U"], run["omega_final"], run["mu_final"]
            )
        )
    return out


def _off_ansatz(W, U, omega, mu, blocks, d):
    """‖W − W_ansatz‖ / ‖W‖ of the merged weights (the part of W off the ansatz)."""
    on = decomposable_attention(omega, mu, blocks, d)
    return jnp.linalg.norm(W - on.W) / jnp.linalg.norm(W)


def trajectory_gap(a: dict, b: dict) -> np.ndarray:
    """Per seed: the largest deviation of Ω between two runs over the records relative to the
    largest |ω| of `b` (the reference), and the same for M; the larger of the two."""

    def relative(key):
        scale = np.abs(b[key]).max(axis=(1, 2, 3))
        return np.abs(a[key] - b[key]).max(axis=(1, 2, 3)) / scale

    return np.maximum(relative("omega_t"), relative("mu_t"))


def run_full_vs_reduced(config: FullVsReducedConfig, out_dir, *, progress=None):
    """Run (or resume) the experiment into `out_dir`: one sweep store per dynamics under
    `sweeps/` (streamed, so an interrupted run resumes inside a sweep), `summary.json`,
    `full_vs_reduced.png`."""

    out_dir = pathlib.Path(out_dir)
    claim_run_directory(out_dir, config.as_dict())
    runs = {}
    for dynamics, study, grid in _sweeps(config):
        dataset = sweep(
            study,
            grid=grid,
            seeds=config.n_seeds,
            store=out_dir / "sweeps" / dynamics,
            root_seed=config.seed,
            members_per_call=config.n_seeds,  # a few seeds: one call, no memory probe
            progress=progress,
        ).load()
        for length in config.context_lens:
            at_length = dataset.sel(context_len=length)
            for batch in config.batches if "batch_size" in grid else (None,):
                one = at_length if batch is None else at_length.sel(batch_size=batch)
                runs[(dynamics, length, batch)] = _arrays(config, dynamics, one, length)
    summary = summarize(config, runs)
    summary["allocation"], _ = allocation_validation(config, out_dir, progress=progress)
    save_json(out_dir / "summary.json", summary)
    plot_full_vs_reduced(runs, summary, config, out_dir / "full_vs_reduced.png")
    return summary


def _median(values) -> float | None:
    finite = np.asarray(values)[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else None


def _row(run, reduced, exact) -> dict:
    ok = ~run["diverged"]
    return {
        "seeds": int(run["diverged"].size),
        "diverged": int(run["diverged"].sum()),
        "still_in_warmup": int((ok & ~run["left_warmup"]).sum()),
        "gap_to_reduced": _median(trajectory_gap(run, reduced)[ok]),
        "gap_to_exact": _median(trajectory_gap(run, exact)[ok]),
        "final_loss": _median(run["final_loss"][ok]),
        "final_loss_gap_to_reduced": _median((run["final_loss"] - reduced["final_loss"])[ok]),
        "warmup_end": _median(run["warmup_end"]),
        "emergence_end": _median(run["emergence_end"]),
        "allocated": int(run["success"].sum()),
        **({"off_ansatz": _median(run["off_ansatz"][ok])} if "off_ansatz" in run else {}),
    }


def euler_stable(loss) -> bool:
    """Whether the reduced flow's loss (seeds × records) never rises: gradient flow only
    descends, so a rise means the explicit Euler step is too large for this d (at d = 50,
    dt = 0.01 oscillates where 0.005 does not)."""
    loss = np.asarray(loss)
    return bool(np.all(np.diff(loss, axis=1) <= 1e-4 * np.abs(loss[:, :1])))


def summarize(config, runs) -> dict:
    """Medians over seeds of each run's gaps, losses and phase times; None where no seed has
    the value (a diverged member or a phase not reached is counted, never given a number),
    and no gap to a reduced flow whose Euler steps were unstable."""
    rows, unstable = [], []
    for length in config.context_lens:
        reduced, exact = runs[("reduced", length, None)], runs[("exact", length, None)]
        stable = euler_stable(reduced["loss"])
        if not stable:
            unstable.append(length)
        for (dynamics, run_length, batch), run in runs.items():
            if run_length == length:
                row = {"context_len": length, "dynamics": dynamics, "batch": batch}
                row |= _row(run, reduced, exact)
                if not stable:
                    row.update(gap_to_reduced=None, final_loss_gap_to_reduced=None)
                rows.append(row)
    return {"config": config.as_dict(), "rows": rows, "euler_unstable_at": unstable}


def _number(value, fmt) -> str:
    return "—" if value is None else format(value, fmt)


def format_full_vs_reduced_summary(summary: dict) -> str:
    config = summary["config"]
    lines = [
        f"d = {config['d']} in {config['n_tasks']} blocks, H = {config['heads']}, "
        f"{config['parametrization']} model from random-positive s = {config['init_scale']:g}, "
        f"{config['n_seeds']} seeds, plain SGD clock (steps × {config['dt']:g}) to "
        f"t = {config['horizon']:g}; reduced = the weights' gradient flow; medians over seeds; "
        "losses are ICL losses (averaged over the outputs)",
        "gap = largest deviation of Ω (of M) over the run relative to the largest |ω| (|μ|); "
        "exact = the finite-L flow on the ansatz (no expansion, no sampling noise)",
        "   L  dynamics  batch  gap to reduced  gap to exact  final loss (Δ vs reduced)  "
        "warm-up  emergence  in warm-up  off-ansatz W",
    ]
    for r in summary["rows"]:
        batch = "—" if r["batch"] is None else str(r["batch"])
        off = _number(r.get("off_ansatz"), ".1%") if r["dynamics"] == "full" else ""
        lines.append(
            f"{r['context_len']:>5}  {r['dynamics']:<8} {batch:>6}  "
            f"{_number(r['gap_to_reduced'], '.3f'):>14}  {_number(r['gap_to_exact'], '.3f'):>12}  "
            f"{_number(r['final_loss'], '.3f'):>10} "
            f"({_number(r['final_loss_gap_to_reduced'], '+.3f')})"
            f"  {_number(r['warmup_end'], '.2f'):>7}  {_number(r['emergence_end'], '.2f'):>9}  "
            f"{r['still_in_warmup']:>10}  {off:>12}"
            + (f"  ({r['diverged']} diverged)" if r["diverged"] else "")
        )
    if summary["euler_unstable_at"]:
        lines.append(
            f"the reduced flow's loss rose at L = {summary['euler_unstable_at']} (explicit Euler "
            f"unstable at dt = {config['dt']:g}): no gap to it is given; lower `--dt`."
        )
    if "allocation" in summary:
        lines += format_allocation_validation(summary["allocation"])
    return "\n".join(lines)


EXPERIMENT = Experiment(
    name="full-vs-reduced",
    config=FullVsReducedConfig,
    run=run_full_vs_reduced,
    describe=format_full_vs_reduced_summary,
    studies=(AnsatzDynamics,),
)
