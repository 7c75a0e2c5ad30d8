"""Study `reduced-allocation`: the reduced (Ω, M) dynamics of multi-head softmax attention on
disjoint tasks (the `task-allocation` experiment's dynamics) from one init scheme, under one
reduced flow (`flow`: `WeightFlow()`, gradient flow on the attention weights, by default; or
`EuclideanFlow()`); SGD steps of `dt` on the flow's clock (for the weights' flow: the full
model's steps × learning rate). Records the flow's population loss (ICL normalisation ℓ/n for
the weights' flow, ℓ for the Euclidean one); per member, whether the heads allocate the tasks
at the end (no outcome, NaN, while the member is still in warm-up at the horizon, as in
`task-allocation`, or diverged), whether it stalled, left warm-up and settled, the warm-up
end, emergence end and convergence time, and the divergence flag. With `history = True` it
also records the whole state (series `omega` and `mu`, one value per head and task at each
record)."""

from typing import ClassVar

import jax.numpy as jnp
import numpy as np

from .. import _validation as check
from .._attention._analysis import detect_phases, task_allocation
from .._attention._init_schemes import INIT_SCHEMES, AbstractInitScheme, RandomPositive
from .._attention._reduced_flows import REDUCED_FLOWS, AbstractReducedFlow, WeightFlow
from .._attention._settled import Settled
from .._sweeps._outcome import outcome
from .._sweeps._study import AbstractStudy, setting
from .._tasks._regression import disjoint_blocks
from .._train._optimizers import sgd


class ReducedAllocation(AbstractStudy):
    """reduced (Ω, M) dynamics of multi-head softmax attention on disjoint tasks (SGD of `dt`)"""

    d: int = setting(50, "input dimension, split into n_tasks disjoint blocks", static=True)
    n_tasks: int = setting(3, "regression tasks n (one block each)", static=True)
    heads: int = setting(3, "head count H", static=True)
    context_len: int = setting(100, "context length L of the reduced loss")
    scheme: AbstractInitScheme = setting(
        RandomPositive(), "init scheme: balanced, random-positive, random-sign, chen-code"
    )
    flow: AbstractReducedFlow = setting(
        WeightFlow(),
        "reduced flow: weights (gradient flow on the attention weights, plain SGD's clock) or "
        "euclidean (gradient flow of ℓ on (Ω, M))",
    )
    init_scale: float = setting(1e-3, "init scale s of ω, μ")
    horizon: float = setting(1000.0, "the flow's time to run to")
    dt: float = setting(0.25, "Euler step (for the weights' flow: the SGD learning rate)")
    n_records: int = setting(40, "records per run (must divide the steps)", static=True)
    history: bool = setting(False, "also record the whole (Ω, M) history", static=True)
    stop_tol: float = setting(
        0.0,
        "stop a member at a strict local minimum with under this fraction of its loss left to "
        "gain (its later records hold its state; 0: every member to the horizon)",
    )

    registry_name: ClassVar[str] = "reduced-allocation"
    member_axes: ClassVar[tuple[str, ...]] = ("init_scale",)
    variants: ClassVar[dict] = {"scheme": INIT_SCHEMES, "flow": REDUCED_FLOWS}
    time_units: ClassVar[str] = "steps × dt (the flow's own clock)"
    series_dims: ClassVar[dict] = {"omega": ("head", "task"), "mu": ("head", "task")}
    meanings: ClassVar[dict[str, str]] = {
        "success": "1 = the heads allocate the tasks, 0 = they do not, NaN = no outcome: still "
        "in warm-up at the horizon (see left_warmup), diverged, or not run yet",
        "stalled": "1 = not allocated, with a dead head and a live head split between tasks, "
        "0 = not stalled, NaN = no outcome (as for success)",
        "left_warmup": "1 = the loss left its warm-up plateau, 0 = still on it at the horizon, "
        "NaN = diverged or not run",
        "settled": "1 = the loss is flat at the horizon, 0 = still moving, NaN = diverged or "
        "not run",
        "warmup_end": "time the loss fell by 10% of what can be learned; NaN = never, diverged "
        "or not run",
        "emergence_end": "time of 90% of the total drop; NaN = not settled at the horizon, "
        "diverged or not run",
        "convergence": "time of 99% of the total drop; NaN as for emergence_end",
    }

    def __check_init__(self):
        for name in ("d", "n_tasks", "heads", "context_len", "n_records"):
            check.positive_int(name, getattr(self, name))
        disjoint_blocks(self.d, self.n_tasks)
        check.variant("scheme", self.scheme, AbstractInitScheme, INIT_SCHEMES)
        check.variant("flow", self.flow, AbstractReducedFlow, REDUCED_FLOWS)
        for name in ("init_scale", "horizon", "dt"):
            check.finite_positive(name, getattr(self, name))
        check.finite_nonnegative("stop_tol", self.stop_tol)
        check.one_of("history", self.history, (False, True))
        check.whole_record_blocks(
            "`horizon` / `dt`", self.horizon / self.dt, self.n_records, "`n_records`"
        )

    @property
    def block_sizes(self) -> tuple[int, ...]:
        return tuple(b - a for a, b in disjoint_blocks(self.d, self.n_tasks))

    def initial_model(self, values, key):
        width = self.d + self.n_tasks
        start = self.scheme(self.heads, self.n_tasks, values["init_scale"], width=width, key=key)
        return self.flow.state(start, self.block_sizes)

    def objective(self):
        return self.flow.objective(self.block_sizes, self.context_len)

    def optimizer(self):
        return sgd(self.dt)

    def schedule(self):
        steps = round(self.horizon / self.dt)
        return self.n_records, steps // self.n_records

    def time(self):
        n_records, record_every = self.schedule()
        return self.dt * record_every * np.arange(n_records)

    def observe(self):
        return (lambda state: state.spectral()) if self.history else None

    def stop(self):
        if not self.stop_tol:
            return None
        return Settled(self.objective(), self.stop_tol, self.horizon)

    def series(self, trajectory):
        out = {"loss": trajectory.loss}
        if self.history:
            out["omega"], out["mu"] = trajectory.observables
        return out

    def summarize(self, state, series):
        omega, mu = state.model.spectral()
        time = jnp.asarray(self.time(), series["loss"].dtype)
        phases = detect_phases(time, series["loss"])
        allocation = task_allocation(omega, mu)
        healthy = ~state.diverged
        # a member still on its plateau has no allocation outcome yet, not a failure
        decided = phases.left_warmup & healthy
        return {
            "success": outcome(allocation.success, decided),
            "stalled": outcome(allocation.stalled, decided),
            # a diverged member has no phases: NaN, not "still in warm-up"
            "left_warmup": outcome(phases.left_warmup, healthy),
            "settled": outcome(phases.settled, healthy),
            "warmup_end": outcome(phases.warmup_end, healthy),
            "emergence_end": outcome(phases.emergence_end, healthy),
            "convergence": outcome(phases.convergence, healthy),
            "diverged": state.diverged,
        }
