"""Compaction: a sweep trains only its live members once others are frozen for good (diverged),
and stores exactly what training every member stores."""

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from jaxicl import (
    ICLLoss,
    Members,
    MultiTaskRegression,
    RandomPositive,
    Record,
    ReducedAllocation,
    disjoint_blocks,
    init_ensemble_state,
    sweep,
    train_ensemble_steps,
)
from jaxicl._attention._reduced_flows import REDUCED_FLOWS
from jaxicl._sweeps import _compaction as compaction, _group as group_module
from jaxicl._train._state import Trajectory


class ChunkedAllocation(ReducedAllocation):
    """Members mapped 20 at a time: a unit compacts only when mapped in whole chunks."""

    member_chunk: ClassVar[int] = 20


# init scales from healthy (1e-3) to the edge of the expansion (ω near 1/√2 diverges within a
# few steps) and beyond it (NaN at the first step)
STUDY = ChunkedAllocation(d=9, horizon=4.0, dt=0.25, n_records=8, scheme=RandomPositive())
GRID = {"heads": [2, 3], "init_scale": [1e-3, 0.55, 0.6, 0.9]}


class StoppingAllocation(ChunkedAllocation):
    """A user's own rule: a member whose loss is under 0.9 is final (stopped)."""

    def stop(self):
        objective = self.objective()
        return lambda model: objective.evaluate(model, None) < 0.9


# members that stop at several records (0.2, 0.3), diverge (0.55, 0.9) or neither
STOPPING = StoppingAllocation(d=9, horizon=4.0, dt=0.25, n_records=8, scheme=RandomPositive())
STOPPING_GRID = {"heads": [2, 3], "init_scale": [1e-3, 0.2, 0.3, 0.9]}


def _sweep(store, monkeypatch, *, compact: bool, study=STUDY, grid=GRID):
    """The sweep's dataset and the member count of every training call it made."""
    calls = []
    real_train = group_module.Group._train

    def counting_train(self, states, n_records, chunk):
        calls.append((int(np.asarray(states.step).size), n_records))
        return real_train(self, states, n_records, chunk)

    with monkeypatch.context() as patch:
        patch.setattr(group_module.Group, "_train", counting_train)
        if not compact:
            patch.setattr(compaction, "deterministic", lambda objective: False)
        data = sweep(
            study,
            store=store,
            seeds=40,
            grid=grid,
            members_per_call=160,
            chunk_records=2,
            progress=False,
        )
    return data, calls


def test_compacted_sweep_stores_the_same_bits_and_trains_fewer_members(tmp_path, monkeypatch):
    compacted, calls = _sweep(tmp_path / "compacted", monkeypatch, compact=True)
    whole, whole_calls = _sweep(tmp_path / "whole", monkeypatch, compact=False)
    diverged = np.asarray(whole["diverged"])
    # the grid must have both kinds, and members that diverge during a run, not only at step 0
    assert 0 < np.mean(diverged == 1) < 1
    loss = np.asarray(whole["loss"])
    assert np.isfinite(loss[..., 0]).any() and (diverged == 1).any()
    assert (np.isfinite(loss[..., 0]) & (diverged == 1)).any()
    for name in whole.data_vars:
        np.testing.assert_array_equal(
            np.asarray(compacted[name]), np.asarray(whole[name]), err_msg=name
        )
    # every call trains all 160 members of a unit without compaction; with it, the chunks after
    # the first leave the frozen ones out (padded to eighths of the unit)
    assert {m for m, _ in whole_calls} == {160}
    trained = sum(m * r for m, r in calls)
    assert trained < 0.8 * sum(m * r for m, r in whole_calls), calls
    assert all(m % 20 == 0 for m, _ in calls), calls


def test_stopped_members_are_not_trained_and_store_the_same_bits(tmp_path, monkeypatch):
    compacted, calls = _sweep(
        tmp_path / "compacted", monkeypatch, compact=True, study=STOPPING, grid=STOPPING_GRID
    )
    whole, whole_calls = _sweep(
        tmp_path / "whole", monkeypatch, compact=False, study=STOPPING, grid=STOPPING_GRID
    )
    for name in whole.data_vars:
        np.testing.assert_array_equal(
            np.asarray(compacted[name]), np.asarray(whole[name]), err_msg=name
        )
    stopped = np.asarray(whole["stopped"]) == 1
    loss = np.asarray(whole["loss"])
    below = loss < 0.9
    # a member stops at its first record under 0.9 and repeats that record to the end
    assert np.array_equal(stopped, below.any(axis=-1))
    first = np.argmax(below, axis=-1)
    assert len(np.unique(first[stopped])) >= 3, np.unique(first[stopped])
    held = np.take_along_axis(loss, first[..., None], axis=-1)
    after = np.arange(loss.shape[-1]) >= first[..., None]
    assert np.all((loss == held)[after & stopped[..., None]])
    assert not np.any(loss[~after & stopped[..., None]] < 0.9)
    assert not (stopped & (np.asarray(whole["diverged"]) == 1)).any()
    trained = sum(m * r for m, r in calls)
    assert trained < 0.8 * sum(m * r for m, r in whole_calls), calls


@pytest.mark.slow  # three sweeps
def test_a_resumed_sweep_with_compaction_equals_the_whole_one(tmp_path, monkeypatch):
    """Killed mid-unit, the rerun resumes from the checkpoint without knowing which members
    were frozen (it trains every member for one chunk, then compacts again): same bits."""
    from jaxicl._sweeps import _runner as runner

    real_write = runner.store_io.write_chunk
    writes = []

    def write_then_die(*args, **kwargs):
        real_write(*args, **kwargs)
        writes.append(1)
        if len(writes) == 6:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(runner.store_io, "write_chunk", write_then_die)
        with pytest.raises(KeyboardInterrupt):
            _sweep(tmp_path / "store", monkeypatch, compact=True)
    resumed, _ = _sweep(tmp_path / "store", monkeypatch, compact=True)
    reference, _ = _sweep(tmp_path / "whole", monkeypatch, compact=False)
    for name in reference.data_vars:
        np.testing.assert_array_equal(
            np.asarray(resumed[name]), np.asarray(reference[name]), err_msg=name
        )


def test_only_objectives_that_draw_nothing_allow_repeating_records():
    task = MultiTaskRegression(6, 8, disjoint_blocks(6, 2))
    assert not compaction.deterministic(ICLLoss(task, batch_size=4))
    assert not compaction.deterministic(lambda model, key: 0.0)
    assert compaction.deterministic(STUDY.objective())


@pytest.mark.parametrize(
    "n_live, n_members, n_devices, chunk, size",
    [
        (1, 160, 1, 20, 20),  # an eighth of the unit
        (21, 160, 1, 20, 40),
        (150, 160, 1, 20, 160),  # saving under an eighth: the whole unit
        (1, 160, 2, 20, 40),  # a whole chunk a device
        (1, 160, 1, 8, 24),  # an eighth of the unit in whole chunks
        (3, 12, 1, 4, 8),  # at least JOINT_LOSS_MEMBERS a device
        (1, 160, 1, None, 160),  # all members at once: one shape only
        (1, 150, 1, 20, 150),  # a remainder chunk of another shape
        (1, 160, 1, 160, 160),
    ],
)
def test_live_counts_are_whole_chunks_of_few_sizes(n_live, n_members, n_devices, chunk, size):
    assert compaction.live_size(n_live, n_members, n_devices, chunk) == size


@pytest.mark.parametrize("flow", ["weights", "euclidean"])
def test_members_carry_the_same_bits_in_fewer_chunks_of_one_shape(flow):
    """What compaction relies on: a member's recorded losses and state are the same bits when
    fewer chunks of the same shape share the call. XLA's CPU backend sums a reduction over 32
    KiB in another order: chunks of 160 members are over that size in the reduced loss, and 16
    steps a record of 480 members over it and of 160 under it, were the record's mean loss a
    reduction (it once was, and differed in the last bit)."""
    study = ReducedAllocation(
        d=9, horizon=2.0, dt=0.05, n_records=4, flow=REDUCED_FLOWS[flow], scheme=RandomPositive()
    )
    models = eqx.filter_vmap(lambda k: study.initial_model({"heads": 3, "init_scale": 0.1}, k))(
        jr.split(jr.key(1), 480)
    )
    optimizer = study.optimizer()

    def train(count):
        states = init_ensemble_state(jax.tree_util.tree_map(lambda x: x[:count], models), optimizer)
        return train_ensemble_steps(
            states,
            study.objective(),
            optimizer,
            steps=64,
            key=jr.key(2),
            record=Record(every=16),
            members=Members(chunk=160, shard=False),
        )

    whole_states, whole = train(480)
    assert bool(jnp.all(jnp.isfinite(whole.loss)))
    for count in (160, 320):
        states, trajectory = train(count)
        for name in ("loss", "loss_mean"):
            got, want = getattr(trajectory, name), getattr(whole, name)[:count]
            assert bool(jnp.all(got == want)), (count, name)
        leaves = zip(
            jax.tree_util.tree_leaves(states.model), jax.tree_util.tree_leaves(whole_states.model)
        )
        for got, want in leaves:
            assert bool(jnp.all(got == want[:count])), count


def test_repeated_records_move_only_the_step():
    last = Trajectory(
        step=jnp.array([40, 40]),
        time=jnp.array([1.5, 2.0]),
        loss=jnp.array([0.3, jnp.nan]),
        loss_mean=jnp.array([0.3, jnp.nan]),
        diverged=jnp.array([True, False]),
        observables=(jnp.ones((2, 3)),),
        stopped=jnp.array([False, True]),
    )
    out = compaction.repeated(last, 3, 10)
    np.testing.assert_array_equal(out.step, [[50, 60, 70]] * 2)
    np.testing.assert_array_equal(out.time, [[1.5] * 3, [2.0] * 3])
    assert out.observables[0].shape == (2, 3, 3)
