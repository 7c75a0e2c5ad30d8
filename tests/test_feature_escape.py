"""The noiseless escape from a critical point with full-rank features, as the theory of a
strict saddle predicts: split by ε, the flow leaves after (1/κ) log(1/ε) + const, with κ the
flow's own splitting rate (the least eigenvalue of ∇²_θ δL/δµ on its training sample)."""

import dataclasses

import jax
import numpy as np
import pytest

import jaxicl as ji
from jaxicl._experiments._feature_learning import FeatureLearningConfig, _records
from jaxicl._experiments._feature_learning_saddles import escape
from jaxicl._studies._feature_learning import FeatureLearning, SplitAtoms


@pytest.mark.slow  # one sweep of 10 small particle systems over 12,500 Euler steps (~20 s)
def test_escape_time_grows_as_log_one_over_epsilon_at_the_splitting_rate():
    config = dataclasses.replace(
        FeatureLearningConfig(),
        escape_displacements=(1e-2, 1e-3, 1e-4, 1e-5),
        escape_seeds=2,
        escape_drop=0.01,
    )
    study = FeatureLearning(
        d=8,
        k=3,
        teacher_neurons=4,
        n_inputs=300,
        n_eval_inputs=300,
        init=SplitAtoms(3),
        particles=9,
        geometry=True,
        steps=12500,
        n_records=250,
    )
    with jax.enable_x64(True):
        dataset = ji.sweep(
            study, grid={"displacement": [0.0, *config.escape_displacements]}, seeds=2
        )
        scale = float(study.constant_feature_loss())
    results = {}
    for e in [0.0, *config.escape_displacements]:
        one = dataset.sel(displacement=e)
        results[f"escape_eps{e:g}"] = {
            **_records(one, study.learning_rate),
            "teacher_mixture_slope": one["teacher_mixture_slope"].values,
            "teacher_mixture_curvature": one["teacher_mixture_curvature"].values,
        }
    out = escape(config, results, scale)
    critical = out["critical_point"]
    # ε = 0 stays at the atoms and nearly stops: a critical point, with negative splitting
    # curvature (a strict saddle of the flow)
    assert critical["motion"] < 0.01 and critical["flow_splitting_curvature"] < -0.02
    times = np.array(out["escape_times"], float)
    assert not np.isnan(times).any() and out["not_escaped"] == 0
    # every seed (an independent split) escapes later for a smaller ε, on a straight line in
    # log(1/ε) whose slope is 1/κ̄ of the flow's own curvature over the escapes
    assert (np.diff(times, axis=1) > 0).all()
    assert out["min_r2"] > 0.995
    assert out["slope"] == pytest.approx(out["predicted_slope"], rel=0.1)
