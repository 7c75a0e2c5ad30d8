"""Feature learning in context: the particle solver trained on prompts of n token pairs (the
finite-n loss L^n), against the n = ∞ run from the same initial particles."""

import numpy as np
import pytest

import jaxicl as ji
from jaxicl._experiments._feature_learning_summary import feature_distance


LENGTHS = (8, 128, 512, 0)  # 0: n = ∞


@pytest.mark.slow  # twelve short runs of the solver
def test_in_context_training_approaches_the_population_flow_as_n_grows():
    """d = 5, k = 2, 50 particles, 400 Euler steps of 0.05, 16 prompts a step, 3 seeds: the final
    held-out L/L_c falls towards the n = ∞ run's as n grows (measured means 0.68, 0.45, 0.14
    against 0.12), and the learned features approach the n = ∞ run's (relative residual of
    one's features regressed on the other's, per seed; measured means 0.44 at n = 8, 0.06 at
    512)."""
    study = ji.FeatureLearning(
        d=5,
        k=2,
        particles=50,
        teacher_neurons=3,
        n_inputs=500,
        n_eval_inputs=500,
        steps=400,
        n_records=10,
        learning_rate=0.05,
        prompts_per_step=16,
    )
    data = ji.sweep(
        study, grid={"prompt_length": list(LENGTHS)}, seeds=3, members_per_call=3, progress=False
    )
    assert not data["diverged"].values.any()
    loss = {n: data["final_relative_loss"].sel(prompt_length=n).values.mean() for n in LENGTHS}
    population = data["final_features"].sel(prompt_length=0).values
    distance = {
        n: np.mean(
            [
                feature_distance(population[s], f)
                for s, f in enumerate(data["final_features"].sel(prompt_length=n).values)
            ]
        )
        for n in LENGTHS
    }
    assert loss[8] > loss[128] > loss[512]
    assert abs(loss[512] - loss[0]) < abs(loss[8] - loss[0]) / 3
    assert distance[512] < distance[8] / 3
    assert distance[0] < 1e-12


def test_in_context_study_refuses_a_negative_prompt_length():
    with pytest.raises(ValueError, match="`prompt_length`"):
        ji.FeatureLearning(prompt_length=-1)
