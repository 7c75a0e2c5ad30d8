"""Experiment `feature-learning`: the mean-field particle solver on Kim & Suzuki's setting
(d = 20, k = 5, 500 sigmoid neurons; a teacher MLP of 10 neurons), four studies:

- `static` vs `attention`: the two-timescale flow (W = W_µ always) against W trained jointly at
  several learning-rate ratios, over an ensemble of seeds; with the success rate of reaching
  L < ε · L_c from generic inits (L_c = ½ E‖f° − E f°‖², the loss of constant features).
  The Euler step 0.02 keeps the flow's loss monotone in every seed: at 0.05 and 0.1 some seeds
  show short growing oscillations late in training (explicit-Euler instability).
- `saddle`: a symmetric init (all particles at one point: rank-1 features) under the noiseless
  flow, isotropic perturbations, isotropic perturbations + birth–death, and Hessian-guided
  perturbations.
- `mean-field`: L(t) for M = 50 … 1600 from the same initial law; the sup-distance to the
  largest M's mean curve against M on log-log axes, with the fitted rate.

All runs share one fixed training sample (a deterministic flow) and are recorded on a held-out
sample. Each finished group is stored, so an interrupted run resumes at the next group.
"""

import dataclasses
import pathlib

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .. import _validation as check
from .._host._checkpoint import cached_arrays, claim_run_directory, save_json
from .._host._progress import progress_bar
from .._meanfield._loss import with_optimal_attention
from .._meanfield._model import FeatureAttention, init_feature_attention
from .._meanfield._neurons import ACTIVATIONS, symmetric_measure
from .._meanfield._solver import particle_solver
from .._meanfield._task import INPUT_LAWS, feature_regression
from ._feature_learning_figure import plot_feature_learning
from ._feature_learning_summary import SADDLE_VARIANTS, summarize


@dataclasses.dataclass(frozen=True)
class FeatureLearningConfig:
    """Configuration of `feature-learning` (mean-field particle solver); validated on
    construction."""

    d: int = 20
    k: int = 5
    n_particles: int = 500
    activation: str = "sigmoid"
    teacher_neurons: int = 10
    teacher_scale: float = 3.0
    input_law: str = "gaussian"
    a_scale: float = 1.0
    n_inputs: int = 1000
    n_eval_inputs: int = 4000
    learning_rate: float = 0.02
    steps: int = 2000
    record_every: int = 50
    n_seeds: int = 8
    attention_seeds: int = 4
    attention_ratios: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0)
    success_threshold: float = 0.05
    perturbation_size: float = 0.01
    perturb_every: int = 10
    birth_death_rate: float = 10.0
    mean_field_sizes: tuple[int, ...] = (50, 100, 200, 400, 800, 1600)
    mean_field_seeds: int = 4
    mean_field_steps: int = 750
    seed: int = 0

    def __post_init__(self):
        for name in ("d", "k", "n_particles", "teacher_neurons", "n_inputs", "n_eval_inputs"):
            check.positive_int(name, getattr(self, name))
        for name in ("steps", "record_every", "n_seeds", "perturb_every", "mean_field_seeds"):
            check.positive_int(name, getattr(self, name))
        check.positive_int("attention_seeds", self.attention_seeds)
        if self.attention_seeds > self.n_seeds:
            raise ValueError(
                f"`attention_seeds` must be at most `n_seeds` ({self.n_seeds}), "
                f"got {self.attention_seeds}."
            )
        check.positive_int("mean_field_steps", self.mean_field_steps)
        check.seed("seed", self.seed)
        check.one_of("activation", self.activation, ACTIVATIONS)
        check.one_of("input_law", self.input_law, INPUT_LAWS)
        for name in ("teacher_scale", "a_scale", "learning_rate", "perturbation_size"):
            check.finite_positive(name, getattr(self, name))
        check.finite_nonnegative("birth_death_rate", self.birth_death_rate)
        check.in_open_interval("success_threshold", self.success_threshold, 0.0, 1.0)
        if self.k > self.d:
            raise ValueError(
                f"`k` must be at most `d` ({self.d}) for the coupled init, got {self.k}."
            )
        for name in ("steps", "mean_field_steps"):
            if getattr(self, name) % self.record_every:
                raise ValueError(
                    f"`{name}` ({getattr(self, name)}) must be a multiple of `record_every` "
                    f"({self.record_every})."
                )
        for ratio in self.attention_ratios:
            check.finite_positive("attention_ratios", ratio)
        for size in self.mean_field_sizes:
            check.positive_int("mean_field_sizes", size)
        if len(self.mean_field_sizes) < 3:
            raise ValueError("`mean_field_sizes` needs at least 3 sizes to fit a rate.")

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["attention_ratios"] = list(self.attention_ratios)
        out["mean_field_sizes"] = list(self.mean_field_sizes)
        return out


def _records(trajectory) -> dict:
    out = {k: np.asarray(v) for k, v in trajectory.observables.items()}
    out["time"] = np.asarray(trajectory.time)
    out["train_loss"] = np.asarray(trajectory.loss)  # the flow's own objective, at each record
    return out


class _Setting(eqx.Module):
    """The task and the two input samples every group shares."""

    task: object
    inputs: jax.Array
    eval_inputs: jax.Array


def _setting(config) -> _Setting:
    key = jr.key(config.seed)
    task = feature_regression(
        d=config.d,
        k=config.k,
        teacher_neurons=config.teacher_neurons,
        teacher_scale=config.teacher_scale,
        activation=config.activation,
        input_law=config.input_law,
        key=jr.fold_in(key, 0),
    )
    return _Setting(
        task=task,
        inputs=task.inputs(config.n_inputs, key=jr.fold_in(key, 1)),
        eval_inputs=task.inputs(config.n_eval_inputs, key=jr.fold_in(key, 2)),
    )


def _generic_models(config, setting, n_members, n_particles, key):
    """Seeds of the coupled initial law, with W = W_µ0 (so static and joint runs start alike)."""
    x, f = setting.inputs, setting.task.target_features(setting.inputs)

    def make(k):
        model = init_feature_attention(
            n_particles=n_particles,
            k=config.k,
            d=config.d,
            a_scale=config.a_scale,
            activation=config.activation,
            key=k,
        )
        return with_optimal_attention(model, x, f)

    return eqx.filter_vmap(make)(jr.split(key, n_members))


def _solve(config, setting, models, *, steps, **solver_kwargs):
    solver = particle_solver(
        setting.task,
        learning_rate=config.learning_rate,
        inputs=setting.inputs,
        eval_inputs=setting.eval_inputs,
        **solver_kwargs,
    )
    _, trajectory = solver.run(
        solver.init(models),
        steps=steps,
        record_every=config.record_every,
        key=jr.fold_in(jr.key(config.seed), 3),
    )
    return _records(trajectory)


def _saddle_kwargs(config, variant) -> dict:
    size = dict(perturbation_size=config.perturbation_size, perturb_every=config.perturb_every)
    if variant == "none":
        return {}
    if variant == "isotropic":
        return dict(perturbation="isotropic", **size)
    if variant == "hessian":
        return dict(perturbation="hessian", **size)
    return dict(perturbation="isotropic", birth_death_rate=config.birth_death_rate, **size)


def _groups(config, setting):
    """(name, member-steps, compute) for every group, in run order."""
    seeds_key = jr.fold_in(jr.key(config.seed), 4)
    groups = []

    def generic(n_seeds, **kwargs):
        # the first `attention_seeds` static seeds are the joint runs' seeds too
        models = _generic_models(config, setting, config.n_seeds, config.n_particles, seeds_key)
        models = jax.tree.map(lambda a: a[:n_seeds], models)
        return lambda: _solve(config, setting, models, steps=config.steps, **kwargs)

    groups.append(("static", config.steps * config.n_seeds, generic(config.n_seeds)))
    for ratio in config.attention_ratios:
        compute = generic(config.attention_seeds, attention="attention", attention_ratio=ratio)
        groups.append((f"attention_r{ratio:g}", config.steps * config.attention_seeds, compute))

    symmetric = symmetric_measure(
        n_particles=config.n_particles,
        k=config.k,
        d=config.d,
        activation=config.activation,
        key=jr.fold_in(jr.key(config.seed), 5),
    )
    symmetric = jax.tree.map(
        lambda a: a[None], FeatureAttention(particles=symmetric, W=jnp.eye(config.k))
    )
    for variant in SADDLE_VARIANTS:
        kwargs = _saddle_kwargs(config, variant)

        def saddle(kwargs=kwargs):
            return _solve(config, setting, symmetric, steps=config.steps, **kwargs)

        groups.append((f"saddle_{variant}", config.steps, saddle))

    for m in config.mean_field_sizes:
        key = jr.fold_in(jr.key(config.seed), 1000 + m)

        def mean_field(m=m, key=key):
            models = _generic_models(config, setting, config.mean_field_seeds, m, key)
            return _solve(config, setting, models, steps=config.mean_field_steps)

        work = config.mean_field_steps * config.mean_field_seeds
        groups.append((f"mean_field_M{m}", work, mean_field))
    return groups


def check_precision() -> None:
    if not jax.config.jax_enable_x64:
        raise ValueError(
            "`feature-learning` runs in float64: call jax.config.update('jax_enable_x64', True) "
            "before any other JAX work (the `jaxicl` command does this for you). Jointly trained "
            "W meets ill-conditioned Σ_µµ, where float32 diverges."
        )


def run_feature_learning(config: FeatureLearningConfig, out_dir, *, progress=None):
    """Run (or resume) into `out_dir`: `groups/*.npz`, `summary.json`, `feature_learning.png`."""

    check_precision()
    out_dir = pathlib.Path(out_dir)
    claim_run_directory(out_dir, config.as_dict())
    setting = _setting(config)
    groups = _groups(config, setting)
    total = sum(work for _, work, _ in groups)
    bar = progress_bar(total, description="feature-learning", unit="member-step", enabled=progress)
    results = {}
    for name, work, compute in groups:
        bar.set_postfix_str(name)
        results[name] = cached_arrays(out_dir / "groups" / f"{name}.npz", compute)
        bar.update(work)
    bar.close()
    summary = summarize(config, setting, results)
    save_json(out_dir / "summary.json", summary)
    plot_feature_learning(results, summary, out_dir / "feature_learning.png")
    return summary
