"""Study `full-allocation`: full factorized softmax attention (all weights) trained with Adam
on the sampled in-context loss of disjoint-task regression, `batch_size` prompts a step shared
by the members; noise std `context_noise` on the context labels.

`init = NormalWeights()` ("normal"): every weight i.i.d. N(0, init_scale²) (random signs); or an
init scheme of the reduced state, put into the weights through the decomposable ansatz (zero
off the ansatz). Records the mean training loss of each record's block; per member, whether
the heads allocate the tasks at the end, the final loss (mean of the last quarter of the
records), the warm-up end (NaN for a member that diverged) and the divergence flag.
"""

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
import optax

from .. import _validation as check
from .._attention._analysis import detect_phases, task_allocation
from .._attention._init_schemes import INIT_SCHEMES, AbstractWeightInit, NormalWeights
from .._attention._observables import semi_singular_values
from .._sweeps._outcome import outcome
from .._sweeps._study import AbstractStudy
from .._tasks._regression import MultiTaskRegression, disjoint_blocks
from .._train._objectives import ICLLoss


FULL_INITS = {"normal": NormalWeights(), **INIT_SCHEMES}


class FullAllocation(AbstractStudy):
    """full softmax attention (Adam, sampled prompts) on disjoint tasks"""

    d: int = eqx.field(static=True, default=9)
    n_tasks: int = eqx.field(static=True, default=3)
    heads: int = eqx.field(static=True, default=3)
    context_len: int = eqx.field(static=True, default=20)
    context_noise: float = 0.0
    batch_size: int = eqx.field(static=True, default=64)
    init: AbstractWeightInit = NormalWeights()
    init_scale: float = 0.1
    learning_rate: float = 0.01
    steps: int = eqx.field(static=True, default=1500)
    n_records: int = eqx.field(static=True, default=30)

    registry_name: ClassVar[str] = "full-allocation"
    member_axes: ClassVar[tuple[str, ...]] = ("init_scale", "learning_rate")
    meanings: ClassVar[dict[str, str]] = {
        "success": "1 = the heads allocate the tasks, 0 = they do not, NaN = diverged or not run"
    }
    variants: ClassVar[dict] = {"init": FULL_INITS}

    def __check_init__(self):
        for name in ("d", "n_tasks", "heads", "context_len", "batch_size", "steps", "n_records"):
            check.positive_int(name, getattr(self, name))
        disjoint_blocks(self.d, self.n_tasks)
        check.finite_nonnegative("context_noise", self.context_noise)
        check.variant("init", self.init, AbstractWeightInit, FULL_INITS)
        check.finite_positive("init_scale", self.init_scale)
        check.finite_positive("learning_rate", self.learning_rate)
        check.whole_record_blocks("`steps`", self.steps, self.n_records, "`n_records`")

    @property
    def blocks(self):
        return disjoint_blocks(self.d, self.n_tasks)

    def initial_model(self, values, key):
        return self.init.weights(self.heads, self.blocks, self.d, values["init_scale"], key=key)

    def objective(self):
        task = MultiTaskRegression(
            self.d, self.context_len, self.blocks, context_noise=self.context_noise
        )
        return ICLLoss(task, self.batch_size)

    def optimizer(self):
        return optax.inject_hyperparams(optax.adam)(learning_rate=self.learning_rate)

    def schedule(self):
        return self.n_records, self.steps // self.n_records

    def summarize(self, state, series):
        omega, mu = semi_singular_values(state.model, self.blocks)
        loss = series["loss"]
        tail = max(1, loss.shape[0] // 4)
        time = jnp.asarray(self.time(), loss.dtype)
        healthy = ~state.diverged
        return {
            "success": outcome(task_allocation(omega, mu).success, healthy),
            "final_loss": outcome(loss[-tail:].mean(), healthy),
            # sampled losses: a 9-record moving median before the phase detection
            "warmup_end": outcome(detect_phases(time, loss, window=9).warmup_end, healthy),
            "diverged": state.diverged,
        }
