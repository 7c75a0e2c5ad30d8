import jax
import jax.numpy as jnp
import jax.random as jr
import pytest

import jaxicl as ji


def sigmoid_curve(time, *, onset, width, high=15.0, low=2.0):
    return low + (high - low) * jax.nn.sigmoid(-(time - onset) / width)


def test_phases_of_a_known_sigmoid():
    """For ℓ = low + Δ·σ(−(t − t₀)/w), progress p = σ((t − t₀)/w) − p(0) (normalised), so the
    10/90/99% times are t₀ + w·logit(f) up to the grid spacing and the p(0), p(end) offsets."""
    time = jnp.linspace(0.0, 100.0, 10_001)
    onset, width = 50.0, 2.0
    # floor = the curve's low end, so 10% of ℓ(0) − floor is 10% of the drop.
    phases = ji.detect_phases(time, sigmoid_curve(time, onset=onset, width=width), floor=2.0)
    assert bool(phases.left_warmup) and bool(phases.settled)
    logit = lambda f: jnp.log(f / (1 - f))  # noqa: E731
    for got, fraction in [
        (phases.warmup_end, 0.1),
        (phases.emergence_end, 0.9),
        (phases.convergence, 0.99),
    ]:
        assert abs(float(got) - (onset + width * float(logit(fraction)))) < 0.05
    assert phases.emergence_end - phases.warmup_end < phases.warmup_end


def test_phases_are_robust_to_sampling_noise(getkey):
    time = jnp.linspace(0.0, 100.0, 401)
    clean = ji.detect_phases(time, sigmoid_curve(time, onset=50.0, width=2.0), floor=2.0)
    noisy_loss = sigmoid_curve(time, onset=50.0, width=2.0) * (
        1 + 0.05 * jr.normal(getkey(), time.shape)
    )
    noisy = ji.detect_phases(time, noisy_loss, window=9, floor=2.0)
    assert bool(noisy.settled) and bool(noisy.left_warmup)
    # Without smoothing one lucky low sample early on would pass for progress; with it the
    # detected times stay within 2 time units (8 records) of the noise-free ones.
    for a, b in [(noisy.warmup_end, clean.warmup_end), (noisy.emergence_end, clean.emergence_end)]:
        assert abs(float(a - b)) <= 2.0


def test_flat_curve_has_no_phases():
    time = jnp.linspace(0.0, 10.0, 11)
    phases = ji.detect_phases(time, jnp.full_like(time, 3.0))
    assert jnp.isnan(phases.warmup_end) and jnp.isnan(phases.convergence)


def test_a_curve_still_on_its_plateau_has_no_phases():
    """Cut off before the drop, a curve that has crept down slowly (0.5% of ℓ(0)) has left
    nothing: no warm-up end (the old definition, 10% of the drop seen, gave one near the start),
    and it is flagged."""
    time = jnp.linspace(0.0, 40.0, 401)
    loss = sigmoid_curve(time, onset=50.0, width=2.0) - 0.002 * time
    phases = ji.detect_phases(time, loss)
    assert not bool(phases.left_warmup)
    assert all(
        bool(jnp.isnan(t)) for t in (phases.warmup_end, phases.emergence_end, phases.convergence)
    )


def test_a_curve_still_dropping_has_a_warmup_end_but_no_emergence_end():
    """Cut off halfway through the drop: warm-up is over (a true time), but the total drop is not
    known, so emergence and convergence are NaN and the curve is flagged as not settled."""
    time = jnp.linspace(0.0, 51.0, 511)
    curve = sigmoid_curve(time, onset=50.0, width=2.0)
    phases = ji.detect_phases(time, curve)
    whole = ji.detect_phases(
        jnp.linspace(0.0, 100.0, 1001),
        sigmoid_curve(jnp.linspace(0.0, 100.0, 1001), onset=50.0, width=2.0),
    )
    assert bool(phases.left_warmup) and not bool(phases.settled)
    assert abs(float(phases.warmup_end - whole.warmup_end)) < 0.15
    assert bool(jnp.isnan(phases.emergence_end)) and bool(jnp.isnan(phases.convergence))
    assert bool(whole.settled) and not bool(jnp.isnan(whole.emergence_end))


def test_bad_window():
    with pytest.raises(ValueError, match="`window`"):
        ji.detect_phases(jnp.arange(5.0), jnp.arange(5.0), window=4)


def test_allocation_of_a_clean_permutation():
    omega = 0.38 * jnp.eye(3)[jnp.array([2, 0, 1])]
    mu = 0.8 * jnp.eye(3)[jnp.array([2, 0, 1])]
    result = ji.task_allocation(omega, mu)
    assert result.task.tolist() == [2, 0, 1] and bool(result.success)
    assert jnp.allclose(result.purity, 1.0) and not bool(result.dead.any())


def test_allocation_failure_one_head_serves_two_tasks():
    omega = jnp.array([[0.3, 0.3, 0.0], [0.0, 0.0, 0.38], [1e-5, 1e-5, 1e-5]])
    mu = jnp.array([[0.7, 0.7, 0.0], [0.0, 0.0, 0.8], [1e-5, 1e-5, 1e-5]])
    result = ji.task_allocation(omega, mu)
    assert result.dead.tolist() == [False, False, True]
    assert float(result.purity[0]) == pytest.approx(0.5)
    assert result.covered.tolist() == [False, False, True] and not bool(result.success)


def test_analysis_vmaps_over_an_ensemble(getkey):
    omega = jr.normal(getkey(), (16, 4, 3))
    mu = jr.normal(getkey(), (16, 4, 3))
    batched = jax.vmap(ji.task_allocation)(omega, mu)
    single = ji.task_allocation(omega[5], mu[5])
    assert jnp.allclose(batched.purity[5], single.purity) and batched.success.shape == (16,)


def test_stall_is_a_split_head_beside_a_dead_one():
    """The stall of random positive inits: head 0 on task 0, head 1 split between tasks 1 and 2,
    head 2 dead. Not a stall: a clean allocation, or a failure with no dead head."""
    stalled = ji.task_allocation(
        jnp.array([[0.4, 0.0, 0.0], [0.0, 0.3, 0.3], [1e-4, 1e-4, 1e-4]]),
        jnp.array([[0.8, 0.0, 0.0], [0.0, 0.7, 0.7], [1e-4, 1e-4, 1e-4]]),
    )
    assert bool(stalled.stalled) and not bool(stalled.success)
    clean = ji.task_allocation(0.4 * jnp.eye(3), 0.8 * jnp.eye(3))
    assert not bool(clean.stalled)
    all_split = ji.task_allocation(jnp.full((3, 3), 0.3), jnp.full((3, 3), 0.7))
    assert not bool(all_split.success) and not bool(all_split.stalled)
