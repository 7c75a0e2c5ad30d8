"""The `reduced-allocation` stop rule (`Settled`): it stops a member only at a strict minimum in
the coordinates its flow moves, out of warm-up, with under `tol` of its loss left to gain; and
a sweep with it stores the summaries of a sweep without it."""

import equinox as eqx
import jax
import jax.random as jr
import numpy as np
import pytest

from jaxicl import ReducedAllocation, sweep
from jaxicl._attention._settled import Settled
from jaxicl._sweeps._group import Group


HORIZON, RECORDS = 2000.0, 40


@pytest.fixture(scope="module")
def trained():
    """32 members of H = 3 heads (weights' flow, balanced random-positive starts) at each of
    40 records to t = 2000, when every one has settled (as a saddle stall or allocated)."""
    study = ReducedAllocation(heads=3, horizon=HORIZON, n_records=RECORDS)
    group = Group(study, init_key=jr.key(0), data_key=jr.key(1))
    states = group.init({"init_scale": np.full(32, study.init_scale)}, np.arange(32))
    models = []
    for _ in range(RECORDS):
        models.append(states.model)
        states, _ = group._train(states, 1, None)
    models.append(states.model)
    return study, models


def _rule_at_records(study, models, tol):
    rule = eqx.filter_jit(eqx.filter_vmap(Settled(study.objective(), tol, study.horizon)))
    return np.stack([np.asarray(rule(model)) for model in models], axis=1)


def test_the_rule_stops_members_whose_loss_has_at_most_about_tol_left(trained):
    """As tol shrinks, members stop later and what their loss still falls by the end shrinks
    with it: at most 2 tol of the loss (the quadratic model's estimate, not a bound)."""
    study, models = trained
    loss = np.stack(
        [np.asarray(jax.vmap(study.objective().evaluate, (0, None))(m, None)) for m in models],
        axis=1,
    )
    first_stops = []
    for tol in (1e-3, 1e-4, 1e-5):
        stops = _rule_at_records(study, models, tol)
        # once settled, settled at every later record: the member is at its minimum's basin
        first = np.where(stops.any(axis=1), stops.argmax(axis=1), stops.shape[1])
        assert all(stops[i, f:].all() for i, f in enumerate(first))
        stopped = first < stops.shape[1]
        assert stopped.mean() >= 0.5, tol
        fell = loss[np.arange(len(first)), np.minimum(first, len(models) - 1)] - loss[:, -1]
        assert np.all(fell[stopped] <= 2 * tol * loss[stopped, -1]), (tol, fell.max())
        first_stops.append(first)
    assert np.all(first_stops[0] <= first_stops[1]) and np.all(first_stops[1] <= first_stops[2])
    assert first_stops[0].mean() < first_stops[2].mean()


def test_warm_up_and_unbalanced_members_are_never_settled(trained):
    study, models = trained
    rule = eqx.filter_jit(eqx.filter_vmap(Settled(study.objective(), 1e-2, study.horizon)))
    assert not np.asarray(rule(models[0])).any()  # at the start: the warm-up plateau
    end = models[-1]
    assert np.asarray(rule(end)).all()
    # the same (Ω, M) off the balanced set: its o − v direction can still escape the stall
    scale = 1.0 + 1e-3
    unbalanced = eqx.tree_at(lambda m: (m.o, m.v), end, (end.o * scale, end.v / scale))
    assert not np.asarray(rule(unbalanced)).any()


def test_a_sweep_with_the_rule_stores_the_summaries_of_one_without(tmp_path):
    """Stopped members (every one here) keep every summary: allocation, stall, phases."""
    study = ReducedAllocation(heads=3, horizon=HORIZON, n_records=RECORDS)
    whole = sweep(study, seeds=32, progress=False)
    stopping = sweep(eqx.tree_at(lambda s: s.stop_tol, study, 1e-5), seeds=32, progress=False)
    stopped = np.asarray(stopping["stopped"]) == 1
    assert stopped.mean() > 0.9
    for name in whole.data_vars:
        if name == "loss":
            continue
        np.testing.assert_array_equal(
            np.asarray(stopping[name]), np.asarray(whole[name]), err_msg=name
        )
    held, trained_on = np.asarray(stopping["loss"]), np.asarray(whole["loss"])
    assert np.all(np.abs(held - trained_on) <= 2e-5 * trained_on)


def test_stop_tol_must_be_a_finite_fraction():
    with pytest.raises(ValueError, match="`stop_tol` must be a finite number >= 0"):
        ReducedAllocation(stop_tol=-1e-5)


def test_the_written_out_cholesky_factor_and_substitution():
    from jaxicl._attention._settled import _cholesky, _forward_substitution

    rng = np.random.default_rng(0)
    a = rng.normal(size=(9, 9))
    matrix = a @ a.T + 0.1 * np.eye(9)
    factor, positive = _cholesky(matrix)
    assert bool(positive)
    np.testing.assert_allclose(factor, np.linalg.cholesky(matrix), rtol=1e-12, atol=1e-12)
    b = rng.normal(size=9)
    np.testing.assert_allclose(
        _forward_substitution(factor, b), np.linalg.solve(np.linalg.cholesky(matrix), b), 1e-10
    )
    shifted = matrix - (np.linalg.eigvalsh(matrix)[0] + 1e-6) * np.eye(9)  # just indefinite
    assert not bool(_cholesky(shifted)[1])
