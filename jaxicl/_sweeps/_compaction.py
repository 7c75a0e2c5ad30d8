"""Compaction: members frozen for good stop costing a sweep, with its stored records unchanged.

A diverged member is frozen by the trainer: its model, optimizer state and time never change
again, only its step count; so is a member the study's `stop` rule declared final (stopped at a
record, frozen from that record's step on). Under a deterministic objective (one that draws no
data) every record it leaves after a whole frozen record block is the same as that block's,
apart from the step: its loss, mean loss and observables are the same function of the same
state. So between step chunks the runner trains only the members still live, and writes each
frozen member's records by repeating its last one, which it has seen computed. The stored
numbers are those of training every member (tests/test_compaction.py compares the stores bit for
bit).

Under fresh prompts a frozen member's recorded loss changes every step, so nothing can be
repeated: such studies train every member to the end, as before.

A live member's numbers must be the bits it has in the whole unit, and XLA computes them the
same way only at the same shape: its CPU backend (jaxlib 0.10) hands a reduction over 32 KiB to
a library kernel (YNNPACK) that sums in another order than its own loops (the reduced loss of
H = 3 heads and 3 tasks crossed that size between 148 and 152 members, and changed in its last
bit). Turning the kernel off made the reduced sweep 5× slower. So a compacting unit maps its
members in chunks of one shape (its `member_chunk`, resolved once for the whole unit), whole or
compacted, and live counts are padded to whole chunks, in steps of about an eighth of the unit
(a unit compiles at most a few programs) and at least a vector's worth of members a device. A
unit not mapped in whole chunks (all members at once, as on accelerators and for units of at
most 16 members a device, or with a remainder chunk) is not compacted.
For the same reason the trainer sums a record block's losses step after step in a loop, not
by a reduction (`_train/_step.py`).
"""

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np

from .._train._objectives import AbstractObjective
from .._train._state import TrainState, Trajectory
from .._train._step import JOINT_LOSS_MEMBERS


# live members are padded up to a multiple of this fraction of the unit (bounds the compiles)
SIZE_STEPS = 8


class FrozenRecords(NamedTuple):
    """For each member of a unit: whether it is frozen for good with a record to repeat
    (`frozen`), and that record (`last`: a `Trajectory` of one record per member)."""

    frozen: np.ndarray
    last: Trajectory


def deterministic(objective) -> bool:
    """Whether the objective draws no data, so a frozen member's loss never changes."""
    if not isinstance(objective, AbstractObjective):
        return False  # a plain `(model, key)` callable may use its key
    drawn = jax.eval_shape(objective.draw, jax.random.key(0))
    return not jtu.tree_leaves(drawn)


def frozen_after(diverged_before: np.ndarray, trajectory: Trajectory) -> FrozenRecords:
    """The members whose last record of this chunk repeats for ever: frozen during its whole
    block, i.e. diverged at the chunk's start or by the end of the record before the last, or
    stopped at the last record (a stop takes effect from the record's own step)."""
    flags = np.asarray(trajectory.diverged)
    frozen = np.asarray(diverged_before, bool) | np.asarray(trajectory.stopped)[:, -1]
    if flags.shape[1] >= 2:
        frozen |= flags[:, -2]
    last = jtu.tree_map(lambda x: x[:, -1], trajectory)
    return FrozenRecords(frozen=frozen, last=last)


def live_size(n_live: int, n_members: int, n_devices: int, chunk: int | None) -> int:
    """The padded count of live members to train: whole member chunks of the unit's shape
    (`chunk` a device), a multiple of about an eighth of the unit (so a unit compiles at most a
    few programs), at least `JOINT_LOSS_MEMBERS` a device so that members are evaluated as in
    the whole unit; `n_members` when that saves nothing, or when the unit's members are not
    mapped in whole chunks of one shape (all at once, or with a remainder): a member's numbers
    are the same bits only at the same shape."""
    local = n_members // n_devices
    if chunk is None or chunk >= local or local % chunk:
        return n_members
    step = -(-local // SIZE_STEPS)
    step = -(-step // chunk) * chunk
    fewest = -(-JOINT_LOSS_MEMBERS // step) * step
    size = max(-(-n_live // (step * n_devices)) * step, fewest)
    return min(size, local) * n_devices


def take(tree, index):
    return jtu.tree_map(lambda x: x[index], tree)


def repeated(last: Trajectory, n_records: int, record_every: int) -> Trajectory:
    """`n_records` more records of members frozen at `last`: the same record, the step moving
    on by `record_every` each."""
    ahead = record_every * jnp.arange(1, n_records + 1, dtype=last.step.dtype)[None, :]
    tiled = jtu.tree_map(lambda x: jnp.repeat(x[:, None], n_records, axis=1), last)
    return Trajectory(
        step=last.step[:, None] + ahead,
        time=tiled.time,
        loss=tiled.loss,
        loss_mean=tiled.loss_mean,
        diverged=tiled.diverged,
        observables=tiled.observables,
        stopped=tiled.stopped,
    )


def merge(whole, live_index: np.ndarray, trained, n_live: int):
    """`whole` with the rows `live_index[:n_live]` replaced by the first `n_live` of `trained`
    (the rest of `trained` is padding)."""
    rows = jnp.asarray(live_index[:n_live])
    return jtu.tree_map(lambda w, t: w.at[rows].set(t[:n_live]), whole, trained)


def advance_frozen(states: TrainState, steps: int) -> TrainState:
    """What training does to frozen members: their step count moves on, nothing else."""
    return eqx.tree_at(lambda s: s.step, states, states.step + steps)
