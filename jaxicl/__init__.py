"""jaxicl: training dynamics of in-context learning in attention models, for whole ensembles.

See ARCHITECTURE.md for how the pieces fit together.
"""

import importlib.metadata

from ._attention._analysis import (
    Allocation as Allocation,
    Phases as Phases,
    detect_phases as detect_phases,
    task_allocation as task_allocation,
)
from ._attention._ansatz_monte_carlo import (
    AnsatzEstimate as AnsatzEstimate,
    AnsatzICLLoss as AnsatzICLLoss,
    ansatz_monte_carlo_loss as ansatz_monte_carlo_loss,
)
from ._attention._decomposable import (
    decomposable_attention as decomposable_attention,
    factorized_attention as factorized_attention,
)
from ._attention._init import (
    init_balanced as init_balanced,
    init_identity as init_identity,
    init_normal as init_normal,
)
from ._attention._init_schemes import (
    AbstractInitScheme as AbstractInitScheme,
    AbstractWeightInit as AbstractWeightInit,
    Balanced as Balanced,
    ChenCode as ChenCode,
    Merged as Merged,
    NormalWeights as NormalWeights,
    RandomPositive as RandomPositive,
    RandomPositiveCentre as RandomPositiveCentre,
    RandomSign as RandomSign,
)
from ._attention._kinds import (
    AbstractAttentionKind as AbstractAttentionKind,
    LinearScores as LinearScores,
    SoftmaxScores as SoftmaxScores,
)
from ._attention._models import (
    AbstractAttention as AbstractAttention,
    FactorizedAttention as FactorizedAttention,
    MergedAttention as MergedAttention,
)
from ._attention._observables import (
    HeadStructure as HeadStructure,
    head_structure as head_structure,
    semi_singular_values as semi_singular_values,
)
from ._attention._predictors import (
    debiased_gd_prediction as debiased_gd_prediction,
    debiased_gd_risk as debiased_gd_risk,
    gd_prediction as gd_prediction,
    gd_risk as gd_risk,
    kernel_smoother_prediction as kernel_smoother_prediction,
    least_squares_risk as least_squares_risk,
    optimal_gd_step as optimal_gd_step,
    ridge_prediction as ridge_prediction,
    ridge_risk_given_inputs as ridge_risk_given_inputs,
)
from ._attention._reduced import (
    AbstractSpectral as AbstractSpectral,
    AllocationOptimum as AllocationOptimum,
    FactorizedSpectral as FactorizedSpectral,
    MergedSpectral as MergedSpectral,
    ReducedLoss as ReducedLoss,
    balanced_factorization as balanced_factorization,
    optimal_allocation_losses as optimal_allocation_losses,
    reduced_loss as reduced_loss,
)
from ._attention._reduced_flows import (
    AbstractReducedFlow as AbstractReducedFlow,
    EuclideanFlow as EuclideanFlow,
    FactorizedWeights as FactorizedWeights,
    MergedWeights as MergedWeights,
    WeightFlow as WeightFlow,
)
from ._meanfield._activations import (
    AbstractActivation as AbstractActivation,
    ReLU as ReLU,
    Sigmoid as Sigmoid,
    Tanh as Tanh,
)
from ._meanfield._flow import (
    AbstractAttentionTreatment as AbstractAttentionTreatment,
    AttentionFlow as AttentionFlow,
    JointAttention as JointAttention,
    OptimalAttention as OptimalAttention,
    StaticAttention as StaticAttention,
    particle_flow as particle_flow,
)
from ._meanfield._loss import (
    first_variation as first_variation,
    optimal_attention as optimal_attention,
    transformer_loss as transformer_loss,
    two_timescale_loss as two_timescale_loss,
)
from ._meanfield._model import (
    FeatureAttention as FeatureAttention,
    init_feature_attention as init_feature_attention,
)
from ._meanfield._moves import (
    AfterSteps as AfterSteps,
    BirthDeath as BirthDeath,
    HessianPerturbation as HessianPerturbation,
    IsotropicPerturbation as IsotropicPerturbation,
)
from ._meanfield._neurons import (
    NeuronMeasure as NeuronMeasure,
    random_measure as random_measure,
    symmetric_measure as symmetric_measure,
    uniform_measure as uniform_measure,
)
from ._meanfield._objectives import (
    FeatureICLLoss as FeatureICLLoss,
    MeanFieldLoss as MeanFieldLoss,
)
from ._meanfield._perturbations import (
    AbstractPerturbation as AbstractPerturbation,
    HessianNoise as HessianNoise,
    IsotropicNoise as IsotropicNoise,
    NoPerturbation as NoPerturbation,
)
from ._meanfield._solver import (
    MeanFieldObservables as MeanFieldObservables,
    ParticleSolver as ParticleSolver,
    particle_solver as particle_solver,
)
from ._meanfield._task import (
    AbstractInputLaw as AbstractInputLaw,
    FeatureRegression as FeatureRegression,
    GaussianInputs as GaussianInputs,
    SphereInputs as SphereInputs,
    feature_regression as feature_regression,
)
from ._registry import load_sweep as load_sweep
from ._studies._ansatz_dynamics import (
    AnsatzDynamics as AnsatzDynamics,
    AnsatzSampled as AnsatzSampled,
    ExactFlow as ExactFlow,
    FullModel as FullModel,
    ReducedFlow as ReducedFlow,
)
from ._studies._attention_regression import (
    AttentionRegression as AttentionRegression,
    trained_models as trained_models,
)
from ._studies._feature_learning import (
    AbstractFeatureInit as AbstractFeatureInit,
    CoupledLaw as CoupledLaw,
    FeatureLearning as FeatureLearning,
    SplitAtoms as SplitAtoms,
    SymmetricPoint as SymmetricPoint,
)
from ._studies._full_allocation import FullAllocation as FullAllocation
from ._studies._reduced_allocation import ReducedAllocation as ReducedAllocation
from ._sweeps._plan import SweepPlan as SweepPlan
from ._sweeps._runner import run_plan as run_plan, sweep as sweep
from ._sweeps._store import open_sweep as open_sweep, plot_sweep as plot_sweep
from ._sweeps._study import AbstractStudy as AbstractStudy
from ._tasks._prompt import (
    Prompt as Prompt,
    context_tokens as context_tokens,
    query_token as query_token,
)
from ._tasks._regression import (
    AbstractTask as AbstractTask,
    LinearRegression as LinearRegression,
    MultiTaskRegression as MultiTaskRegression,
    disjoint_blocks as disjoint_blocks,
    overlapping_two_task as overlapping_two_task,
    sample_prompts as sample_prompts,
)
from ._train._objectives import (
    AbstractObjective as AbstractObjective,
    ICLLoss as ICLLoss,
    monte_carlo_loss as monte_carlo_loss,
)
from ._train._optimizers import sgd as sgd
from ._train._options import Members as Members, Record as Record
from ._train._state import (
    TrainState as TrainState,
    Trajectory as Trajectory,
    init_ensemble_state as init_ensemble_state,
    init_train_state as init_train_state,
)
from ._train._trainer import (
    train as train,
    train_ensemble as train_ensemble,
    train_ensemble_steps as train_ensemble_steps,
    train_steps as train_steps,
)


__version__ = importlib.metadata.version("jaxicl")
