"""Objectives of the feature-attention model for the trainer: n = ∞ losses over a fixed input
sample or fresh batches, and the finite-n in-context loss."""

import dataclasses
from typing import NamedTuple

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .. import _validation as check
from .._tasks._prompt import Prompt
from .._train._objectives import AbstractObjective, ICLLoss
from ._flow import AbstractAttentionTreatment, OptimalAttention
from ._model import FeatureAttention
from ._task import FeatureRegression


class MeanFieldLoss(AbstractObjective):
    """The n = ∞ loss: L(µ) (`attention=OptimalAttention()`: W at its closed-form optimum, the
    two-timescale limit) or L_TF(µ, W) (`JointAttention()`: W is a trained parameter).

    Expectations over x are sample means over `inputs` (a fixed sample: deterministic flow), or
    over `batch_size` fresh inputs per step when `inputs` is None.
    """

    task: FeatureRegression
    attention: AbstractAttentionTreatment
    inputs: Float[Array, "n d"] | None
    targets: Float[Array, "n k"] | None
    batch_size: int | None = eqx.field(static=True)
    jitter: float | None = eqx.field(static=True)

    def __init__(
        self,
        task: FeatureRegression,
        *,
        attention: AbstractAttentionTreatment = OptimalAttention(),
        inputs: Float[Array, "n d"] | None = None,
        batch_size: int | None = None,
        jitter: float | None = None,
    ):
        self.task = task
        self.attention = check.variant(
            "attention", attention, AbstractAttentionTreatment, ("static", "attention")
        )
        if (inputs is None) == (batch_size is None):
            raise ValueError("Give exactly one of `inputs` (a fixed sample) and `batch_size`.")
        if inputs is not None and (inputs.ndim != 2 or inputs.shape[1] != task.d):
            raise ValueError(f"`inputs` must have shape (n, d={task.d}), got {inputs.shape}.")
        self.inputs = inputs
        self.targets = None if inputs is None else task.target_features(inputs)
        self.batch_size = (
            None if batch_size is None else check.positive_int("batch_size", batch_size)
        )
        self.jitter = None if jitter is None else check.finite_nonnegative("jitter", jitter)

    def draw(self, key: PRNGKeyArray) -> tuple[Float[Array, "n d"], Float[Array, "n k"]]:
        if self.inputs is not None:
            return self.inputs, self.targets
        x = self.task.inputs(self.batch_size, key=key)
        return x, self.task.target_features(x)

    def evaluate(self, model: FeatureAttention, data) -> Float[Array, ""]:
        x, f = data
        return self.attention.loss(model, x, f, self.jitter)


class FeatureICLLoss(AbstractObjective):
    """The finite-n in-context loss L^n = ½ E(ŷ_q − y_q)² over a fresh batch of prompts: half
    the ICL loss of `ICLLoss`, so that it is on the scale of L_TF. For a fixed model,
    L^n = L_TF + ½σ² + O(1/n).
    """

    icl: ICLLoss

    def __init__(self, task: FeatureRegression, batch_size: int):
        self.icl = ICLLoss(task, batch_size)

    def draw(self, key: PRNGKeyArray) -> Prompt:
        return self.icl.draw(key)

    def evaluate(self, model: FeatureAttention, data: Prompt) -> Float[Array, ""]:
        return 0.5 * self.icl.evaluate(model, data)


class InContextBatch(NamedTuple):
    """One step's prompts, and every input they hold (contexts and queries, flattened) with its
    target features: the sample on which the attention treatment (`StaticAttention`,
    `AttentionFlow`) and the other moves read the measure's moments (as `data[0]`, `data[1]`)."""

    x: Float[Array, "m d"]
    f: Float[Array, "m k"]
    prompts: Prompt


class InContextFeatureLoss(AbstractObjective):
    """Training in context: the finite-n loss L^n (`FeatureICLLoss`) on `batch_size` fresh
    prompts of `context_len` token pairs each step. The step's data is an `InContextBatch`, so
    W's treatment after the step sees the same inputs the particles were trained on."""

    icl: FeatureICLLoss

    def __init__(self, task: FeatureRegression, context_len: int, batch_size: int):
        check.positive_int("context_len", context_len)
        self.icl = FeatureICLLoss(dataclasses.replace(task, context_len=context_len), batch_size)

    def draw(self, key: PRNGKeyArray) -> InContextBatch:
        prompts = self.icl.draw(key)
        x = jnp.concatenate([prompts.x.reshape(-1, prompts.x.shape[-1]), prompts.query_x])
        return InContextBatch(x, self.icl.icl.task.target_features(x), prompts)

    def evaluate(self, model: FeatureAttention, data: InContextBatch) -> Float[Array, ""]:
        return self.icl.evaluate(model, data.prompts)
