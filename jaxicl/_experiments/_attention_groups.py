"""The head-count groups of the attention experiments (`paired-heads`, `overlapping-tasks`):
one sweep of `AttentionRegression` per head count, streamed into a store under `sweeps/`, so a
killed run resumes at the first step chunk it had not stored and finishes with the same
numbers; the trained models are rebuilt from each store's final weights.
"""

import dataclasses
from typing import ClassVar

import jax

from .. import _validation as check
from .._host._memory import host_memory_bytes
from .._studies._attention_regression import AttentionRegression, trained_models
from .._sweeps._outcome import flag
from .._sweeps._runner import sweep
from ._experiment import ExperimentConfig, setting


# help of the settings whose defaults differ between the experiments
CONTEXT_LEN = "context length L (examples per prompt)"
HEADS = "head counts H, comma-separated (one group each)"
N_MEMBERS = "ensemble members (random inits) per head count"


STUDY_HELP = "each head count's study"


def group_study(steps: int) -> AttentionRegression:
    """The study of every head count (its task and heads set per group), recorded every 50
    steps."""
    return AttentionRegression(steps=steps, n_records=steps // 50)


@dataclasses.dataclass(frozen=True)
class AttentionTraining(ExperimentConfig):
    """The settings of the attention-group experiments with the same defaults in each (an
    experiment's configuration adds its own and holds its `study`: Adam's `learning_rate`,
    `batch_size`, `init_scale`, `steps` and `n_records` are its settings)."""

    noise_var: float = setting(0.1, "label noise variance σ² (context and query)")
    chunk_steps: int = setting(500, "steps per checkpointed chunk (a kill loses at most one)")
    eval_prompts: int = setting(4096, "prompts of the Monte Carlo population loss")
    seed: int = setting(0, "root random seed, in [0, 2**63)")

    # each group's task (built from the experiment's settings) and head count
    varied: ClassVar[tuple[str, ...]] = ("task", "heads")

    @property
    def record_every(self) -> int:
        """Steps between records."""
        return self.study.steps // self.study.n_records


def train_group(config, task, n_heads: int, out_dir, *, progress, on_chunk):
    """Train (or resume) `config.n_members` random inits with `n_heads` heads on `task`.

    `config.study` (Adam, fresh prompts each step shared by the members) for its
    steps in chunks of `config.chunk_steps`, each stored in
    `out_dir/sweeps/H{n_heads}` (keys from `config.seed`, as every sweep derives them).
    `on_chunk(n_heads, steps_done)` is called after each stored chunk.

    **Returns:** `(models, records)`: the stacked trained models and, per member, the records
    every `config.record_every` steps (`step`, block-mean `loss_mean`, (ω, μ) of shape
    (H, n_tasks), `diverged`).
    """
    study = dataclasses.replace(config.study, task=task, heads=n_heads)
    chunk_records = config.chunk_steps // config.record_every
    report = None
    if on_chunk is not None:
        report = lambda unit, chunk: on_chunk(n_heads, (chunk + 1) * config.chunk_steps)  # noqa: E731
    dataset = sweep(
        study,
        seeds=config.n_members,
        store=out_dir / "sweeps" / f"H{n_heads}",
        root_seed=config.seed,
        members_per_call=config.n_members,
        chunk_records=chunk_records,
        progress=progress,
        on_chunk=report,
    ).load()
    records = {
        "step": dataset["time"].values,
        "loss_mean": dataset["loss"].values,
        "omega": dataset["omega"].values,
        "mu": dataset["mu"].values,
        "diverged": flag(dataset["diverged"]),
    }
    return trained_models(dataset), records


def check_training_config(config) -> None:
    """Validate the fields `train_group` reads (and `heads`, `noise_var`, `eval_prompts`),
    naming the field, before anything compiles (the study validates its own)."""
    config.check_studies()
    for name in ("n_members", "chunk_steps", "eval_prompts"):
        check.positive_int(name, getattr(config, name))
    check.finite_nonnegative("noise_var", config.noise_var)
    check.seed("seed", config.seed)
    if not config.heads:
        raise ValueError("`heads` must list at least one head count, got ().")
    for h in config.heads:
        check.positive_int("heads", h)
    check.distinct("heads", config.heads)
    steps = config.study.steps
    if config.chunk_steps % config.record_every or steps % config.chunk_steps:
        raise ValueError(
            f"`chunk_steps` ({config.chunk_steps}) must be a multiple of the steps between "
            f"records ({config.record_every} = steps / n_records) and divide `steps` ({steps})."
        )
    _check_evaluation_memory(config)


# XLA's temporaries of `population_losses` per member, prompt, head and context position, in
# units of one float: 2.07–2.14 measured (memory analysis; 1–8 heads, L 40–100, d 5–20)
_EVALUATION_FLOATS = 2.2


# members evaluated at once use at most this much memory (the rest wait in a loop)
_EVALUATION_BUDGET = 2**30


def _member_evaluation_bytes(n_prompts: int, n_heads: int, length: int) -> float:
    itemsize = 8 if jax.config.jax_enable_x64 else 4
    return _EVALUATION_FLOATS * n_prompts * n_heads * length * itemsize


def evaluation_members(config, n_heads: int, length: int) -> int:
    """How many members `population_losses` evaluates at once at context length `length`."""
    per_member = _member_evaluation_bytes(config.eval_prompts, n_heads, length)
    return int(max(1, min(config.n_members, _EVALUATION_BUDGET // per_member)))


def _check_evaluation_memory(config) -> None:
    """Refuse, before anything trains, an evaluation that cannot fit in this machine's memory
    even one member at a time: its scores on `eval_prompts` prompts at the longest evaluated
    context length."""
    length = max((config.context_len, *getattr(config, "eval_lengths", ())))
    needed = _member_evaluation_bytes(config.eval_prompts, max(config.heads), length)
    available = host_memory_bytes()
    if needed > 0.5 * available:
        raise ValueError(
            f"`eval_prompts` = {config.eval_prompts}: evaluating one member at L = {length} with "
            f"{max(config.heads)} heads needs about {needed / 2**30:.1f} GiB, more than half "
            f"of this machine's {available / 2**30:.1f} GiB; lower `eval_prompts`."
        )
