"""Study `ansatz-dynamics`: one of four dynamics from a decomposable init (random-positive
(Ω, M)), on the reduced flow's clock, for disjoint-task regression (the `full-vs-reduced`
experiment):

- `ReducedFlow()`: explicit Euler on ℓ(Ω, M), the large-L expansion to first order in 1/L;
- `ExactFlow()`: SGD on (Ω, M) with the full model's own loss on the ansatz, with control
  variates (unbiased, small fluctuations): the finite-L flow with no expansion;
- `AnsatzSampled()`: the same without control variates: the full model's sampling noise along
  the ansatz, no weight off it;
- `FullModel()`: the full attention model (all weights, `preconditioned_sgd` with
  `reduced_time_scales`).

Data are per member (each member its own prompts), and each dynamics draws from its own stream
of the runner's data key, so two dynamics never share prompts. Records the loss on the reduced
flow's scale (summed over tasks) and (Ω, M) per record; per member, the final (Ω, M), the
divergence flag and, for the full model, its final merged weights W, U.
"""

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .. import _validation as check
from .._attention._ansatz_monte_carlo import AnsatzICLLoss
from .._attention._decomposable import decomposable_attention, reduced_time_scales
from .._attention._init_schemes import RandomPositive
from .._attention._observables import semi_singular_values
from .._attention._reduced import MergedSpectral, ReducedLoss
from .._sweeps._study import AbstractStudy
from .._tasks._regression import MultiTaskRegression, disjoint_blocks
from .._train._objectives import AbstractObjective, ICLLoss
from .._train._trainer import preconditioned_sgd, sgd


class ReducedFlow(eqx.Module):
    name: ClassVar[str] = "reduced"
    stream: ClassVar[int] = 0


class ExactFlow(eqx.Module):
    name: ClassVar[str] = "exact"
    stream: ClassVar[int] = 1


class AnsatzSampled(eqx.Module):
    name: ClassVar[str] = "ansatz"
    stream: ClassVar[int] = 2


class FullModel(eqx.Module):
    name: ClassVar[str] = "full"
    stream: ClassVar[int] = 3


DYNAMICS = {d.name: d for d in (ReducedFlow(), ExactFlow(), AnsatzSampled(), FullModel())}
Dynamics = ReducedFlow | ExactFlow | AnsatzSampled | FullModel
FLOWS = ("factorized", "merged")


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

    dynamics: Dynamics = ReducedFlow()
    d: int = eqx.field(static=True, default=15)
    n_tasks: int = eqx.field(static=True, default=3)
    heads: int = eqx.field(static=True, default=3)
    context_len: int = eqx.field(static=True, default=100)
    batch_size: int = eqx.field(static=True, default=256)
    flow: str = eqx.field(static=True, default="factorized")
    init_scale: float = 0.03
    init_spread: float = 0.1
    dt: float = 0.01
    horizon: float = 3.0
    n_records: int = eqx.field(static=True, default=30)

    member_axes: ClassVar[tuple[str, ...]] = ("init_scale",)
    variants: ClassVar[dict] = {"dynamics": DYNAMICS}
    time_units: ClassVar[str] = "gradient-flow time"
    shared_data: ClassVar[bool] = False
    series_dims: ClassVar[dict] = {"omega": ("head", "task"), "mu": ("head", "task")}
    summary_dims: ClassVar[dict] = {
        "omega_final": ("head", "task"),
        "mu_final": ("head", "task"),
        "W": ("head", "context_coord", "query_coord"),
        "U": ("head", "output", "context_coord"),
    }

    def __check_init__(self):
        check.variant("dynamics", self.dynamics, Dynamics, DYNAMICS)
        for name in ("d", "n_tasks", "heads", "context_len", "batch_size", "n_records"):
            check.positive_int(name, getattr(self, name))
        disjoint_blocks(self.d, self.n_tasks)
        check.one_of("flow", self.flow, FLOWS)
        for name in ("init_scale", "dt", "horizon"):
            check.finite_positive(name, getattr(self, name))
        check.finite_nonnegative("init_spread", self.init_spread)
        check.whole_record_blocks(
            "`horizon` / `dt`", self.horizon / self.dt, self.n_records, "`n_records`"
        )

    @property
    def blocks(self):
        return disjoint_blocks(self.d, self.n_tasks)

    @property
    def steps(self) -> int:
        return round(self.horizon / self.dt)

    def _attention(self, state):
        factorized = self.flow == "factorized"
        return decomposable_attention(*state.spectral(), self.blocks, self.d, factorized=factorized)

    def initial_model(self, values, key):
        state = RandomPositive(self.init_spread)(
            self.heads, self.n_tasks, values["init_scale"], key=key
        )
        if self.flow == "merged":
            state = MergedSpectral(*state.spectral())
        return self._attention(state) if isinstance(self.dynamics, FullModel) else state

    def objective(self):
        sizes = tuple(b - a for a, b in self.blocks)
        if isinstance(self.dynamics, ReducedFlow):
            return ReducedLoss(sizes, self.context_len)
        if isinstance(self.dynamics, FullModel):
            task = MultiTaskRegression(self.d, self.context_len, self.blocks)
            inner = ICLLoss(task, self.batch_size)
        else:
            exact = isinstance(self.dynamics, ExactFlow)
            inner = AnsatzICLLoss(sizes, self.context_len, self.batch_size, control_variates=exact)
        return OwnStream(inner, self.dynamics.stream)

    def optimizer(self):
        if not isinstance(self.dynamics, FullModel):
            return sgd(self.dt)
        # the scales depend on the shapes and blocks only
        template = MergedSpectral(*(jnp.ones((self.heads, self.n_tasks)),) * 2)
        return preconditioned_sgd(
            self.dt, reduced_time_scales(self._attention(template), self.blocks)
        )

    def schedule(self):
        return self.n_records, self.steps // self.n_records

    def time(self):
        n_records, record_every = self.schedule()
        return self.dt * record_every * np.arange(n_records)

    def _spectral(self, model):
        if isinstance(self.dynamics, FullModel):
            return semi_singular_values(model, self.blocks)
        return model.spectral()

    def observe(self):
        return self._spectral

    def series(self, trajectory):
        omega, mu = trajectory.observables
        # the ICL loss averages the n outputs; ℓ sums them
        scale = self.n_tasks if isinstance(self.dynamics, FullModel) else 1
        return {"loss": scale * trajectory.loss, "omega": omega, "mu": mu}

    def summarize(self, state, series):
        omega, mu = self._spectral(state.model)
        out = {"omega_final": omega, "mu_final": mu, "diverged": state.diverged}
        if isinstance(self.dynamics, FullModel):
            merged = state.model.merged()
            out.update(W=merged.W, U=merged.U)
        return out
