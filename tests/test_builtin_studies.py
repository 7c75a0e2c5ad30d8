"""Every built-in study stores what its member would give trained alone (an independent run
through the public API), with its own learning rate and init scale."""

import equinox as eqx
import jax
import jax.random as jr
import numpy as np
import optax
import pytest

from jaxicl import (
    FeatureLearning,
    FullAllocation,
    JointAttention,
    Record,
    ReducedAllocation,
    sweep,
)
from jaxicl._attention._init import init_normal
from jaxicl._attention._init_schemes import Balanced, RandomPositive, RandomSign
from jaxicl._attention._observables import semi_singular_values
from jaxicl._meanfield._loss import optimal_attention
from jaxicl._meanfield._model import init_feature_attention
from jaxicl._meanfield._solver import particle_solver
from jaxicl._meanfield._task import feature_regression
from jaxicl._studies._ansatz_dynamics import DYNAMICS, AnsatzDynamics
from jaxicl._studies._attention_regression import AttentionRegression, trained_models
from jaxicl._sweeps import _store as sweep_store
from jaxicl._tasks._regression import LinearRegression, MultiTaskRegression, disjoint_blocks
from jaxicl._train._objectives import ICLLoss
from jaxicl._train._state import init_train_state
from jaxicl._train._trainer import train_steps


INIT_KEY, DATA_KEY = jr.fold_in(jr.key(0), 0), jr.fold_in(jr.key(0), 1)  # the runner's streams


def _sweep(tmp_path, study, grid, seeds=3):
    kwargs = dict(seeds=seeds, grid=grid, chunk_records=2, progress=False)
    return sweep(study, store=tmp_path / "store", **kwargs).load()


def test_full_allocation_members_equal_training_alone(tmp_path):
    study = FullAllocation(d=6, n_tasks=2, context_len=8, batch_size=16, steps=40, n_records=4)
    grid = dict(heads=[2], learning_rate=[0.01, 0.03], init_scale=[0.1, 0.3])
    data = _sweep(tmp_path, study, grid)
    assert dict(data["loss"].sizes)["learning_rate"] == 2
    task = MultiTaskRegression(6, 8, disjoint_blocks(6, 2))
    seed = 2
    model = init_normal(d=6, n_out=2, n_heads=2, scale=1.0, key=jr.fold_in(INIT_KEY, seed))
    model = jax.tree.map(lambda w: 0.3 * w, model)
    optimizer = optax.inject_hyperparams(optax.adam)(learning_rate=0.03)
    _, alone = train_steps(
        init_train_state(model, optimizer),
        ICLLoss(task, 16),
        optimizer,
        steps=40,
        record=Record(every=10),
        key=DATA_KEY,
    )
    stored = data["loss"].sel(heads=2, learning_rate=0.03, init_scale=0.3, seed=seed).squeeze()
    np.testing.assert_allclose(stored.values, np.asarray(alone.loss_mean), rtol=1e-12)
    other = data["loss"].sel(heads=2, learning_rate=0.01, init_scale=0.3, seed=seed).squeeze()
    assert np.abs(other.values[1:] - stored.values[1:]).min() > 1e-4  # the rate is per member
    assert set(np.unique(data["success"])) <= {0.0, 1.0} and np.isfinite(data["final_loss"]).all()


def test_feature_learning_members_equal_the_solver_alone(tmp_path):
    study = FeatureLearning(
        d=4, k=2, teacher_neurons=3, n_inputs=64, n_eval_inputs=64, steps=20, n_records=4
    )
    grid = dict(particles=[16], learning_rate=[0.02, 0.05], a_scale=[0.5, 1.0])
    data = _sweep(tmp_path, study, grid)
    key, seed = jr.key(0), 1
    task = feature_regression(d=4, k=2, teacher_neurons=3, key=jr.fold_in(key, 0))
    inputs = task.inputs(64, key=jr.fold_in(key, 1))
    eval_inputs = task.inputs(64, key=jr.fold_in(key, 2))
    model = init_feature_attention(
        n_particles=16, k=2, d=4, a_scale=0.5, key=jr.fold_in(jr.fold_in(INIT_KEY, seed), 16)
    )
    attention = optimal_attention(model.particles, inputs, task.target_features(inputs))
    model = eqx.tree_at(lambda m: m.W, model, attention)
    solver = particle_solver(task, learning_rate=0.05, inputs=inputs, eval_inputs=eval_inputs)
    states, alone = solver.run(
        solver.init(jax.tree.map(lambda a: a[None], model)),
        steps=20,
        record_every=5,
        key=DATA_KEY,
    )
    stored = data["loss"].sel(particles=16, learning_rate=0.05, a_scale=0.5, seed=seed)
    np.testing.assert_allclose(stored.values.squeeze(), alone.observables["loss"][0], rtol=1e-9)
    assert not np.allclose(
        data["loss"].sel(learning_rate=0.02, a_scale=0.5, seed=seed).values.squeeze()[1:],
        stored.values.squeeze()[1:],
    )
    assert data["loss"].dtype == np.float64
    assert data["time"].attrs["units"].startswith("Euler steps")


def test_float64_studies_refuse_float32(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep_store, "float64", lambda: False)
    with pytest.raises(ValueError, match="runs in float64"):
        sweep(FeatureLearning(), seeds=1, store=tmp_path / "store")
    assert not (tmp_path / "store").exists()


def test_a_variant_that_is_not_a_module_is_refused_naming_the_choices():
    # what a study's __check_init__ runs (the test suite's type checker refuses a str earlier)
    from jaxicl import _validation as check
    from jaxicl._attention._init_schemes import (
        INIT_SCHEMES,
        AbstractInitScheme,
        AbstractWeightInit,
    )
    from jaxicl._studies._full_allocation import FULL_INITS

    with pytest.raises(ValueError, match="`init` must be a AbstractWeightInit .*'random-sign'"):
        check.variant("init", "balanced", AbstractWeightInit, FULL_INITS)
    with pytest.raises(ValueError, match="`scheme` must be a AbstractInitScheme"):
        check.variant("scheme", 3, AbstractInitScheme, INIT_SCHEMES)


def test_combinations_a_study_cannot_run_are_refused():
    with pytest.raises(ValueError, match="grid.learning_rate"):
        sweep(
            FeatureLearning(attention=JointAttention()),
            seeds=1,
            grid={"learning_rate": [0.01, 0.02]},
        )


def test_init_schemes_are_a_labelled_group_axis(tmp_path):
    grid = dict(heads=[3], scheme=[Balanced(), RandomSign()])
    data = _sweep(tmp_path, ReducedAllocation(d=9, horizon=2.0, n_records=4), grid, seeds=2)
    assert list(data["scheme"].values) == ["balanced", "random-sign"]
    balanced = data["loss"].sel(scheme="balanced").values.squeeze()
    # the balanced init is deterministic: both seeds follow one curve; random signs differ
    np.testing.assert_array_equal(balanced[0], balanced[1])
    signs = data["loss"].sel(scheme="random-sign").values.squeeze()
    assert not np.array_equal(signs[0], signs[1])
    from jaxicl._sweeps._store import plot_sweep

    plot_sweep(tmp_path / "store", tmp_path / "figure.png")
    assert (tmp_path / "figure.png").stat().st_size > 10_000


def test_a_member_still_in_warm_up_has_no_allocation_outcome(tmp_path):
    """From init 1e-4 the reduced flow (d = 9, weights' flow) is still on its plateau at
    t = 100: its allocation outcome is missing (NaN, counted by `left_warmup`), not a failure;
    from 0.1 every seed has left and allocated. The figure says "no outcome" instead of 0%."""
    from jaxicl._sweeps._store import plot_sweep

    study = ReducedAllocation(d=9, horizon=100.0, dt=0.25, n_records=20)
    data = _sweep(tmp_path, study, {"init_scale": [1e-4, 0.1]}, seeds=8)
    small, large = data.sel(init_scale=1e-4), data.sel(init_scale=0.1)
    assert not small["left_warmup"].values.any() and np.isnan(small["success"].values).all()
    assert np.isnan(small["warmup_end"].values).all()
    assert large["left_warmup"].values.all() and (large["success"].values == 1).all()
    assert "no outcome" in data["success"].attrs["meaning"]
    plot_sweep(tmp_path / "store", tmp_path / "figure.png")
    assert (tmp_path / "figure.png").stat().st_size > 10_000


def test_a_member_that_diverged_has_no_outcome(tmp_path):
    """Adam at learning rate 1e200 diverges: the member is flagged and counted, and its allocation
    outcome, final loss and warm-up end are missing (NaN), never a failure or a number; the
    other member point is unaffected."""
    study = FullAllocation(d=6, n_tasks=2, steps=20, n_records=4)
    data = _sweep(tmp_path, study, {"learning_rate": [0.01, 1e200]}, seeds=2)
    wild, tame = data.sel(learning_rate=1e200), data.sel(learning_rate=0.01)
    assert (wild["diverged"].values == 1).all() and (tame["diverged"].values == 0).all()
    for name in ("success", "final_loss", "warmup_end"):
        assert np.isnan(wild[name].values).all(), name
    assert np.isin(tame["success"].values, [0.0, 1.0]).all()
    assert np.isfinite(tame["final_loss"].values).all()


@pytest.mark.slow  # a statistical run of the full model; its equality with training alone is fast
def test_full_model_allocates_from_the_ansatz_init_not_from_random_signs(tmp_path):
    """Full softmax attention (d = 9, 3 tasks, H = 3, Adam 3e-3, 600 steps): the balanced init
    put into the weights allocates the tasks in every seed; i.i.d. normal weights (random signs,
    like the reference's random-sign init) in none."""
    study = FullAllocation(learning_rate=0.003, steps=600, n_records=6)
    grid = dict(init=[FullAllocation().init, Balanced()])
    data = _sweep(tmp_path, study, grid, seeds=2)
    success = data["success"].squeeze()
    assert success.sel(init="balanced").values.all()
    assert not success.sel(init="normal").values.any()


def test_attention_regression_members_equal_plain_adam_alone(tmp_path):
    """The study behind paired-heads and overlapping-tasks is the experiments' old training:
    init_normal at the init scale, plain Adam, shared prompts; its stored final weights are
    the trained model's."""
    task = LinearRegression(3, 6, context_noise=0.3, query_noise=0.3)
    study = AttentionRegression(task=task, heads=2, batch_size=8, steps=30, n_records=3)
    grid = dict(init_scale=[0.1, 0.4], learning_rate=[0.01])
    data = _sweep(tmp_path, study, grid)
    seed = 1
    model = init_normal(d=3, n_out=1, n_heads=2, scale=0.4, key=jr.fold_in(INIT_KEY, seed))
    optimizer = optax.adam(0.01)
    final, alone = train_steps(
        init_train_state(model, optimizer),
        ICLLoss(task, 8),
        optimizer,
        steps=30,
        record=Record(every=10, observe=lambda m: semi_singular_values(m, ((0, 3),))),
        key=DATA_KEY,
    )
    member = data.sel(init_scale=0.4, learning_rate=0.01, seed=seed)
    np.testing.assert_allclose(member["loss"].values, alone.loss_mean, rtol=1e-10)
    np.testing.assert_allclose(member["omega"].values, alone.observables[0], rtol=1e-10)
    for name in ("Q", "K", "V", "O"):
        np.testing.assert_allclose(member[name].values, getattr(final.model, name), rtol=1e-10)
    models = trained_models(data.sel(init_scale=0.4, learning_rate=0.01))
    np.testing.assert_array_equal(models.Q[seed], member["Q"].values)


@pytest.mark.parametrize("dynamics", ["exact", pytest.param("full", marks=pytest.mark.slow)])
def test_ansatz_dynamics_members_draw_their_own_prompts_by_seed(tmp_path, dynamics):
    """Per-member data: member s trains on the stream of its seed, as a run alone whose data
    key is fold_in(data key, s), whatever else shares its call."""
    study = AnsatzDynamics(
        dynamics=DYNAMICS[dynamics],
        d=6,
        n_tasks=2,
        heads=2,
        context_len=10,
        batch_size=8,
        horizon=0.2,
        dt=0.01,
        n_records=4,
    )
    data = _sweep(tmp_path, study, dict(init_scale=[0.05, 0.1]))
    seed = 2
    start = RandomPositive(0.1)(2, 2, 0.1, key=jr.fold_in(INIT_KEY, seed))
    model = study.dynamics.initial_model(study, start)
    optimizer = study.optimizer()
    final, alone = train_steps(
        init_train_state(model, optimizer),
        study.objective(),
        optimizer,
        steps=20,
        record=Record(every=5, observe=study.observe()),
        key=jr.fold_in(DATA_KEY, seed),
    )
    member = data.sel(init_scale=0.1, seed=seed)
    np.testing.assert_allclose(member["loss"].values, alone.loss, rtol=1e-10)
    np.testing.assert_allclose(
        member["mu_final"].values, study._spectral(final.model)[1], rtol=1e-10
    )
    others = data.sel(init_scale=0.1)["loss"].values
    assert np.abs(others[0, 1:] - others[seed, 1:]).min() > 0  # seeds draw different prompts
