"""Experiment `feature-learning`: the mean-field particle solver on Kim & Suzuki's setting
(d = 20, k = 5, 500 sigmoid neurons; a teacher MLP of 10 neurons), six groups:

- `static` vs `attention`: the two-timescale flow (W = W_µ always) against W trained jointly at
  several learning-rate ratios, over an ensemble of seeds; with the success rate of reaching
  L < ε · L_c from generic inits (L_c = ½ E‖f° − E f°‖², the loss of constant features),
  and how many of these noiseless runs stall above it (`_feature_learning_saddles.py`).
  The Euler step 0.02 keeps the flow's loss monotone in every seed: at 0.05 and 0.1 some seeds
  show short growing oscillations late in training (explicit-Euler instability).
- `saddle`: a symmetric init (all particles at one point: rank-1 features) under the noiseless
  flow, isotropic perturbations, isotropic perturbations + birth–death, and Hessian-guided
  perturbations. Rank-1 features make L jump along any split or mixture (it depends on the
  features' span only), so this saddle has no finite curvature: any split escapes at once.
- `escape`: `escape_atoms` atoms (full-rank features) under the noiseless flow (ε = 0: a
  critical point of the flow) and split by ε: the escape time against log(1/ε), its slope
  against the flow's splitting curvature, and L's slope and curvature along the mixture with
  the teacher at the critical point.
- `mean-field`: L(t) for M = 50 … 800 from independent draws of the same initial law; the
  spread over draws against M on log-log axes, with the fitted rate and its bootstrap error.
- `in-context`: the static flow trained in context, on `prompts_per_step` fresh prompts of n
  token pairs each step (the finite-n loss L^n), for n in `prompt_lengths` (0: n = ∞, the
  population loss on the training sample) from the same initial particles: the final loss and
  the distance of the learned features from the n = ∞ run's, as n grows. With
  `in_context_joint_ratio` > 0, the same runs with W trained jointly (`in_context_joint`):
  the particles descend L^n at the current W, and W follows its gradient flow on L_TF of the
  step's prompts' inputs at that ratio.

All runs share one fixed training sample (a deterministic flow) and are recorded on a held-out
sample. Every group is a sweep of the `FeatureLearning` study, streamed into a store under
`sweeps/`: an interrupted run resumes at the first step chunk it had not stored.
"""

import dataclasses
import pathlib
from typing import ClassVar

import numpy as np

from .. import _validation as check
from .._host._checkpoint import claim_run_directory, save_json
from .._meanfield._flow import JointAttention
from .._meanfield._perturbations import HessianNoise, IsotropicNoise
from .._studies._feature_learning import FeatureLearning, SplitAtoms, SymmetricPoint
from .._sweeps._outcome import flag
from .._sweeps._runner import sweep
from ._experiment import Experiment, ExperimentConfig, setting
from ._feature_learning_figure import plot_feature_learning
from ._feature_learning_summary import (
    SADDLE_VARIANTS,
    format_feature_learning_summary,
    mask_diverged,
    summarize,
)


# the stored series every group's summary and figure read
_RECORDS = ("loss", "transformer_loss", "train_loss", "condition", "teacher_singular_values")
_RECORDS += ("a_norm", "w_norm", "w_spread", "splitting_curvature", "flow_splitting_curvature")
_RECORDS += ("flow_dissipation",)


# Named settings (`jaxicl run feature-learning --preset NAME`); other flags apply on top.
PRESETS = {
    # Kim & Suzuki's recorded experiment: d = 20, k = 5, 500 sigmoid neurons, prompts of 1000
    # token pairs, static and jointly trained W (the defaults), with the in-context runs at
    # n = 1000 against n = ∞ only. Scaled down: 16 prompts a step (the paper: 10,000), 2000
    # Euler steps; the jointly trained W runs on the population loss of the training sample,
    # not in context.
    "kim-suzuki": dict(
        prompt_lengths=(1000, 0),
        prompts_per_step=16,
        in_context_seeds=4,
        in_context_joint_ratio=100.0,
    ),
}


# The static runs' study at the paper's sizes; every group changes a few of its settings.
STUDY = FeatureLearning(
    d=20,
    k=5,
    particles=500,
    teacher_neurons=10,
    n_inputs=1000,
    n_eval_inputs=4000,
    steps=2000,
    n_records=40,
)


@dataclasses.dataclass(frozen=True)
class FeatureLearningConfig(ExperimentConfig):
    """Configuration of `feature-learning` (mean-field particle solver); validated on
    construction. Its study's settings (`d`, `k`, `particles`, `learning_rate`, `steps`, …)
    are flags of their own; the fields below are the experiment's."""

    study: FeatureLearning = setting(STUDY, "the static runs' study")
    n_seeds: int = setting(16, "seeds of the static (two-timescale) flow")
    attention_seeds: int = setting(4, "seeds of the jointly trained W runs (≤ n_seeds)")
    attention_ratios: tuple[float, ...] = setting(
        (1.0, 10.0, 100.0, 1000.0), "learning-rate ratios of W to the particles, comma-separated"
    )
    stall_tolerance: float = setting(
        0.01,
        "a static run above the threshold has stalled when its dissipation −dL/dt times its "
        "flow time is below this × L_c",
    )
    saddle_birth_death_rate: float = setting(
        10.0, "rate of the birth–death moves of the saddle runs"
    )
    escape_atoms: int = setting(
        5, "atoms of the split-atoms saddle (its features have full rank from k)"
    )
    escape_particles_per_atom: int = setting(10, "particles at each atom of the split-atoms runs")
    escape_displacements: tuple[float, ...] = setting(
        (1e-2, 1e-3, 1e-4, 1e-5, 1e-6),
        "split sizes ε of the escape runs, comma-separated (ε = 0 is always run as the reference)",
    )
    escape_seeds: int = setting(2, "independent splits per ε")
    escape_steps: int = setting(8000, "Euler steps of the escape runs")
    escape_drop: float = setting(0.01, "escaped: L below the ε = 0 run by this × L_c")
    mean_field_sizes: tuple[int, ...] = setting(
        (50, 100, 200, 400, 800), "particle counts M of the mean-field convergence study"
    )
    mean_field_seeds: int = setting(
        16,
        "independent initial draws per M of that study (≥ 3: the spread over them is the "
        "measured fluctuation)",
    )
    mean_field_steps: int = setting(500, "Euler steps of that study")
    prompt_lengths: tuple[int, ...] = setting(
        (16, 64, 256, 0),
        "token pairs n per prompt of the in-context runs, comma-separated (0: n = ∞, the "
        "population loss; must be included)",
    )
    in_context_seeds: int = setting(4, "seeds of the in-context runs")
    in_context_joint_ratio: float = setting(
        0.0,
        "0: none; > 0: also run the in-context runs with W trained jointly at this "
        "learning-rate ratio",
    )
    seed: int = setting(0, "root random seed, in [0, 2**63); also the problem's seed")

    # what each group sets itself: the init, W's treatment, the noise, n, the problem's seed
    varied: ClassVar[tuple[str, ...]] = (
        "init",
        "displacement",
        "attention",
        "attention_ratio",
        "perturbation",
        "birth_death_rate",
        "prompt_length",
        "problem_seed",
        "geometry",
    )

    def __post_init__(self):
        self.check_studies()
        for name in ("n_seeds", "mean_field_seeds", "mean_field_steps"):
            check.positive_int(name, getattr(self, name))
        check.positive_int("attention_seeds", self.attention_seeds)
        if self.attention_seeds > self.n_seeds:
            raise ValueError(
                f"`attention_seeds` must be at most `n_seeds` ({self.n_seeds}), "
                f"got {self.attention_seeds}."
            )
        check.seed("seed", self.seed)
        check.finite_positive("saddle_birth_death_rate", self.saddle_birth_death_rate)
        for name in ("escape_atoms", "escape_particles_per_atom", "escape_seeds", "escape_steps"):
            check.positive_int(name, getattr(self, name))
        check.finite_positive("stall_tolerance", self.stall_tolerance)
        check.in_open_interval("escape_drop", self.escape_drop, 0.0, 1.0)
        for eps in self.escape_displacements:
            check.finite_positive("escape_displacements", eps)
        check.distinct("escape_displacements", self.escape_displacements)
        if len(self.escape_displacements) < 3:
            raise ValueError("`escape_displacements` needs at least 3 values to fit a slope.")
        if self.mean_field_seeds < 3:
            raise ValueError(
                f"`mean_field_seeds` must be at least 3 (a spread over seeds), got "
                f"{self.mean_field_seeds}."
            )
        for name in ("mean_field_steps", "escape_steps"):
            if getattr(self, name) % self.record_every:
                raise ValueError(
                    f"`{name}` ({getattr(self, name)}) must be a multiple of the steps between "
                    f"records ({self.record_every} = steps / n_records)."
                )
        for ratio in self.attention_ratios:
            check.finite_positive("attention_ratios", ratio)
        for size in self.mean_field_sizes:
            check.positive_int("mean_field_sizes", size)
        if len(self.mean_field_sizes) < 3:
            raise ValueError("`mean_field_sizes` needs at least 3 sizes to fit a rate.")
        check.positive_int("in_context_seeds", self.in_context_seeds)
        check.finite_nonnegative("in_context_joint_ratio", self.in_context_joint_ratio)
        for n in self.prompt_lengths:
            if not isinstance(n, int) or n < 0:
                raise ValueError(
                    f"`prompt_lengths` must be whole numbers ≥ 0 (0: n = ∞), got {n!r}."
                )
        check.distinct("prompt_lengths", self.prompt_lengths)
        if 0 not in self.prompt_lengths:
            raise ValueError(
                "`prompt_lengths` must include 0 (n = ∞): the in-context runs are measured "
                f"against it, got {self.prompt_lengths}."
            )

    @property
    def record_every(self) -> int:
        """Euler steps between records (of every group)."""
        return self.study.steps // self.study.n_records


def _study(config) -> FeatureLearning:
    """The static runs' study: the configured one on the problem of the run's seed."""
    return dataclasses.replace(config.study, problem_seed=config.seed)


def _saddle_changes(config) -> dict:
    """Each saddle run's settings, by its name in the summary (`SADDLE_VARIANTS`): all start
    at one symmetric point."""
    at_one_point = dict(init=SymmetricPoint())
    births = dict(birth_death_rate=config.saddle_birth_death_rate)
    return {
        "none": at_one_point,
        "isotropic": dict(at_one_point, perturbation=IsotropicNoise()),
        "isotropic+birth-death": dict(at_one_point, perturbation=IsotropicNoise(), **births),
        "hessian": dict(at_one_point, perturbation=HessianNoise()),
    }


def _sweeps(config) -> list:
    """(name, study, grid, seeds) of every sweep, in run order. Seed s starts from the same
    particles in the static and the joint runs (the runner's keys), so they pair up."""
    base = _study(config)
    mean_field = dict(
        steps=config.mean_field_steps, n_records=config.mean_field_steps // config.record_every
    )
    split = dict(
        geometry=True,
        init=SplitAtoms(config.escape_atoms),
        particles=config.escape_atoms * config.escape_particles_per_atom,
        steps=config.escape_steps,
        n_records=config.escape_steps // config.record_every,
    )
    groups = [
        ("static", dataclasses.replace(base, geometry=True), {}, config.n_seeds),
        (
            "attention",
            dataclasses.replace(base, attention=JointAttention()),
            {"attention_ratio": list(config.attention_ratios)},
            config.attention_seeds,
        ),
        *(
            (f"saddle_{v}", dataclasses.replace(base, **_saddle_changes(config)[v]), {}, 1)
            for v in SADDLE_VARIANTS
        ),
        (
            "escape",
            dataclasses.replace(base, **split),
            {"displacement": [0.0, *config.escape_displacements]},
            config.escape_seeds,
        ),
        (
            "mean_field",
            dataclasses.replace(base, **mean_field),
            {"particles": list(config.mean_field_sizes)},
            config.mean_field_seeds,
        ),
        (
            "in_context",
            base,
            {"prompt_length": list(config.prompt_lengths)},
            config.in_context_seeds,
        ),
    ]
    if config.in_context_joint_ratio > 0:
        joint = dict(
            attention=JointAttention(),
            attention_ratio=config.in_context_joint_ratio,
        )
        groups.append(
            (
                "in_context_joint",
                dataclasses.replace(base, **joint),
                {"prompt_length": list(config.prompt_lengths)},
                config.in_context_seeds,
            )
        )
    return groups


def _records(dataset, learning_rate: float) -> dict:
    """A group's arrays, members first (as `groups` of the summary and figure read them);
    `time` is flow time (learning rate × Euler steps); a diverged member's series are NaN."""
    # the geometry records (dissipation, splitting curvature) only where a group asked
    out = {n: dataset[n].transpose("seed", ...).values for n in _RECORDS if n in dataset}
    out["diverged"] = flag(dataset["diverged"].transpose("seed"))
    out = mask_diverged(out)
    out["time"] = np.broadcast_to(learning_rate * dataset["time"].values, out["loss"].shape)
    return out


def run_feature_learning(config: FeatureLearningConfig, out_dir, *, progress=None):
    """Run (or resume) into `out_dir`: the sweep stores under `sweeps/`, `summary.json`,
    `feature_learning.png`. Each group streams into its store, so an interrupted run resumes
    at the first step chunk it had not stored."""

    out_dir = pathlib.Path(out_dir)
    claim_run_directory(out_dir, config.as_dict())
    results = {}
    for name, study, grid, seeds in _sweeps(config):
        dataset = sweep(
            study,
            grid=grid,
            seeds=seeds,
            store=out_dir / "sweeps" / name,
            root_seed=config.seed,
            # a group's seeds in one call: no memory probe to compile, as few calls as can be
            members_per_call=seeds,
            progress=progress,
        )
        if name == "attention":
            for ratio in config.attention_ratios:
                one = dataset.sel(attention_ratio=ratio)
                results[f"attention_r{ratio:g}"] = _records(one, config.study.learning_rate)
        elif name == "escape":
            for e in [0.0, *config.escape_displacements]:
                one = dataset.sel(displacement=e)
                results[f"escape_eps{e:g}"] = {
                    **_records(one, config.study.learning_rate),
                    **{
                        v: one[v].transpose("seed").values
                        for v in ("teacher_mixture_slope", "teacher_mixture_curvature")
                    },
                }
        elif name == "mean_field":
            for m in config.mean_field_sizes:
                results[f"mean_field_M{m}"] = _records(
                    dataset.sel(particles=m), config.study.learning_rate
                )
        elif name in ("in_context", "in_context_joint"):
            for n in config.prompt_lengths:
                one = dataset.sel(prompt_length=n)
                results[f"{name}_n{n}"] = {
                    **_records(one, config.study.learning_rate),
                    "final_features": one["final_features"].transpose("seed", ...).values,
                }
        else:
            results[name] = _records(dataset, config.study.learning_rate)
    summary = summarize(config, _study(config), results)
    save_json(out_dir / "summary.json", summary)
    plot_feature_learning(results, summary, out_dir / "feature_learning.png")
    return summary


EXPERIMENT = Experiment(
    name="feature-learning",
    config=FeatureLearningConfig,
    run=run_feature_learning,
    describe=format_feature_learning_summary,
    studies=(FeatureLearning,),
    presets=PRESETS,
)
