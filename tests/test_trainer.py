import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jaxtyping
import numpy as np
import optax
import pytest
from helpers import tree_allclose

import jaxicl as ji


TASK = ji.LinearRegression(5, 10, context_noise=0.3, query_noise=0.3)
LOSS = ji.ICLLoss(TASK, 16)
ADAM = optax.adam(1e-2)


def make(key):
    return ji.init_normal(d=5, n_out=1, n_heads=2, scale=0.3, key=key)


def member(tree, i):
    return jax.tree_util.tree_map(lambda x: x[i] if eqx.is_array(x) else x, tree)


def observe(model):
    return ji.semi_singular_values(model, ((0, 5),))


def test_member_of_1024_equals_member_alone(getkey):
    """Float64; tolerance 1e-9 relative: only reduction order may differ between vmap and alone."""
    models = eqx.filter_vmap(make)(jr.split(getkey(), 1024))
    data_key = getkey()
    # under the precision large sweeps run at: true float32 products (accelerators' default
    # is not; on CPU the same)
    record = ji.Record(every=5, observe=observe)
    kwargs = dict(steps=20, record=record, matmul_precision="highest", key=data_key)
    states, trajectories = ji.train_ensemble_steps(
        ji.init_ensemble_state(models, ADAM), LOSS, ADAM, **kwargs
    )
    for i in (0, 517, 1023):
        alone, trajectory = ji.train_steps(
            ji.init_train_state(member(models, i), ADAM, member=i), LOSS, ADAM, **kwargs
        )
        assert tree_allclose(member(states, i), alone, rtol=1e-9, atol=1e-12)
        assert tree_allclose(member(trajectories, i), trajectory, rtol=1e-9, atol=1e-12)


def test_member_equals_member_alone_in_float32_at_the_highest_precision(getkey):
    """Float32 (the precision large sweeps run in): member i of 256 (the shared-prompt GEMM
    kernel) against member i alone (per-prompt products) after 20 Adam steps, relative 1e-4.
    TF32 products (an accelerator's default for float32) round their inputs to 10-bit
    mantissas, a relative 5e-4 per product: the tolerance is set below it."""
    task = ji.LinearRegression(5, 10, context_noise=0.3, query_noise=0.3, dtype=jnp.float32)
    loss = ji.ICLLoss(task, 16)
    make32 = lambda k: ji.init_normal(  # noqa: E731
        d=5, n_out=1, n_heads=2, scale=0.3, dtype=jnp.float32, key=k
    )
    models = eqx.filter_vmap(make32)(jr.split(getkey(), 256))
    kwargs = dict(steps=20, record=ji.Record(every=5), matmul_precision="highest", key=getkey())
    states, trajectories = ji.train_ensemble_steps(
        ji.init_ensemble_state(models, ADAM), loss, ADAM, **kwargs
    )
    assert states.model.Q.dtype == jnp.float32
    for i in (0, 131, 255):
        alone, trajectory = ji.train_steps(
            ji.init_train_state(member(models, i), ADAM, member=i), loss, ADAM, **kwargs
        )
        assert tree_allclose(member(states, i), alone, rtol=1e-4, atol=1e-6)
        assert tree_allclose(member(trajectories, i), trajectory, rtol=1e-4, atol=1e-6)


def test_per_member_data_equals_alone_with_folded_key(getkey):
    models = eqx.filter_vmap(make)(jr.split(getkey(), 8))
    data_key = getkey()
    _, trajectories = ji.train_ensemble(
        models, LOSS, ADAM, steps=10, record=ji.Record(every=2), shared_data=False, key=data_key
    )
    for i in (0, 5):
        _, alone = ji.train(
            member(models, i),
            LOSS,
            ADAM,
            steps=10,
            record=ji.Record(every=2),
            key=jr.fold_in(data_key, i),
        )
        assert tree_allclose(member(trajectories, i), alone, rtol=1e-9, atol=1e-12)
    # Members see different data: same model would otherwise give identical losses.
    same = eqx.filter_vmap(lambda _: make(jr.key(0)))(jnp.arange(2))
    _, t = ji.train_ensemble(
        same, LOSS, ADAM, steps=2, record=ji.Record(every=1), shared_data=False, key=data_key
    )
    assert t.loss[0, 0] != t.loss[1, 0]


def test_step_chunks_equal_one_scan(getkey):
    model, key = make(getkey()), getkey()
    state = ji.init_train_state(model, ADAM)
    whole, whole_traj = ji.train_steps(
        state, LOSS, ADAM, steps=100, record=ji.Record(every=10, observe=observe), key=key
    )
    part, first = ji.train_steps(
        state, LOSS, ADAM, steps=40, record=ji.Record(every=10, observe=observe), key=key
    )
    part, second = ji.train_steps(
        part, LOSS, ADAM, steps=60, record=ji.Record(every=10, observe=observe), key=key
    )
    joined = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), first, second)
    assert tree_allclose(part, whole, rtol=1e-12) and tree_allclose(joined, whole_traj, rtol=1e-12)


def test_member_chunks_equal_one_ensemble(getkey):
    models = eqx.filter_vmap(make)(jr.split(getkey(), 16))
    key = getkey()
    kwargs = dict(steps=10, record=ji.Record(every=5), shared_data=False, key=key)
    whole, _ = ji.train_ensemble_steps(ji.init_ensemble_state(models, ADAM), LOSS, ADAM, **kwargs)
    halves = [
        ji.train_ensemble_steps(
            ji.init_ensemble_state(
                jax.tree_util.tree_map(lambda x: x[s] if eqx.is_array(x) else x, models),
                ADAM,
                first_member=s.start,
            ),
            LOSS,
            ADAM,
            **kwargs,
        )[0]
        for s in (slice(0, 8), slice(8, 16))
    ]
    joined = jax.tree_util.tree_map(
        lambda a, b: jnp.concatenate([a, b]) if eqx.is_array(a) else a, *halves
    )
    assert tree_allclose(joined, whole, rtol=1e-9, atol=1e-12)


def test_repeated_calls_do_not_retrace(getkey):
    traces = []

    def counting_loss(model, *, key):
        traces.append(None)
        return LOSS(model, key=key)

    models = eqx.filter_vmap(make)(jr.split(getkey(), 4))
    states = ji.init_ensemble_state(models, ADAM)
    for _ in range(3):
        states, _ = ji.train_ensemble_steps(
            states, counting_loss, ADAM, steps=4, record=ji.Record(every=2), key=getkey()
        )
    first = len(traces)
    assert first > 0
    for _ in range(3):
        states, _ = ji.train_ensemble_steps(
            states, counting_loss, ADAM, steps=4, record=ji.Record(every=2), key=getkey()
        )
    assert len(traces) == first


def test_jit_equals_no_jit(getkey):
    model, key = make(getkey()), getkey()
    state = ji.init_train_state(model, ADAM)
    jitted = ji.train_steps(state, LOSS, ADAM, steps=4, record=ji.Record(every=2), key=key)
    with jax.disable_jit():
        eager = ji.train_steps(state, LOSS, ADAM, steps=4, record=ji.Record(every=2), key=key)
    assert tree_allclose(jitted, eager, rtol=1e-10, atol=1e-12)


def test_diverging_member_is_frozen_and_flagged(getkey):
    models = eqx.filter_vmap(make)(jr.split(getkey(), 4))
    blown = eqx.tree_at(lambda m: m.V, models, models.V.at[2].multiply(1e3))
    optimizer = ji.sgd(0.05)
    key = getkey()
    run = dict(steps=20, record=ji.Record(every=1), key=key)
    states, traj = ji.train_ensemble_steps(
        ji.init_ensemble_state(blown, optimizer), LOSS, optimizer, **run
    )
    assert states.diverged.tolist() == [False, False, True, False]
    # With one step a block, the first flagged record t is the step whose update was refused:
    # the model is frozen after t healthy steps, which the same member alone reproduces.
    healthy_steps = int(jnp.argmax(traj.diverged[2]))
    frozen = member(blown, 2)
    if healthy_steps > 0:
        frozen, _ = ji.train(
            frozen, LOSS, optimizer, steps=healthy_steps, record=ji.Record(every=1), key=key
        )
    assert tree_allclose(member(states, 2).model, frozen, rtol=1e-12)
    assert jnp.all(jnp.isfinite(member(states, 2).model.Q)) and int(states.step[2]) == 20
    # The healthy members are unaffected by their neighbour.
    healthy = jax.tree_util.tree_map(
        lambda x: x[jnp.array([0, 1, 3])] if eqx.is_array(x) else x, models
    )
    ref, _ = ji.train_ensemble_steps(
        ji.init_ensemble_state(healthy, optimizer), LOSS, optimizer, **run
    )
    assert tree_allclose(member(ref, 2).model, member(states, 3).model, rtol=1e-12)


def test_gradient_flow_time_is_sum_of_learning_rates(getkey):
    schedule = optax.linear_schedule(0.1, 0.01, 30)
    optimizer = ji.sgd(schedule)
    state, traj = ji.train_steps(
        ji.init_train_state(make(getkey()), optimizer),
        LOSS,
        optimizer,
        steps=30,
        record=ji.Record(every=10),
        key=getkey(),
    )
    expected = [sum(float(schedule(t)) for t in range(n)) for n in (0, 10, 20, 30)]
    assert jnp.allclose(traj.time, jnp.array(expected[:3])) and jnp.allclose(
        state.time, expected[3]
    )
    state, _ = ji.train_steps(
        ji.init_train_state(make(getkey()), ADAM),
        LOSS,
        ADAM,
        steps=2,
        record=ji.Record(every=1),
        key=getkey(),
    )
    assert jnp.isnan(state.time)


def test_float32_on_request_and_observables_recorded(getkey):
    model = ji.init_normal(d=5, n_out=1, n_heads=2, scale=0.3, dtype=jnp.float32, key=getkey())
    loss = ji.ICLLoss(ji.LinearRegression(5, 10, dtype=jnp.float32), 8)
    trained, traj = ji.train(
        model, loss, ADAM, steps=6, record=ji.Record(every=2, observe=observe), key=getkey()
    )
    assert trained.Q.dtype == jnp.float32 and traj.loss.dtype == jnp.float32
    assert traj.observables[0].shape == (3, 2, 1) and traj.step.tolist() == [0, 2, 4]


def test_loss_mean_is_block_average_of_per_step_losses(getkey):
    model, key = make(getkey()), getkey()
    _, coarse = ji.train(model, LOSS, ADAM, steps=12, record=ji.Record(every=4), key=key)
    _, fine = ji.train(model, LOSS, ADAM, steps=12, record=ji.Record(every=1), key=key)
    assert jnp.allclose(coarse.loss_mean, fine.loss.reshape(3, 4).mean(axis=1), rtol=1e-10)
    assert jnp.allclose(coarse.loss, fine.loss[::4], rtol=1e-10)


def test_adam_ensemble_learns(getkey):
    """Sanity of the whole loop: the block-mean loss ends well below the zero predictor's risk
    1 + σ_q², approaching the best one-step GD risk (0.48 here)."""
    models = eqx.filter_vmap(make)(jr.split(getkey(), 8))
    _, traj = ji.train_ensemble(
        models, ji.ICLLoss(TASK, 64), ADAM, steps=600, record=ji.Record(every=100), key=getkey()
    )
    zero_predictor = 1 + 0.3**2
    assert float(jnp.median(traj.loss_mean[:, -1])) < 0.75 * zero_predictor


@pytest.mark.parametrize(
    "steps, every, field",
    [
        (0, 1, "`steps`"),
        (10, 3, "`steps`"),
        (10, -1, "`Record.every`"),
    ],
)
def test_bad_schedule(steps, every, field, getkey):
    state = ji.init_train_state(make(getkey()), ADAM)
    with pytest.raises(ValueError, match=field):
        ji.train_steps(state, LOSS, ADAM, steps=steps, record=ji.Record(every=every), key=getkey())


@pytest.fixture
def no_type_checker():
    """What a user without jaxtyping's checker (which the suite runs under) would get."""
    jaxtyping.config.update("jaxtyping_disable", True)
    yield
    jaxtyping.config.update("jaxtyping_disable", False)


def test_options_must_be_their_modules(getkey, no_type_checker):
    """A plain value where an option Module belongs is refused, naming it."""
    models = eqx.filter_vmap(make)(jr.split(getkey(), 2))
    with pytest.raises(ValueError, match="`Record.observe`"):
        ji.Record(every=1, observe="omega")
    with pytest.raises(ValueError, match="`Members.shard`"):
        ji.Members(shard="yes")
    with pytest.raises(ValueError, match="`Members.chunk`"):
        ji.Members(chunk=2.5)
    with pytest.raises(ValueError, match="`record` must be a jaxicl.Record"):
        ji.train_ensemble(models, LOSS, ADAM, steps=2, record=1, key=getkey())
    with pytest.raises(ValueError, match="`matmul_precision` must be one of"):
        ji.train_ensemble(models, LOSS, ADAM, steps=2, matmul_precision="tf32", key=getkey())
    with pytest.raises(ValueError, match="`members` must be a jaxicl.Members"):
        ji.train_ensemble(models, LOSS, ADAM, steps=2, members=32, key=getkey())
    with pytest.raises(TypeError, match="`members`"):
        ji.train(make(getkey()), LOSS, ADAM, steps=2, members=ji.Members(), key=getkey())


@pytest.mark.parametrize("shared_data", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_member_chunk_does_not_change_results(shared_data, getkey):
    models = eqx.filter_vmap(make)(jr.split(getkey(), 8))
    record = ji.Record(every=3, observe=observe)
    kwargs = dict(steps=6, record=record, shared_data=shared_data, key=getkey())
    whole = ji.train_ensemble(models, LOSS, ADAM, members=ji.Members(chunk=None), **kwargs)
    chunked = ji.train_ensemble(models, LOSS, ADAM, members=ji.Members(chunk=3), **kwargs)  # 3 ∤ 8
    assert tree_allclose(whole, chunked, rtol=1e-10, atol=1e-12)


def test_bad_member_chunk(getkey):
    models = eqx.filter_vmap(make)(jr.split(getkey(), 4))
    for chunk in (0, -2, "all"):
        with pytest.raises(ValueError, match="`Members.chunk`"):
            ji.train_ensemble(
                models, LOSS, ADAM, steps=2, members=ji.Members(chunk=chunk), key=getkey()
            )


class _Scalar(eqx.Module):
    x: jax.Array


def test_divergence_inside_the_last_record_block_is_reported():
    """SGD 1.5 on x² maps x to −2x: from 1e152 the loss overflows at step 8, inside the last
    block of records (at steps 0 and 5). The last record's flag is the final state's."""
    models = _Scalar(jnp.array([1.0, 1e152]))
    optimizer = ji.sgd(1.5)
    loss = lambda m, *, key: m.x**2  # noqa: E731
    states, traj = ji.train_ensemble_steps(
        ji.init_ensemble_state(models, optimizer),
        loss,
        optimizer,
        steps=10,
        record=ji.Record(every=5),
        key=jr.key(0),
    )
    assert states.diverged.tolist() == [False, True]
    assert traj.diverged[:, -1].tolist() == [False, True]
    assert traj.diverged[:, 0].tolist() == [False, False]


def test_auto_member_chunk_fits_l2_or_up_to_a_vector_of_members_in_l3():
    from jaxicl._train._member_chunk import VECTOR_MEMBERS, chunk_for_caches

    caches = (512 * 2**10, 16 * 2**20)
    # ~1 KB members (the reduced flow): L2 holds 524 of them → the power of two below
    assert chunk_for_caches(1000, caches, 65536) == 512
    # ~0.26 MB members (attention): L2 holds one or two → a vector's width of members
    assert chunk_for_caches(0.26e6, caches, 1024) == VECTOR_MEMBERS == 16
    # ~4 MB members (a large particle system): L3 holds 4 of them
    assert chunk_for_caches(4e6, caches, 64) == 4
    # everything fits: all at once; a chunk as large as the ensemble: all at once; nothing
    # fits even alone: one at a time
    assert chunk_for_caches(1000, caches, 100) is None
    assert chunk_for_caches(0.26e6, caches, 16) is None
    assert chunk_for_caches(1e9, caches, 8) == 1


def test_auto_member_chunk_is_chosen_once_per_workload(getkey, monkeypatch):
    from jaxicl._train import _member_chunk, _members

    calls = []
    real = _member_chunk.temp_bytes_per_member
    monkeypatch.setattr(_members, "auto_member_chunk", _member_chunk.auto_member_chunk)
    monkeypatch.setattr(
        _member_chunk, "temp_bytes_per_member", lambda *a: calls.append(a) or real(*a)
    )
    states = ji.init_ensemble_state(eqx.filter_vmap(make)(jr.split(getkey(), 24)), ADAM)
    for seed in range(3):
        ji.train_ensemble_steps(
            states,
            LOSS,
            ADAM,
            steps=2,
            record=ji.Record(every=1),
            members=ji.Members(shard=False),
            key=jr.key(seed),
        )
    assert len(calls) == (1 if jax.default_backend() == "cpu" else 0)


def test_a_stopped_member_is_frozen_from_its_record_on():
    """SGD 0.1 on x² maps x to 0.8x: records every 5 steps scale x by 0.8⁵. A member stops at
    its first record with |x| < 0.1 (the rule sees the record's model) and keeps that state;
    until then its records are the bits of a run without the rule."""
    models = _Scalar(jnp.array([1.0, 0.5, 0.05, 1e3, 1e200]))  # (1e200)² overflows
    optimizer = ji.sgd(0.1)
    loss = lambda m, *, key: m.x**2  # noqa: E731
    init = ji.init_ensemble_state(models, optimizer)

    def run(stop):
        record = ji.Record(every=5, observe=lambda m: m.x, stop=stop)
        return ji.train_ensemble_steps(
            init, loss, optimizer, steps=40, record=record, key=jr.key(0)
        )

    free_states, free = run(None)
    never_states, never = run(lambda m: m.x < -1.0)
    states, traj = run(lambda m: jnp.abs(m.x) < 0.1)
    # a rule that never fires changes no bit
    pairs = zip(
        jax.tree_util.tree_leaves((never_states, never)),
        jax.tree_util.tree_leaves((free_states, free)),
    )
    for got, want in pairs:
        assert bool(jnp.all((got == want) | (jnp.isnan(got) & jnp.isnan(want))))
    x = np.asarray(free.observables)
    below = np.abs(x) < 0.1
    first = np.where(below.any(axis=1), np.argmax(below, axis=1), x.shape[1])
    assert first.tolist() == [3, 2, 0, 8, 8]  # 1e3 never gets there; 1e200 diverges
    assert np.asarray(traj.stopped).tolist() == [[k >= f for k in range(x.shape[1])] for f in first]
    assert states.stopped.tolist() == [True, True, True, False, False]
    assert states.diverged.tolist() == [False, False, False, False, True]
    for name in ("observables", "loss", "loss_mean", "time"):
        got, want = np.asarray(getattr(traj, name)), np.asarray(getattr(free, name))
        for i, f in enumerate(first):
            # before the stop the records are a free run's; from it on they hold still
            np.testing.assert_array_equal(got[i, :f], want[i, :f], err_msg=name)
            np.testing.assert_array_equal(got[i, f:], got[i, min(f, 7)], err_msg=name)
            if name != "loss_mean" and f < 8:  # the record of the stop is the free run's
                assert got[i, f] == want[i, f], name
    # the stopped state is the record's model; its step count still moves on
    np.testing.assert_array_equal(states.model.x[:3], x[:3][np.arange(3), first[:3]])
    assert states.step.tolist() == [40] * 5
    np.testing.assert_array_equal(states.time[:3], np.asarray(free.time)[np.arange(3), first[:3]])


def test_a_stop_rule_must_be_a_function(no_type_checker):
    with pytest.raises(ValueError, match="`Record.stop` must be None or a function"):
        ji.Record(every=2, stop=0.1)


def test_a_stop_rule_that_returns_a_number_is_refused():
    """`stop=lambda m: loss(m)` (a number, not a comparison) would stop every member where it
    is nonzero: refused, naming what is expected."""
    optimizer = ji.sgd(0.1)
    init = ji.init_ensemble_state(_Scalar(jnp.array([1.0, 0.5])), optimizer)
    with pytest.raises(ValueError, match="`Record.stop` must return a boolean"):
        ji.train_ensemble_steps(
            init,
            lambda m, *, key: m.x**2,
            optimizer,
            steps=4,
            record=ji.Record(every=2, stop=lambda m: m.x**2),
            key=jr.key(0),
        )
