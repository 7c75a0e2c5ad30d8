"""Study `ansatz-dynamics`: one of four dynamics from a decomposable init (random-positive
(Ω, M)), all on one clock, the full model's: steps × learning rate of plain SGD, for
disjoint-task regression (the `full-vs-reduced` experiment):

- `ReducedFlow()`: explicit Euler on ℓ(Ω, M), the large-L expansion to first order in 1/L,
  under a reduced flow (`WeightFlow()`: the weights' gradient flow, by default; or
  `EuclideanFlow()`, on its own clock);
- `ExactFlow()`: SGD on the ansatz coordinates of the weights with the full model's own loss
  on the ansatz, with control variates (unbiased, small fluctuations): the finite-L flow with
  no expansion;
- `AnsatzSampled()`: the same without control variates: the full model's sampling noise along
  the ansatz, no weight off it;
- `FullModel()`: the full attention model (all weights), plain SGD with one learning rate.

Every dynamics but the Euclidean reduced flow descends the ICL loss (averaged over the n
outputs) in the weights' own coordinates, so one `dt` is one SGD step of the full model and
nothing is rescaled. Data are per member (each member its own prompts), and each dynamics draws
from its own stream of the runner's data key, so two dynamics never share prompts. Records the
loss and (Ω, M) per record; per member, the final (Ω, M), the divergence flag and, for the full
model, its final merged weights W, U.
"""

import abc
from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .. import _validation as check
from .._attention._analysis import detect_phases, task_allocation
from .._attention._ansatz_monte_carlo import AnsatzICLLoss
from .._attention._decomposable import attention_from_start
from .._attention._init_schemes import INIT_SCHEMES, AbstractInitScheme, RandomPositive
from .._attention._observables import semi_singular_values
from .._attention._reduced_flows import AbstractReducedFlow, EuclideanFlow, WeightFlow
from .._sweeps._outcome import outcome
from .._sweeps._study import AbstractStudy, setting
from .._tasks._regression import MultiTaskRegression, disjoint_blocks
from .._train._objectives import AbstractObjective, ICLLoss
from .._train._optimizers import sgd


class AbstractDynamics(eqx.Module):
    """One of the dynamics compared: how a start (Ω, M) becomes a trained state, and its loss.
    `stream`: which stream of the data key it draws from (so two dynamics never share data).
    `phase_window`: the moving-median window its loss curve needs before phase detection
    (sampled losses are noisy)."""

    name: ClassVar[str]
    stream: ClassVar[int]
    phase_window: ClassVar[int] = 1

    @abc.abstractmethod
    def initial_model(self, study: "AnsatzDynamics", start):
        """The trained object for an init scheme's `start` state."""

    @abc.abstractmethod
    def objective(self, study: "AnsatzDynamics") -> AbstractObjective:
        """The loss this dynamics descends."""

    def spectral(self, study: "AnsatzDynamics", model):
        """(Ω, M) of a trained object."""
        return model.spectral()

    def final_weights(self, model) -> dict:
        """The trained object's weights worth storing per member (none for the reduced
        states: their (Ω, M) is stored already)."""
        return {}


class ReducedFlow(AbstractDynamics):
    flow: AbstractReducedFlow = WeightFlow()
    stream: ClassVar[int] = 0

    @property
    def name(self) -> str:
        return "reduced" if self.flow == WeightFlow() else f"reduced-{self.flow.name}"

    def initial_model(self, study, start):
        return self.flow.state(start, study.block_sizes)

    def objective(self, study):
        return self.flow.objective(study.block_sizes, study.context_len)


class _OnAnsatz(AbstractDynamics):
    """SGD on the weights' ansatz coordinates with the full model's own loss on the ansatz."""

    control_variates: ClassVar[bool]

    def initial_model(self, study, start):
        return WeightFlow().state(start, study.block_sizes)

    def objective(self, study):
        return AnsatzICLLoss(
            study.block_sizes,
            study.context_len,
            study.batch_size,
            control_variates=self.control_variates,
            average_outputs=True,
        )


class ExactFlow(_OnAnsatz):
    name: ClassVar[str] = "exact"
    stream: ClassVar[int] = 1
    phase_window: ClassVar[int] = 5
    control_variates: ClassVar[bool] = True


class AnsatzSampled(_OnAnsatz):
    name: ClassVar[str] = "ansatz"
    stream: ClassVar[int] = 2
    phase_window: ClassVar[int] = 9
    control_variates: ClassVar[bool] = False


class FullModel(AbstractDynamics):
    name: ClassVar[str] = "full"
    stream: ClassVar[int] = 3
    phase_window: ClassVar[int] = 9

    def initial_model(self, study, start):
        return attention_from_start(start, study.blocks, study.d)

    def objective(self, study):
        task = MultiTaskRegression(study.d, study.context_len, study.blocks)
        return ICLLoss(task, study.batch_size)

    def spectral(self, study, model):
        return semi_singular_values(model, study.blocks)

    def final_weights(self, model):
        merged = model.merged()
        return {"W": merged.W, "U": merged.U}


DYNAMICS = {
    d.name: d
    for d in (
        ReducedFlow(),
        ReducedFlow(EuclideanFlow()),
        ExactFlow(),
        AnsatzSampled(),
        FullModel(),
    )
}


class OwnStream(AbstractObjective):
    """`objective` drawing from `fold_in(key, stream)`: objectives of different streams never
    share data even under one data key (draws of one key at two batch sizes would overlap)."""

    objective: AbstractObjective
    stream: int = eqx.field(static=True)

    def draw(self, key):
        return self.objective.draw(jr.fold_in(key, self.stream))

    def evaluate(self, model, data):
        return self.objective.evaluate(model, data)


class AnsatzDynamics(AbstractStudy):
    """the reduced flow, the finite-L flow on the ansatz, its sampled version, or the full model"""

    dynamics: AbstractDynamics = setting(
        ReducedFlow(), "what runs: reduced, exact, ansatz (sampled) or full (the full model)"
    )
    d: int = setting(15, "input dimension, split into n_tasks disjoint blocks", static=True)
    n_tasks: int = setting(3, "regression tasks n (one block each)", static=True)
    heads: int = setting(3, "head count H", static=True)
    context_len: int = setting(100, "context length L", static=True)
    batch_size: int = setting(256, "prompts per member and step (sampled dynamics)", static=True)
    scheme: AbstractInitScheme = setting(RandomPositive(0.1), "init scheme of (Ω, M)")
    init_scale: float = setting(0.03, "init scale s of ω, μ")
    dt: float = setting(0.01, "the SGD learning rate (one step of every dynamics)")
    horizon: float = setting(3.0, "steps × learning rate of the run (plain SGD's clock)")
    n_records: int = setting(30, "records per run (must divide the steps)", static=True)

    member_axes: ClassVar[tuple[str, ...]] = ("init_scale",)
    variants: ClassVar[dict] = {"dynamics": DYNAMICS, "scheme": INIT_SCHEMES}
    time_units: ClassVar[str] = "steps × dt (the full model's SGD clock)"
    shared_data: ClassVar[bool] = False
    series_dims: ClassVar[dict] = {"omega": ("head", "task"), "mu": ("head", "task")}
    summary_dims: ClassVar[dict] = {
        "omega_final": ("head", "task"),
        "mu_final": ("head", "task"),
        "W": ("head", "context_coord", "query_coord"),
        "U": ("head", "output", "context_coord"),
    }

    def __check_init__(self):
        check.variant("dynamics", self.dynamics, AbstractDynamics, DYNAMICS)
        for name in ("d", "n_tasks", "heads", "context_len", "batch_size", "n_records"):
            check.positive_int(name, getattr(self, name))
        disjoint_blocks(self.d, self.n_tasks)
        check.variant("scheme", self.scheme, AbstractInitScheme, INIT_SCHEMES)
        for name in ("init_scale", "dt", "horizon"):
            check.finite_positive(name, getattr(self, name))
        check.whole_record_blocks(
            "`horizon` / `dt`", self.horizon / self.dt, self.n_records, "`n_records`"
        )

    @property
    def blocks(self):
        return disjoint_blocks(self.d, self.n_tasks)

    @property
    def block_sizes(self) -> tuple[int, ...]:
        return tuple(b - a for a, b in self.blocks)

    @property
    def steps(self) -> int:
        return round(self.horizon / self.dt)

    def initial_model(self, values, key):
        width = self.d + self.n_tasks
        start = self.scheme(self.heads, self.n_tasks, values["init_scale"], width=width, key=key)
        return self.dynamics.initial_model(self, start)

    def objective(self):
        return OwnStream(self.dynamics.objective(self), self.dynamics.stream)

    def optimizer(self):
        return sgd(self.dt)

    def schedule(self):
        return self.n_records, self.steps // self.n_records

    def time(self):
        n_records, record_every = self.schedule()
        return self.dt * record_every * np.arange(n_records)

    def _spectral(self, model):
        return self.dynamics.spectral(self, model)

    def observe(self):
        return self._spectral

    def series(self, trajectory):
        omega, mu = trajectory.observables
        return {"loss": trajectory.loss, "omega": omega, "mu": mu}

    def summarize(self, state, series):
        omega, mu = self._spectral(state.model)
        time = jnp.asarray(self.time(), series["loss"].dtype)
        phases = detect_phases(time, series["loss"], window=self.dynamics.phase_window)
        healthy = ~state.diverged
        return {
            "omega_final": omega,
            "mu_final": mu,
            # allocated at the end; no outcome for a member still on its plateau or diverged
            "success": outcome(task_allocation(omega, mu).success, phases.left_warmup & healthy),
            # a diverged member has no phases: NaN, not "still in warm-up"
            "left_warmup": outcome(phases.left_warmup, healthy),
            "warmup_end": outcome(phases.warmup_end, healthy),
            "emergence_end": outcome(phases.emergence_end, healthy),
            "diverged": state.diverged,
            **self.dynamics.final_weights(state.model),
        }
