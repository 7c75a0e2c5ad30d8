"""A researcher's own study, written against the public API only: gradient descent on the
quadratic ‖w − 1‖² from w₀ = init_scale · N(0, I). Its records have a closed form,
loss_t = ‖w₀ − 1‖² (1 − 2η)^(2t), so the runner's keys, per-member learning rates, chunks and
summaries can all be checked exactly. Sweep files name it `own_study:Quadratic`."""

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr

import jaxicl


class Point(eqx.Module):
    w: jnp.ndarray


class Quadratic(jaxicl.AbstractStudy):
    d: int = eqx.field(static=True, default=3)
    init_scale: float = 1.0
    learning_rate: float = 0.1
    steps: int = eqx.field(static=True, default=12)
    n_records: int = eqx.field(static=True, default=4)

    member_axes: ClassVar[tuple[str, ...]] = ("init_scale", "learning_rate")

    def __check_init__(self):
        if not (isinstance(self.d, int) and self.d > 0):
            raise ValueError(f"`d` must be a positive integer, got {self.d!r}.")

    def initial_model(self, values, key):
        return Point(values["init_scale"] * jr.normal(key, (self.d,)))

    def objective(self):
        return lambda model, key: jnp.sum((model.w - 1.0) ** 2)

    def optimizer(self):
        return jaxicl.sgd(self.learning_rate)

    def schedule(self):
        return self.n_records, self.steps // self.n_records

    def series(self, trajectory):
        return {"loss": trajectory.loss, "w0": trajectory.observables}

    def observe(self):
        return lambda model: model.w[0]

    def summarize(self, state, series):
        return {"final_w0": state.model.w[0], "converged": series["loss"][-1] < 1e-3}


def closed_form_loss(w0, learning_rate, record_steps):
    return jnp.sum((w0 - 1.0) ** 2) * (1 - 2 * learning_rate) ** (2 * record_steps)
