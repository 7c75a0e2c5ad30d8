"""Study `AttentionRegression`: factorized softmax attention from i.i.d. normal weights, trained
with Adam on the sampled in-context loss of a regression task (`batch_size` fresh prompts a
step, shared by the members).

Records each record block's mean training loss, the heads' (ω, μ) per task and the divergence
flag; per member, the final weights Q, K, V, O, so that an analysis can rebuild and evaluate
every trained model from the dataset alone (the `paired-heads` and `overlapping-tasks`
experiments do).
"""

from typing import ClassVar

import equinox as eqx
import jax
import optax

from .. import _validation as check
from .._attention._init import init_normal
from .._attention._models import FactorizedAttention
from .._attention._observables import semi_singular_values
from .._sweeps._study import AbstractStudy, setting
from .._tasks._regression import AbstractTask, LinearRegression
from .._train._objectives import ICLLoss


WEIGHTS = ("Q", "K", "V", "O")


class AttentionRegression(AbstractStudy):
    """factorized softmax attention (Adam, sampled prompts) on a regression task"""

    task: AbstractTask = setting(LinearRegression(5, 40), "the regression task")
    heads: int = setting(2, "head count H", static=True)
    batch_size: int = setting(256, "sampled prompts per step", static=True)
    init_scale: float = setting(0.1, "standard deviation of the initial weights (> 0)")
    learning_rate: float = setting(1e-3, "Adam learning rate")
    steps: int = setting(3000, "optimizer steps", static=True)
    n_records: int = setting(60, "records per run (must divide the steps)", static=True)

    member_axes: ClassVar[tuple[str, ...]] = ("init_scale", "learning_rate")
    series_dims: ClassVar[dict[str, tuple[str, ...]]] = {
        "omega": ("head", "task"),
        "mu": ("head", "task"),
    }
    summary_dims: ClassVar[dict[str, tuple[str, ...]]] = {
        "Q": ("head", "rank", "token"),
        "K": ("head", "rank", "token"),
        "V": ("head", "value", "token"),
        "O": ("head", "output", "value"),
    }
    meanings: ClassVar[dict[str, str]] = {
        "loss": "mean training loss over the record's block of steps",
        "diverged": "1 = the member's loss or update was not finite by the record's block end",
    }

    def __check_init__(self):
        if not isinstance(self.task, AbstractTask):
            raise ValueError(f"`task` must be an AbstractTask, got {type(self.task).__name__}.")
        for name in ("heads", "batch_size", "steps", "n_records"):
            check.positive_int(name, getattr(self, name))
        # At scale 0 every weight stays 0: no gradient moves it and the statistics are 0/0.
        check.finite_positive("init_scale", self.init_scale)
        check.finite_positive("learning_rate", self.learning_rate)
        check.whole_record_blocks("`steps`", self.steps, self.n_records, "`n_records`")

    def initial_model(self, values, key):
        unit = init_normal(
            d=self.task.d, n_out=self.task.n_out, n_heads=self.heads, scale=1.0, key=key
        )
        return jax.tree.map(lambda w: values["init_scale"] * w, unit)

    def objective(self):
        return ICLLoss(self.task, self.batch_size)

    def optimizer(self):
        return optax.inject_hyperparams(optax.adam)(learning_rate=self.learning_rate)

    def schedule(self):
        return self.n_records, self.steps // self.n_records

    def observe(self):
        blocks = self.task.blocks
        return lambda model: semi_singular_values(model, blocks)

    def series(self, trajectory):
        omega, mu = trajectory.observables
        return {
            "loss": trajectory.loss_mean,
            "omega": omega,
            "mu": mu,
            "diverged": trajectory.diverged,
        }

    def summarize(self, state, series):
        return {name: getattr(state.model, name) for name in WEIGHTS}


def trained_models(dataset) -> FactorizedAttention:
    """The stacked final models of a sweep of `AttentionRegression` whose only dimension left
    besides the weights' own is `seed`."""
    weights = {name: dataset[name].transpose("seed", ...).values for name in WEIGHTS}
    return eqx.filter_vmap(lambda w: FactorizedAttention(**w, kind="softmax"))(weights)
