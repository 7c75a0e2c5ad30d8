"""The workloads a sweep can run, with their settings, defaults and checks.

Group axes (one compiled group per value) are those that change array shapes, the objective or
the program (e.g. the init scheme); member axes are per-member inputs of one program, vmapped
with the seeds. Every other setting is fixed for the sweep.
"""

from . import _validation as check
from ._sweep_program import Workload
from ._workloads_attention import (
    FULL_MEMBER_AXES,
    REDUCED_MEMBER_AXES,
    full_allocation,
    reduced_allocation,
)
from ._workloads_meanfield import MEANFIELD_MEMBER_AXES, feature_learning


def _positive_int(field, value):
    check.positive_int(field, value)


def _nonnegative_int(field, value):
    check.nonnegative_int(field, value)


def _seed(field, value):
    check.seed(field, value)


def _positive_float(field, value):
    check.finite_positive(field, value)


def _nonnegative_float(field, value):
    check.finite_nonnegative(field, value)


def _fraction(field, value):
    check.in_open_interval(field, value, 0.0, 1.0)


def _scheme(field, value):
    from ._experiments._task_allocation import SCHEMES

    check.one_of(field, value, SCHEMES)


def _attention(field, value):
    check.one_of(field, value, ("static", "attention"))


def _perturbation(field, value):
    from ._meanfield_solver import PERTURBATIONS

    check.one_of(field, value, PERTURBATIONS)


def _full_init(field, value):
    from ._experiments._task_allocation import SCHEMES

    check.one_of(field, value, ("normal", *SCHEMES))


def _activation(field, value):
    from ._neurons import ACTIVATIONS

    check.one_of(field, value, ACTIVATIONS)


def _one_rate_for_joint_attention(settings, grid):
    # W's exact flow integrates over ratio × η with one η per program
    joint = "attention" in grid.get("attention", [settings["attention"]])
    if joint and len(grid.get("learning_rate", [])) > 1:
        raise ValueError(
            f'`grid.learning_rate` ({grid["learning_rate"]}) needs attention = "static": '
            'with attention = "attention", W\'s flow is tied to one learning rate; '
            "sweep the learning rate in separate sweeps."
        )


def _reduced_schedule(settings, grid):
    check.whole_record_blocks(
        "`fixed.horizon` / `fixed.dt`",
        settings["horizon"] / settings["dt"],
        settings["n_records"],
        "`fixed.n_records`",
    )


def _step_schedule(settings, grid):
    check.whole_record_blocks(
        "`fixed.steps`", settings["steps"], settings["n_records"], "`fixed.n_records`"
    )


def _where(name, grid) -> str:
    return f"`grid.{name}`" if name in grid else f"`fixed.{name}`"


def _features_fit_inputs(settings, grid):
    # The particles' initial output weights are coupled to the first k input weights.
    for k in grid.get("k", [settings["k"]]):
        for d in grid.get("d", [settings["d"]]):
            if k > d:
                raise ValueError(
                    f"{_where('k', grid)} ({k}) must be at most {_where('d', grid)} ({d}): "
                    "each neuron's k outputs start coupled to its first k input weights."
                )


def _feature_learning_sweep(settings, grid):
    _step_schedule(settings, grid)
    _features_fit_inputs(settings, grid)
    _one_rate_for_joint_attention(settings, grid)


WORKLOADS = {
    "reduced-allocation": Workload(
        description="reduced (Ω, M) flow of multi-head softmax attention on disjoint tasks",
        defaults=dict(
            d=50,
            n_tasks=3,
            heads=3,
            context_len=100,
            scheme="random-positive",
            init_scale=1e-3,
            horizon=20.0,
            dt=0.005,
            n_records=40,
            seed=0,
        ),
        group_axes=("heads", "context_len", "scheme"),
        member_axes=REDUCED_MEMBER_AXES,
        checks=dict(
            d=_positive_int,
            n_tasks=_positive_int,
            heads=_positive_int,
            context_len=_positive_int,
            scheme=_scheme,
            init_scale=_positive_float,
            horizon=_positive_float,
            dt=_positive_float,
            n_records=_positive_int,
            seed=_seed,
        ),
        build=reduced_allocation,
        check_sweep=_reduced_schedule,
    ),
    "full-allocation": Workload(
        description="full softmax attention (Adam, sampled prompts) on disjoint tasks",
        defaults=dict(
            d=9,
            n_tasks=3,
            heads=3,
            context_len=20,
            context_noise=0.0,
            batch_size=64,
            init="normal",
            init_scale=0.1,
            learning_rate=0.01,
            steps=1500,
            n_records=30,
            seed=0,
        ),
        group_axes=("heads", "d", "n_tasks", "context_len", "context_noise", "batch_size", "init"),
        member_axes=FULL_MEMBER_AXES,
        checks=dict(
            d=_positive_int,
            n_tasks=_positive_int,
            heads=_positive_int,
            context_len=_positive_int,
            context_noise=_nonnegative_float,
            batch_size=_positive_int,
            init=_full_init,
            init_scale=_positive_float,
            learning_rate=_positive_float,
            steps=_positive_int,
            n_records=_positive_int,
            seed=_seed,
        ),
        build=full_allocation,
        check_sweep=_step_schedule,
    ),
    "feature-learning": Workload(
        description="mean-field particle solver (W = W_µ or trained) on feature regression",
        defaults=dict(
            d=10,
            k=3,
            particles=200,
            activation="sigmoid",
            teacher_neurons=5,
            teacher_scale=3.0,
            n_inputs=500,
            n_eval_inputs=1000,
            learning_rate=0.02,
            a_scale=1.0,
            steps=2000,
            n_records=20,
            success_threshold=0.05,
            attention="static",
            attention_ratio=10.0,
            perturbation="none",
            perturbation_size=0.01,
            perturb_every=10,
            seed=0,
        ),
        group_axes=(
            "particles",
            "d",
            "k",
            "n_inputs",
            "teacher_neurons",
            "attention",
            "attention_ratio",
            "perturbation",
            "perturbation_size",
        ),
        member_axes=MEANFIELD_MEMBER_AXES,
        checks=dict(
            d=_positive_int,
            k=_positive_int,
            particles=_positive_int,
            activation=_activation,
            teacher_neurons=_positive_int,
            teacher_scale=_positive_float,
            n_inputs=_positive_int,
            n_eval_inputs=_positive_int,
            learning_rate=_positive_float,
            a_scale=_positive_float,
            steps=_positive_int,
            n_records=_positive_int,
            success_threshold=_fraction,
            attention=_attention,
            attention_ratio=_positive_float,
            perturbation=_perturbation,
            perturbation_size=_nonnegative_float,
            perturb_every=_positive_int,
            seed=_seed,
        ),
        build=feature_learning,
        float64=True,
        check_sweep=_feature_learning_sweep,
    ),
}
