"""Objectives: anything mapping `(model, key=...)` to a scalar loss. One trainer drives them all."""

import abc
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from .. import _validation as check
from .._attention._models import AbstractAttention
from .._tasks._prompt import Prompt
from .._tasks._regression import AbstractTask, sample_prompts


def squared_error(prediction: Float[Array, " n_out"], prompt: Prompt) -> Float[Array, ""]:
    """Squared error on the query, averaged over the outputs (tasks)."""
    return jnp.mean((prediction - prompt.query_y) ** 2)


class AbstractObjective(eqx.Module):
    """A loss whose randomness is a separate draw: `loss(model, key=k) = evaluate(model, draw(k))`.

    Splitting the draw from the evaluation lets an ensemble draw shared data once per step and
    evaluate it for many members. Any plain callable `(model, *, key) -> scalar` also works as
    an objective; it is simply evaluated member by member.
    """

    @abc.abstractmethod
    def draw(self, key: PRNGKeyArray) -> PyTree:
        """The random data of one evaluation (e.g. a batch of prompts)."""

    @abc.abstractmethod
    def evaluate(self, model: PyTree, data: PyTree) -> Float[Array, ""]:
        """The loss of `model` on `data`."""

    def evaluate_members(self, models: PyTree, data: PyTree) -> Float[Array, " m"]:
        """The loss of each of the stacked `models` (leading member axis) on the same `data`.

        Member by member (vmap) unless overridden; an override must be the same function, so
        that the trainer may use it for shared data (its gradient is taken of the sum, which
        gives each member its own gradient since members do not interact).
        """
        evaluate = lambda model: self.evaluate(model, data)  # noqa: E731
        return eqx.filter_vmap(evaluate)(models)

    def __call__(self, model: PyTree, *, key: PRNGKeyArray) -> Float[Array, ""]:
        return self.evaluate(model, self.draw(key))


class ICLLoss(AbstractObjective):
    """The sampled in-context loss: mean squared query error over a fresh batch of prompts.

    `loss(model, key=k)` draws `batch_size` prompts from `task` with `k`, predicts each with
    `model` (a function of one prompt) and averages the squared error over prompts and outputs.
    """

    task: AbstractTask
    batch_size: int = eqx.field(static=True)

    def __init__(self, task: AbstractTask, batch_size: int):
        self.task = task
        self.batch_size = check.positive_int("batch_size", batch_size)

    def draw(self, key: PRNGKeyArray) -> Prompt:
        return sample_prompts(self.task, self.batch_size, key=key)

    def evaluate(self, model: Callable[[Prompt], Array], data: Prompt) -> Float[Array, ""]:
        return jnp.mean(jax.vmap(lambda p: squared_error(model(p), p))(data))

    def evaluate_members(self, models: PyTree, data: Prompt) -> Float[Array, " m"]:
        """Attention models through their `predict_members` (the built-in ones: every member
        at once, `shared_prompt_predictions`), any other model member by member."""
        if not isinstance(models, AbstractAttention):
            return super().evaluate_members(models, data)
        return jnp.mean((models.predict_members(data) - data.query_y[None]) ** 2, axis=(1, 2))


def monte_carlo_loss(
    predict: Callable[[Prompt], Array], task: AbstractTask, n_prompts: int, *, key: PRNGKeyArray
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """Population loss of a predictor by Monte Carlo: returns (estimate, standard error).

    The loss is the squared query error averaged over outputs, as in `ICLLoss`.
    """
    check.positive_int("n_prompts", n_prompts)
    prompts = sample_prompts(task, n_prompts, key=key)
    errors = jax.vmap(lambda p: squared_error(predict(p), p))(prompts)
    return errors.mean(), errors.std(ddof=1) / jnp.sqrt(n_prompts)


@eqx.filter_jit
def population_losses(models, task, n_prompts: int, key, members_at_once: int | None = None):
    """Each stacked member's population loss on `task` by Monte Carlo, all members on the
    same prompts (paired comparisons); returns `(estimates, standard_errors)`.
    `members_at_once`: members evaluated together (the rest in a loop, so memory is bounded
    by that many members' scores); None: all at once."""
    dynamic, static = eqx.partition(models, eqx.is_array)

    def per_member(member):
        return monte_carlo_loss(eqx.combine(member, static), task, n_prompts, key=key)

    n_members = jax.tree.leaves(dynamic)[0].shape[0]
    if members_at_once is None or members_at_once >= n_members:
        return jax.vmap(per_member)(dynamic)
    return jax.lax.map(per_member, dynamic, batch_size=members_at_once)
