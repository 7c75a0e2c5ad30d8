"""Experiment `full-vs-reduced`: what separates the full softmax model from the reduced flow.

From the same decomposable init (random-positive: ω, μ = s(1 + c U(0, 1)), a few seeds), four
dynamics run on the reduced flow's clock over the same horizon, for each context length L:

1. the reduced flow: explicit Euler on ℓ(Ω, M), the large-L expansion to first order in 1/L;
2. the exact finite-L flow on the ansatz: SGD on (Ω, M) with the full model's own loss on the
   ansatz (`AnsatzICLLoss` with control variates: unbiased, small fluctuations), no expansion;
3. the same on the ansatz with the full model's batch B and no control variates: the full
   model's sampling noise along the ansatz, no weight off it;
4. the full model (all weights, B sampled prompts a step, `reduced_time_scales`).

So the gap (4)–(1) splits into (2)–(1), the expansion error, which does not depend on B and
shrinks with L, and (4)–(2), sampling noise (and whatever leaves the ansatz), which shrinks
like 1/√B; (3)–(2) beside (4)–(2) tells how much of the latter stays on the ansatz.
Each unit (L, dynamics, B) is stored when done, so an interrupted run resumes.
"""

import dataclasses
import pathlib

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .. import _validation as check
from .._attention._analysis import detect_phases, task_allocation
from .._attention._ansatz_monte_carlo import AnsatzICLLoss, ansatz_monte_carlo_loss
from .._attention._decomposable import decomposable_attention, reduced_time_scales
from .._attention._init_schemes import RandomPositive
from .._attention._observables import semi_singular_values
from .._attention._reduced import MergedSpectral, ReducedLoss
from .._host._checkpoint import cached_arrays, claim_run_directory, save_json
from .._host._progress import progress_bar
from .._tasks._regression import MultiTaskRegression, disjoint_blocks
from .._train._objectives import ICLLoss, monte_carlo_loss
from .._train._trainer import preconditioned_sgd, sgd, train_ensemble
from ._full_vs_reduced_figure import plot_full_vs_reduced


FLOWS = ("factorized", "merged")
DYNAMICS = ("reduced", "exact", "ansatz", "full")


@dataclasses.dataclass(frozen=True)
class FullVsReducedConfig:
    """Configuration of `full-vs-reduced` (the full model against the reduced flow); validated
    on construction."""

    d: int = 15
    n_tasks: int = 3
    heads: int = 3
    context_lens: tuple[int, ...] = (100, 200)
    batches: tuple[int, ...] = (256, 1024)
    exact_batch: int = 1024
    n_seeds: int = 2
    init_scale: float = 0.03
    init_spread: float = 0.1
    flow: str = "factorized"
    horizon: float = 3.0
    dt: float = 0.01
    n_records: int = 30
    eval_prompts: int = 8192
    seed: int = 0

    def __post_init__(self):
        for name in ("d", "n_tasks", "heads", "exact_batch", "n_seeds", "n_records"):
            check.positive_int(name, getattr(self, name))
        check.positive_int("eval_prompts", self.eval_prompts)
        check.seed("seed", self.seed)
        disjoint_blocks(self.d, self.n_tasks)
        for name in ("context_lens", "batches"):
            values = getattr(self, name)
            if not values:
                raise ValueError(f"`{name}` must list at least one value, got ().")
            for v in values:
                check.positive_int(name, v)
            check.distinct(name, values)
        for name in ("init_scale", "horizon", "dt"):
            check.finite_positive(name, getattr(self, name))
        check.finite_nonnegative("init_spread", self.init_spread)
        check.one_of("flow", self.flow, FLOWS)
        check.whole_record_blocks(
            "`horizon` / `dt`", self.horizon / self.dt, self.n_records, "`n_records`"
        )

    @property
    def block_sizes(self) -> tuple[int, ...]:
        return tuple(b - a for a, b in disjoint_blocks(self.d, self.n_tasks))

    @property
    def steps(self) -> int:
        return round(self.horizon / self.dt)

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def _initial_states(config):
    """The seeds' initial states, stacked: balanced factorized or merged (Ω, M)."""
    keys = jr.split(jr.key(config.seed), config.n_seeds)
    init = RandomPositive(config.init_spread)
    make = lambda k: init(config.heads, config.n_tasks, config.init_scale, key=k)  # noqa: E731
    states = eqx.filter_vmap(make)(keys)
    if config.flow == "merged":
        states = MergedSpectral(*jax.vmap(lambda s: s.spectral())(states))
    return states


def _schedule(config, key):
    return dict(steps=config.steps, record_every=config.steps // config.n_records, key=key)


def _arrays(traj, loss, final_loss, *, window=1):
    """One run's stored arrays; (Ω, M) are the trajectory's observables."""
    phases = jax.vmap(lambda t, l: detect_phases(t, l, window=window))(traj.time, loss)
    omega, mu = traj.observables
    return {
        "time": np.asarray(traj.time[0]),
        "loss": np.asarray(loss),
        "omega_t": np.asarray(omega),
        "mu_t": np.asarray(mu),
        "final_loss": np.asarray(final_loss),
        "success": np.asarray(jax.vmap(task_allocation)(omega[:, -1], mu[:, -1]).success),
        "left_warmup": np.asarray(phases.left_warmup),
        "warmup_end": np.asarray(phases.warmup_end),
        "emergence_end": np.asarray(phases.emergence_end),
        "diverged": np.asarray(traj.diverged[:, -1]),
    }


def _ansatz_final_loss(config, length, omega, mu):
    """The full model's loss at each final (Ω, M), by Monte Carlo on the ansatz."""
    estimate = ansatz_monte_carlo_loss(
        omega, mu, d=config.d, context_len=length, n_prompts=config.eval_prompts, key=jr.key(7)
    )
    return estimate.loss


def _run_on_ansatz(config, length, objective, key, *, window):
    states = _initial_states(config)
    final, traj = train_ensemble(
        states,
        objective,
        sgd(config.dt),
        observe=lambda s: s.spectral(),
        shared_data=False,
        **_schedule(config, key),
    )
    omega, mu = jax.vmap(lambda s: s.spectral())(final)
    return _arrays(
        traj,
        traj.loss,
        _ansatz_final_loss(config, length, omega, mu),
        window=window,
    )


def _reduced_unit(config, length):
    states = _initial_states(config)
    final, traj = train_ensemble(
        states,
        ReducedLoss(config.block_sizes, length),
        sgd(config.dt),
        observe=lambda s: s.spectral(),
        **_schedule(config, jr.key(0)),
    )
    return _arrays(traj, traj.loss, traj.loss[:, -1])


def _exact_unit(config, length):
    objective = AnsatzICLLoss(config.block_sizes, length, config.exact_batch, control_variates=True)
    return _run_on_ansatz(config, length, objective, jr.key(config.seed + 1), window=5)


def _ansatz_unit(config, length, batch):
    objective = AnsatzICLLoss(config.block_sizes, length, batch)
    return _run_on_ansatz(config, length, objective, jr.key(config.seed + 2), window=9)


def _full_unit(config, length, batch):
    blocks = disjoint_blocks(config.d, config.n_tasks)
    factorized = config.flow == "factorized"

    def build(state):
        return decomposable_attention(*state.spectral(), blocks, config.d, factorized=factorized)

    states = _initial_states(config)
    models = eqx.filter_vmap(build)(states)
    scales = reduced_time_scales(build(jax.tree.map(lambda x: x[0], states)), blocks)
    task = MultiTaskRegression(config.d, length, blocks)
    observe = lambda model: semi_singular_values(model, blocks)  # noqa: E731
    final, traj = train_ensemble(
        models,
        ICLLoss(task, batch),
        preconditioned_sgd(config.dt, scales),
        observe=observe,
        shared_data=False,
        **_schedule(config, jr.key(config.seed + 3)),
    )

    def population_loss(model):
        # The ICL loss averages the n outputs; ℓ sums them.
        mean, _ = monte_carlo_loss(model, task, config.eval_prompts, key=jr.key(7))
        return config.n_tasks * mean

    final_loss = jax.lax.map(population_loss, final)
    arrays = _arrays(traj, config.n_tasks * traj.loss, final_loss, window=9)
    off = jax.vmap(lambda m: _off_ansatz(m, blocks, config.d))(final)
    return dict(arrays, off_ansatz=np.asarray(off))


def _off_ansatz(model, blocks, d):
    """‖W − W_ansatz‖ / ‖W‖ of the merged weights (the part of W off the ansatz)."""
    merged = model.merged()
    on = decomposable_attention(*semi_singular_values(model, blocks), blocks, d)
    return jnp.linalg.norm(merged.W - on.W) / jnp.linalg.norm(merged.W)


def _units(config):
    """(file stem, dynamics, L, B, compute) for every unit, cheapest first."""
    for length in config.context_lens:
        yield (
            f"L{length}_reduced",
            "reduced",
            length,
            None,
            lambda l=length: _reduced_unit(config, l),
        )
        yield f"L{length}_exact", "exact", length, None, lambda l=length: _exact_unit(config, l)
        for batch in config.batches:
            for dynamics, unit in (("ansatz", _ansatz_unit), ("full", _full_unit)):
                yield (
                    f"L{length}_{dynamics}_B{batch}",
                    dynamics,
                    length,
                    batch,
                    lambda l=length, b=batch, u=unit: u(config, l, b),
                )


def trajectory_gap(a: dict, b: dict) -> np.ndarray:
    """Per seed: the largest deviation of Ω between two runs over the records relative to the
    largest |ω| of `b` (the reference), and the same for M; the larger of the two."""

    def relative(key):
        scale = np.abs(b[key]).max(axis=(1, 2, 3))
        return np.abs(a[key] - b[key]).max(axis=(1, 2, 3)) / scale

    return np.maximum(relative("omega_t"), relative("mu_t"))


def run_full_vs_reduced(config: FullVsReducedConfig, out_dir, *, progress=None):
    """Run (or resume) the experiment into `out_dir`: `units/` (one `.npz` per unit),
    `summary.json`, `full_vs_reduced.png`."""

    out_dir = pathlib.Path(out_dir)
    claim_run_directory(out_dir, config.as_dict())
    units = list(_units(config))
    bar = progress_bar(
        len(units),
        description="reduced, exact, ansatz and full-model runs",
        unit="run",
        enabled=progress,
    )
    runs = {}
    for stem, dynamics, length, batch, compute in units:
        bar.set_postfix_str(stem)
        runs[(dynamics, length, batch)] = cached_arrays(out_dir / "units" / f"{stem}.npz", compute)
        bar.update(1)
    bar.close()
    summary = summarize(config, runs)
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
        "still_in_warmup": int((~run["left_warmup"]).sum()),
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
        f"{config['flow']} flow from random-positive s = {config['init_scale']:g}, "
        f"{config['n_seeds']} seeds, t ≤ {config['horizon']:g}; medians over seeds",
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
    return "\n".join(lines)
