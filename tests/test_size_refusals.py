"""Bad input refused in one line before anything is created: sizes the compiled program cannot
count (int32 seeds and step counters), misspelt names (with a suggestion)."""

import pytest

import jaxicl
from jaxicl._studies._feature_learning import FeatureLearning
from jaxicl._studies._reduced_allocation import ReducedAllocation


@pytest.mark.parametrize(
    "settings",
    [dict(horizon=1e300, dt=1e-10), dict(horizon=1e12, dt=1.0)],
)
def test_a_schedule_beyond_int32_steps_is_refused(settings):
    with pytest.raises(ValueError, match=r"`horizon` / `dt` must give fewer than 2\*\*31 steps"):
        ReducedAllocation(**settings)
    with pytest.raises(ValueError, match=r"`steps` must give fewer than 2\*\*31 steps"):
        FeatureLearning(steps=2**31, n_records=1)


def test_seeds_beyond_int32_are_refused_before_a_store_exists(tmp_path):
    store = tmp_path / "store"
    with pytest.raises(ValueError, match=r"`seeds` must be below 2\*\*31, got 1000000000000000"):
        jaxicl.sweep(ReducedAllocation(), seeds=10**15, store=store)
    assert not store.exists()


def test_a_misspelt_name_gets_a_suggestion():
    with pytest.raises(ValueError, match=r"got 'init_scal'. Did you mean 'init_scale'\?"):
        jaxicl.sweep(ReducedAllocation(), grid={"init_scal": [0.1]}, seeds=1)


def test_an_evaluation_that_cannot_fit_is_refused_before_training(tmp_path):
    """The final Monte Carlo losses are sized before anything trains (they came after training,
    and ran out of memory there)."""
    from jaxicl._cli import main

    out = tmp_path / "run"
    assert main(["run", "paired-heads", "--eval-prompts", "300000000", "--out", str(out)]) == 2
    assert not out.exists()


def test_members_are_evaluated_in_bounded_groups_with_the_same_losses(getkey):
    """`population_losses` over groups of members equals all members at once."""
    import equinox as eqx
    import jax.random as jr
    import numpy as np

    from jaxicl._train._objectives import population_losses

    task = jaxicl.LinearRegression(3, 8)
    models = eqx.filter_vmap(
        lambda k: jaxicl.init_normal(d=3, n_out=1, n_heads=2, scale=0.3, key=k)
    )(jr.split(getkey(), 7))
    key = getkey()
    together = population_losses(models, task, 64, key)
    grouped = population_losses(models, task, 64, key, 3)  # 3 + 3 + 1
    np.testing.assert_allclose(grouped, together, rtol=1e-6)


def test_an_error_the_study_raises_for_a_grid_value_names_its_place():
    """A wrong-typed value that only the study's own code trips over (here an array shape
    from `d`, in `initial_model`) is named by its place in the grid."""
    import equinox as eqx
    import jax.numpy as jnp
    import jax.random as jr

    class Loose(jaxicl.AbstractStudy):
        d: int = eqx.field(static=True, default=3)

        def initial_model(self, values, key):
            return jr.normal(key, (self.d,))

        def objective(self):
            return lambda w, key: jnp.sum(w**2)

        def optimizer(self):
            return jaxicl.sgd(0.1)

        def schedule(self):
            return 2, 1

    with pytest.raises(ValueError, match=r"^grid\.d\[1\] = 4\.0: "):
        jaxicl.sweep(Loose(), grid={"d": [3, 4.0]}, seeds=1, progress=False)
