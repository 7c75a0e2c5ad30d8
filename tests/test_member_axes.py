"""Member axes reach the computation whatever the study does with them: a plain Optax
optimizer built from a member-axis field trains each member at its own value, and a member
axis that nothing reads is refused before the sweep starts."""

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import jaxicl


class Point(eqx.Module):
    w: jnp.ndarray


class PlainOptax(jaxicl.AbstractStudy):
    """‖w − 1‖² from w₀ ~ N(0, I), by a plain Optax optimizer built from `learning_rate`."""

    method: str = eqx.field(static=True, default="sgd")
    learning_rate: float = 0.1
    unused: float = 0.0
    objective_scale: float = 1.0

    member_axes: ClassVar[tuple[str, ...]] = ("learning_rate", "unused", "objective_scale")

    def initial_model(self, values, key):
        return Point(jr.normal(key, (3,)))

    def objective(self):
        # read here, the value is the group's (objectives are shared by a call's members)
        return lambda model, key: self.objective_scale * jnp.sum((model.w - 1.0) ** 2)

    def optimizer(self):
        return getattr(optax, self.method)(self.learning_rate)

    def schedule(self):
        return 4, 5


@pytest.mark.parametrize("method", ["sgd", "adam"])
def test_plain_optax_rates_on_a_member_axis_equal_separate_runs(method):
    rates = [0.01, 0.05, 0.2]
    together = jaxicl.sweep(PlainOptax(method=method), grid={"learning_rate": rates}, seeds=2)
    losses = together["loss"].values
    assert not np.allclose(losses[0], losses[-1])  # the rates made a difference
    for i, rate in enumerate(rates):
        alone = jaxicl.sweep(PlainOptax(method=method, learning_rate=rate), seeds=2)
        np.testing.assert_allclose(losses[i], alone["loss"].values, rtol=1e-6)


@pytest.mark.parametrize("axis", ["unused", "objective_scale"])
def test_a_member_axis_nothing_reads_per_member_is_refused(axis):
    with pytest.raises(ValueError, match=f"`grid.{axis}` is a member axis of PlainOptax"):
        jaxicl.sweep(PlainOptax(), grid={axis: [1.0, 2.0]}, seeds=1)
