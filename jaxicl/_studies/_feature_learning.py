"""Study `feature-learning`: the mean-field particle solver on the feature-regression task, with
W = W_µ after every step (`attention = OptimalAttention()`, "static": the two-timescale limit)
or trained `attention_ratio` times faster (`JointAttention()`, "attention"), optional isotropic
or Hessian-guided perturbations (`perturbation`) and birth–death. Particles start from the
coupled initial law (`init = CoupledLaw()`, W = W_µ0), all at one point (`SymmetricPoint()`,
W = I: a saddle), or at a few shared atoms split by a displacement ε (`SplitAtoms(atoms)`,
`displacement` a member axis: the escape from a saddle with full-rank features).

The teacher, the training sample and the held-out sample are the problem instance, drawn from
`problem_seed` and shared by every member; members differ by their initial particles. Per
record it stores every observable of the held-out sample (L(µ), L_TF, cond Σµµ, the singular
values of Σµ°µ, particle statistics; with `geometry`, the splitting curvature and, on the
training sample, the flow's dissipation −dL/dt and splitting curvature) and the flow's own
objective on the training sample; at the end L/L_c (L_c: the loss of constant features),
whether it fell below `success_threshold`, the slope and curvature of L along the mixture with
the teacher (all NaN for a member that diverged), the learned features h_µ on the
first `PROBE_INPUTS` held-out inputs (to compare runs' features), and the divergence flag.
Runs in float64.

`prompt_length = 0` trains on the n = ∞ loss over the fixed training sample; `prompt_length
= n > 0` trains in context, on `prompts_per_step` fresh prompts of n token pairs each step
(the finite-n loss L^n; the prompts are shared by the members), W treated on the step's
prompts' inputs. The held-out records are the same n = ∞ observables either way.
"""

import abc
from typing import ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr

from .. import _validation as check
from .._meanfield._activations import ACTIVATIONS, AbstractActivation, Sigmoid
from .._meanfield._flow import (
    ATTENTION_TREATMENTS,
    AbstractAttentionTreatment,
    OptimalAttention,
    particle_flow,
)
from .._meanfield._loss import constant_feature_loss, with_optimal_attention
from .._meanfield._model import FeatureAttention, init_feature_attention
from .._meanfield._neurons import symmetric_measure, uniform_measure
from .._meanfield._perturbations import PERTURBATIONS, AbstractPerturbation, NoPerturbation
from .._meanfield._saddle import mixture_derivatives
from .._meanfield._solver import ParticleSolver, particle_solver
from .._meanfield._task import (
    INPUT_LAWS,
    AbstractInputLaw,
    GaussianInputs,
    feature_regression,
)
from .._sweeps._outcome import outcome
from .._sweeps._study import AbstractStudy, setting


class _Problem(NamedTuple):
    inputs: object
    targets: object
    solver: ParticleSolver
    constant_loss: object
    probe: object
    teacher: object


@eqx.filter_jit
def _instance(
    d, k, teacher_neurons, teacher_scale, activation, input_law, n_inputs, n_eval, problem_seed
):
    """The problem instance (teacher task, training and held-out inputs) of these settings:
    one compiled draw, reused by every group and method that asks (drawn eagerly, its many
    small operations would each compile)."""
    key = jr.key(problem_seed)
    task = feature_regression(
        d=d,
        k=k,
        teacher_neurons=teacher_neurons,
        teacher_scale=teacher_scale,
        activation=activation,
        input_law=input_law,
        key=jr.fold_in(key, 0),
    )
    inputs = task.inputs(n_inputs, key=jr.fold_in(key, 1))
    return task, inputs, task.inputs(n_eval, key=jr.fold_in(key, 2))


class AbstractFeatureInit(eqx.Module):
    """How a member's particles start: `initial_model(study, values, key)`. `name` is how sweep
    files and the command line refer to it; `displaced` says whether the study's
    `displacement` moves its particles."""

    name: ClassVar[str]
    displaced: ClassVar[bool] = False

    def check(self, study: "FeatureLearning") -> None:
        """Refuse settings this init cannot start from."""

    @abc.abstractmethod
    def initial_model(self, study: "FeatureLearning", values, key) -> FeatureAttention:
        """One member's model from its member-axis `values` and its key."""


class CoupledLaw(AbstractFeatureInit):
    """Generic particles of the coupled initial law (output weights tied to the first k input
    weights), with W = W_µ0 on the training sample."""

    name: ClassVar[str] = "coupled"

    def initial_model(self, study, values, key):
        model = init_feature_attention(
            n_particles=study.particles, k=study.k, d=study.d, activation=study.activation, key=key
        )
        # the coupled law is linear in a_scale: draw at 1 and scale the output weights
        model = eqx.tree_at(lambda m: m.particles.a, model, values["a_scale"] * model.particles.a)
        return study.with_optimal_attention(model)


class SymmetricPoint(AbstractFeatureInit):
    """All particles at one random point (rank-1 features), W = I: a saddle the noiseless flow
    never leaves."""

    name: ClassVar[str] = "symmetric"

    def initial_model(self, study, values, key):
        particles = symmetric_measure(
            n_particles=study.particles, k=study.k, d=study.d, activation=study.activation, key=key
        )
        return FeatureAttention(particles=particles, W=jnp.eye(study.k, dtype=particles.a.dtype))


class SplitAtoms(AbstractFeatureInit):
    """`atoms` points of the coupled law (drawn from `problem_seed`: the same for every member),
    `particles / atoms` particles at each, then every particle displaced by the study's
    `displacement` ε times a normal draw of its member, centred within its atom (a split of the
    atom that leaves the measure unchanged to first order), W = W_µ. With ε = 0 the noiseless
    flow keeps the atoms and approaches a critical point with full-rank features (for atoms ≥
    k); a split at a negative splitting curvature −κ leaves it after (1/κ) log(1/ε) + const."""

    atoms: int = 5
    name: ClassVar[str] = "split-atoms"
    displaced: ClassVar[bool] = True

    def __check_init__(self):
        check.positive_int("init.atoms", self.atoms)

    def check(self, study):
        if study.particles % self.atoms:
            raise ValueError(
                f"`particles` ({study.particles}) must be a multiple of `init.atoms` "
                f"({self.atoms}): every atom holds the same number of particles."
            )

    def initial_model(self, study, values, key):
        centres = init_feature_attention(
            n_particles=self.atoms,
            k=study.k,
            d=study.d,
            activation=study.activation,
            key=jr.fold_in(jr.key(study.problem_seed), 3),
        ).particles
        per_atom = study.particles // self.atoms
        theta = jnp.concatenate([values["a_scale"] * centres.a, centres.w], axis=-1)
        noise = jr.normal(key, (self.atoms, per_atom, theta.shape[-1]), theta.dtype)
        noise = noise - noise.mean(axis=1, keepdims=True)
        theta = (theta[:, None] + values["displacement"] * noise).reshape(study.particles, -1)
        particles = uniform_measure(theta[:, : study.k], theta[:, study.k :], study.activation)
        model = FeatureAttention(particles=particles, W=jnp.eye(study.k, dtype=theta.dtype))
        return study.with_optimal_attention(model)


FEATURE_INITS = {
    "coupled": CoupledLaw(),
    "symmetric": SymmetricPoint(),
    "split-atoms": SplitAtoms(),
}


# held-out inputs on which each member's final features are stored
PROBE_INPUTS = 256


class FeatureLearning(AbstractStudy):
    """mean-field particle solver (W = W_µ or trained) on feature regression"""

    d: int = setting(10, "input dimension", static=True)
    k: int = setting(3, "features per neuron output (W is k × k)", static=True)
    particles: int = setting(200, "particles M of the mean-field measure", static=True)
    activation: AbstractActivation = setting(Sigmoid(), "the neurons' σ: sigmoid, tanh or relu")
    teacher_neurons: int = setting(5, "neurons of the teacher MLP", static=True)
    teacher_scale: float = setting(3.0, "scale of the teacher's input weights")
    input_law: AbstractInputLaw = setting(GaussianInputs(), "inputs: gaussian or sphere")
    init: AbstractFeatureInit = setting(
        CoupledLaw(), "the particles' start: coupled, symmetric or split-atoms"
    )
    n_inputs: int = setting(500, "training inputs (a fixed sample)", static=True)
    n_eval_inputs: int = setting(1000, "held-out inputs of the recorded losses", static=True)
    learning_rate: float = setting(0.02, "Euler step η of the particle flow")
    a_scale: float = setting(1.0, "scale of the particles' initial output weights")
    displacement: float = setting(0.0, "split size ε of the split-atoms init")
    steps: int = setting(2000, "Euler steps", static=True)
    n_records: int = setting(20, "records over the run (steps a multiple of it)", static=True)
    success_threshold: float = setting(0.05, "success: L < threshold × L of the constant predictor")
    attention: AbstractAttentionTreatment = setting(
        OptimalAttention(), "W: static (at its optimum) or attention (trained jointly)"
    )
    attention_ratio: float = setting(10.0, "learning-rate ratio of W to the particles")
    perturbation: AbstractPerturbation = setting(
        NoPerturbation(), "saddle-escape noise: none, isotropic or hessian"
    )
    perturbation_size: float = setting(0.01, "size of the saddle-escape perturbations")
    perturb_every: int = setting(10, "steps between perturbations")
    birth_death_rate: float = setting(0.0, "rate of the birth–death moves (0: none)")
    prompt_length: int = setting(
        0, "token pairs n per prompt (0: n = ∞, the population loss)", static=True
    )
    prompts_per_step: int = setting(
        16, "fresh prompts per Euler step of the in-context runs", static=True
    )
    problem_seed: int = setting(0, "seed of the teacher and the input samples")
    geometry: bool = setting(
        False, "also record the flow's dissipation and splitting curvature", static=True
    )

    registry_name: ClassVar[str] = "feature-learning"
    member_axes: ClassVar[tuple[str, ...]] = ("learning_rate", "a_scale", "displacement")
    time_units: ClassVar[str] = "Euler steps (flow time: learning_rate × step)"
    float64: ClassVar[bool] = True
    variants: ClassVar[dict] = {
        "activation": ACTIVATIONS,
        "input_law": INPUT_LAWS,
        "init": FEATURE_INITS,
        "attention": ATTENTION_TREATMENTS,
        "perturbation": PERTURBATIONS,
    }
    series_dims: ClassVar[dict[str, tuple[str, ...]]] = {
        "teacher_singular_values": ("singular_value",)
    }
    summary_dims: ClassVar[dict[str, tuple[str, ...]]] = {
        "final_features": ("probe_input", "feature")
    }
    meanings: ClassVar[dict[str, str]] = {
        "success": "1 = L/L_c below success_threshold at the end, 0 = not, NaN = diverged or "
        "not run",
        "flow_dissipation": "−dL/dt of the flow (flow time) on the training sample it "
        "descends (runs on the n = ∞ loss only)",
        "splitting_curvature": "the least eigenvalue over particles of the Hessian of δL/δµ "
        "in θ (held out); −κ < 0: a split atom there grows at rate κ (flow time)",
        "flow_splitting_curvature": "the same on the training sample the flow descends (runs "
        "on the n = ∞ loss only): the flow's own rate",
        "teacher_mixture_slope": "at the end, dL/ds / L_c of L((1 − s)µ + s µ°) at s = 0 "
        "(µ° the teacher; held out)",
        "teacher_mixture_curvature": "at the end, d²L/ds² / L_c along the same mixture",
    }

    def __check_init__(self):
        for name in (
            "d",
            "k",
            "particles",
            "teacher_neurons",
            "n_inputs",
            "n_eval_inputs",
            "steps",
            "n_records",
            "perturb_every",
            "prompts_per_step",
        ):
            check.positive_int(name, getattr(self, name))
        if not isinstance(self.prompt_length, int) or self.prompt_length < 0:
            raise ValueError(
                "`prompt_length` must be a whole number ≥ 0 (0: n = ∞, the population loss), "
                f"got {self.prompt_length!r}."
            )
        for name in ("teacher_scale", "learning_rate", "a_scale", "attention_ratio"):
            check.finite_positive(name, getattr(self, name))
        check.finite_nonnegative("perturbation_size", self.perturbation_size)
        check.finite_nonnegative("displacement", self.displacement)
        check.finite_nonnegative("birth_death_rate", self.birth_death_rate)
        check.variant("input_law", self.input_law, AbstractInputLaw, INPUT_LAWS)
        check.variant("init", self.init, AbstractFeatureInit, FEATURE_INITS)
        self.init.check(self)
        check.in_open_interval("success_threshold", self.success_threshold, 0.0, 1.0)
        check.variant("activation", self.activation, AbstractActivation, ACTIVATIONS)
        check.variant("attention", self.attention, AbstractAttentionTreatment, ATTENTION_TREATMENTS)
        check.variant("perturbation", self.perturbation, AbstractPerturbation, PERTURBATIONS)
        check.seed("problem_seed", self.problem_seed)
        check.whole_record_blocks("`steps`", self.steps, self.n_records, "`n_records`")
        if self.k > self.d:
            # The particles' initial output weights are coupled to the first k input weights.
            raise ValueError(
                f"`k` ({self.k}) must be at most `d` ({self.d}): each neuron's k outputs start "
                "coupled to its first k input weights."
            )

    def check_grid(self, grid):
        if not self.init.displaced and (self.displacement != 0 or "displacement" in grid):
            raise ValueError(
                f"`displacement` only displaces the particles of init = SplitAtoms (the "
                f"split-atoms init); with init = {type(self.init).__name__}() it would change "
                "nothing."
            )
        # W's exact flow integrates over ratio × η with one η per program
        # (a value that is not a treatment is refused when the group's study is built)
        joint = any(getattr(a, "trained", False) for a in grid.get("attention", [self.attention]))
        if joint and len(grid.get("learning_rate", [])) > 1:
            raise ValueError(
                f'`grid.learning_rate` ({grid["learning_rate"]}) needs attention = "static": '
                'with attention = "attention" (JointAttention), W\'s flow is tied to one '
                "learning rate; sweep the learning rate in separate sweeps."
            )
        # birth–death's jump rate per step is rate × η, built once per group
        births = any(r > 0 for r in grid.get("birth_death_rate", [self.birth_death_rate]))
        if births and len(grid.get("learning_rate", [])) > 1:
            raise ValueError(
                f"`grid.learning_rate` ({grid['learning_rate']}) needs birth_death_rate = 0: "
                "birth–death's jumps are tied to one learning rate; sweep the learning rate "
                "in separate sweeps."
            )

    def _problem(self) -> _Problem:
        task, inputs, eval_inputs = _instance(
            self.d,
            self.k,
            self.teacher_neurons,
            self.teacher_scale,
            self.activation,
            self.input_law,
            self.n_inputs,
            self.n_eval_inputs,
            self.problem_seed,
        )
        in_context = self.prompt_length > 0
        solver = particle_solver(
            task,
            learning_rate=self.learning_rate,
            inputs=None if in_context else inputs,
            batch_size=self.prompts_per_step if in_context else None,
            context_len=self.prompt_length if in_context else None,
            eval_inputs=eval_inputs,
            attention=self.attention,
            attention_ratio=self.attention_ratio,
            perturbation=self.perturbation,
            perturbation_size=self.perturbation_size,
            perturb_every=self.perturb_every,
            birth_death_rate=self.birth_death_rate,
            geometry=self.geometry,
        )
        constant = constant_feature_loss(task.target_features(eval_inputs))
        probe = eval_inputs[:PROBE_INPUTS]
        return _Problem(inputs, task.target_features(inputs), solver, constant, probe, task.teacher)

    def constant_feature_loss(self):
        """L_c: the held-out loss of constant features, the scale of every relative loss."""
        return self._problem().constant_loss

    def with_optimal_attention(self, model: FeatureAttention) -> FeatureAttention:
        """`model` with W = W_µ on the training sample."""
        problem = self._problem()
        return with_optimal_attention(model, problem.inputs, problem.targets)

    def initial_model(self, values, key):
        # Independent draws at every M: one key would give nested particle sets (the first M
        # particles of a larger draw), coupling the sizes a mean-field comparison sets apart.
        return self.init.initial_model(self, values, jr.fold_in(key, self.particles))

    def objective(self):
        return self._problem().solver.objective

    def optimizer(self):
        # the particle flow's Euler step alone (the solver's own is the same): built per member
        # from its learning rate, which may be traced here
        return particle_flow(self.learning_rate)

    def after_step(self):
        return self._problem().solver.after_step

    def observe(self):
        return self._problem().solver.observe

    def schedule(self):
        return self.n_records, self.steps // self.n_records

    def series(self, trajectory):
        # the held-out observables, and the flow's own objective on the training sample
        return {**trajectory.observables, "train_loss": trajectory.loss}

    def summarize(self, state, series):
        problem = self._problem()
        final = problem.solver.observe(state.model)["loss"] / problem.constant_loss
        healthy = ~state.diverged
        particles = state.model.particles
        features = jax.vmap(particles.features)(problem.probe)
        x, f = problem.solver.observe.inputs, problem.solver.observe.targets
        slope, bend = mixture_derivatives(particles, problem.teacher, x, f)
        return {
            "final_relative_loss": outcome(final, healthy),
            "teacher_mixture_slope": outcome(slope / problem.constant_loss, healthy),
            "teacher_mixture_curvature": outcome(bend / problem.constant_loss, healthy),
            "success": outcome(final < self.success_threshold, healthy),
            "final_features": outcome(features, healthy),
            "diverged": state.diverged,
        }
