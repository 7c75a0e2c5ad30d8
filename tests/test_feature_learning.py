"""The `feature-learning` experiment end to end at a tiny size: files, summary, resume, errors."""

import json

import pytest

from jaxicl import _cli
from jaxicl._experiments import _feature_learning as experiment
from jaxicl._experiments._feature_learning import FeatureLearningConfig, run_feature_learning
from jaxicl._sweeps import _group as sweep_group


TINY = dict(
    d=5,
    k=2,
    n_particles=30,
    teacher_neurons=3,
    n_inputs=200,
    n_eval_inputs=200,
    steps=60,
    record_every=10,
    n_seeds=3,
    attention_seeds=2,
    attention_ratios=(1.0, 100.0),
    mean_field_sizes=(8, 16, 32),
    mean_field_seeds=2,
    mean_field_steps=30,
)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One tiny run shared by the tests below (the experiment takes a while even tiny)."""
    out = tmp_path_factory.mktemp("feature_learning")
    config = FeatureLearningConfig(**TINY)
    return config, out, run_feature_learning(config, out, progress=False)


def test_runs_writes_results_and_resumes_without_recomputing(finished, monkeypatch):
    config, out, summary = finished
    for name in ("summary.json", "feature_learning.png", "sweeps/static/zarr.json"):
        assert (out / name).exists(), name
    stored = json.loads((out / "summary.json").read_text())
    assert stored["static"]["seeds"] == 3
    assert set(stored["attention"]) == {"1", "100"}
    assert set(stored["saddle"]["variants"]) == set(experiment.SADDLE_VARIANTS)
    assert summary["saddle"]["variants"]["none"]["final_w_spread"] < 1e-12
    assert summary["saddle"]["variants"]["isotropic"]["final_w_spread"] > 1e-3
    assert len(summary["mean_field"]["distance"]) == 2

    def no_work(*args, **kwargs):
        raise AssertionError("a stored group was recomputed")

    monkeypatch.setattr(sweep_group, "train_ensemble_steps", no_work)
    again = run_feature_learning(config, out, progress=False)
    assert again["static"] == summary["static"]


def test_other_configuration_is_refused(finished):
    _, out, _ = finished
    with pytest.raises(ValueError, match="different configuration"):
        run_feature_learning(FeatureLearningConfig(**{**TINY, "steps": 120}), out)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("activation", "gelu", "activation"),
        ("steps", 55, "multiple of `record_every`"),
        ("k", 9, "at most `d`"),
        ("success_threshold", 2.0, "success_threshold"),
        ("mean_field_sizes", (8, 16), "at least 3"),
        ("attention_ratios", (1.0, -2.0), "attention_ratios"),
    ],
)
def test_bad_configuration_names_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        FeatureLearningConfig(**{**TINY, field: value})


def test_command_line_reports_bad_values(capsys, tmp_path):
    code = _cli.main(["run", "feature-learning", "--out", str(tmp_path), "--n-particles", "0"])
    assert code == 2
    assert "`n_particles` must be a positive integer" in capsys.readouterr().err
