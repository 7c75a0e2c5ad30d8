"""The study: what one member of a sweep is, written once and run by `jaxicl.sweep`.

A study is a frozen Equinox Module whose fields are its settings. The runner builds one study
per group of the grid (a group changes any setting except the member axes) and, inside a
group, trains every member (member-axis values × seeds) in one compiled call. Like Diffrax's
solvers or Optax's transformations, a study only says what to compute; chunking, checkpoints,
devices, hosts, keys, the store and progress all belong to the runner.
"""

import abc
from typing import ClassVar

import equinox as eqx
import numpy as np
import optax
from jaxtyping import Array, PRNGKeyArray, PyTree

from .._train._state import TrainState, Trajectory


def setting(default, help: str, *, static: bool = False):
    """A setting with its default and the one line of help the command line prints for it: a
    study's field (`static=True` for one that sets shapes), or an experiment configuration's."""
    return eqx.field(default=default, static=static, metadata={"help": help})


class AbstractStudy(eqx.Module):
    """One member of a sweep: its initial model, objective, optimizer, records and summaries.

    Validate the settings in `__check_init__` (every error names the field, the value and what
    is allowed): the runner builds each group's study before anything compiles, so a bad grid
    value fails there.

    **Class variables** (override in a subclass):

    - `member_axes`: settings that may differ between members of one compiled call (numbers
      only). `initial_model` receives them as `values`, and `optimizer()` is built for each
      member with its own values in these fields (traced), so `optax.adam(self.learning_rate)`
      trains each member at its own rate. `objective`, `after_step` and `observe` are shared by
      a call's members: a swept member axis that nothing a member computes reads is refused
      before the sweep starts. Every other setting swept in a grid makes compiled groups.
    - `variants`: for settings whose values are Modules (e.g. an init scheme), the names the
      command line and sweep files use: `{field: {name: module}}`.
    - `registry_name`: a built-in study's name in sweep files and stored descriptions (None:
      its import path `module:Class`; a subclass does not inherit it).
    - `time_units`: what the record times count.
    - `float64`: the study needs `jax_enable_x64`.
    - `member_chunk`: members vectorized at once inside a call (as in `train_ensemble_steps`).
    - `shared_data`: every member of a call sees the same data at each step (True), or each
      member its own stream, chosen by its seed (False; as in `train_ensemble_steps`).
    - `series_dims`: for a series whose value at each record is an array (e.g. one value per
      head and task), the names of its dimensions after `time`: `{series: ("head", "task")}`.
      Every other series has one value per record.
    - `summary_dims`: the same for a summary whose value per member is an array (e.g. the
      final weights, `{"Q": ("head", "rank", "token")}`); every other summary is a scalar.
    - `meanings`: what the values of a series or summary mean, stored with it (e.g. what NaN
      stands for); boolean flags get "1 = true, 0 = false, NaN = not run yet".

    **Methods to implement:** `initial_model`, `objective`, `optimizer`, `schedule`; optionally
    `after_step`, `observe`, `stop`, `series`, `summarize`, `time`, `check_grid`.
    """

    member_axes: ClassVar[tuple[str, ...]] = ()
    variants: ClassVar[dict[str, dict[str, eqx.Module]]] = {}
    registry_name: ClassVar[str | None] = None
    time_units: ClassVar[str] = "optimizer steps"
    float64: ClassVar[bool] = False
    member_chunk: ClassVar[int | None | str] = "auto"
    shared_data: ClassVar[bool] = True
    series_dims: ClassVar[dict[str, tuple[str, ...]]] = {}
    summary_dims: ClassVar[dict[str, tuple[str, ...]]] = {}
    meanings: ClassVar[dict[str, str]] = {}

    @abc.abstractmethod
    def initial_model(self, values: dict[str, Array], key: PRNGKeyArray) -> PyTree:
        """One member's initial model from its member-axis `values` (scalars) and its key."""

    @abc.abstractmethod
    def objective(self):
        """The loss the optimizer minimizes: `(model, key) -> scalar` or an `AbstractObjective`
        (whose data every member of a call shares at each step)."""

    @abc.abstractmethod
    def optimizer(self) -> optax.GradientTransformation:
        """The optimizer of one member."""

    @abc.abstractmethod
    def schedule(self) -> tuple[int, int]:
        """`(n_records, record_every)`: the run is `n_records * record_every` optimizer steps,
        recorded before steps 0, r, 2r, ..."""

    def after_step(self):
        """An optional move after every optimizer step, `(model, data, step, key) -> model`."""
        return None

    def observe(self):
        """An optional function of one model, recorded every `record_every` steps (its values
        reach `series` as `trajectory.observables`)."""
        return None

    def stop(self):
        """An optional rule saying a member's outcome is final, `model -> bool`, checked at
        every record (`Record.stop`): the member is frozen from there on and its later records
        are its frozen state's (which a sweep under a deterministic objective does not
        compute again), and the runner adds the summary `stopped`. A rule must only fire where
        training on could not change what the study stores beyond what it accepts."""
        return None

    def series(self, trajectory: Trajectory) -> dict[str, Array]:
        """The per-record series stored for one member (each of shape `(n_records,)`, or
        `(n_records, *shape)` for one named in `series_dims`). By default the mean training loss
        over each record's block of steps."""
        return {"loss": trajectory.loss_mean}

    def summarize(self, state: TrainState, series: dict[str, Array]) -> dict[str, Array]:
        """Per-member values (scalars, or arrays named in `summary_dims`) from the final state
        and the member's whole series (traceable: the runner vmaps and compiles it). The runner
        always adds the divergence flag `diverged`, and `stopped` for a study with a `stop`
        rule."""
        return {"diverged": state.diverged}

    def time(self) -> np.ndarray:
        """The time coordinate of the records (in `time_units`); optimizer steps by default."""
        n_records, record_every = self.schedule()
        return record_every * np.arange(n_records)

    def check_grid(self, grid: dict[str, list]) -> None:
        """Refuse member-axis combinations one compiled call cannot run (naming `grid.NAME`)."""
