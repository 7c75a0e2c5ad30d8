"""The `feature-learning` experiment end to end at a tiny size: files, summary, resume, errors."""

import json

import numpy as np
import pytest

from jaxicl import _cli
from jaxicl._experiments import (
    _feature_learning as experiment,
    _feature_learning_summary as summary_module,
)
from jaxicl._experiments._feature_learning import FeatureLearningConfig, run_feature_learning
from jaxicl._sweeps import _group as sweep_group


TINY = dict(
    d=5,
    k=2,
    particles=30,
    teacher_neurons=3,
    n_inputs=200,
    n_eval_inputs=200,
    steps=60,
    n_records=6,
    n_seeds=3,
    attention_seeds=2,
    attention_ratios=(1.0, 100.0),
    mean_field_sizes=(8, 16, 32),
    mean_field_seeds=3,
    mean_field_steps=30,
    prompt_lengths=(16, 0),
    in_context_seeds=2,
    in_context_joint_ratio=100.0,
    escape_atoms=2,
    escape_particles_per_atom=3,
    escape_displacements=(1e-2, 1e-3, 1e-4),
    escape_steps=60,
)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One tiny run shared by the tests below (the experiment takes a while even tiny)."""
    out = tmp_path_factory.mktemp("feature_learning")
    config = FeatureLearningConfig.of(**TINY)
    return config, out, run_feature_learning(config, out, progress=False)


@pytest.mark.slow  # the end-to-end fixture; the summary, config and CLI tests stay fast
def test_runs_writes_results_and_resumes_without_recomputing(finished, monkeypatch):
    config, out, summary = finished
    for name in ("summary.json", "feature_learning.png", "sweeps/static/zarr.json"):
        assert (out / name).exists(), name
    stored = json.loads((out / "summary.json").read_text())
    assert stored["static"]["seeds"] == 3
    assert set(stored["attention"]) == {"1", "100"}
    assert set(stored["in_context"]) == set(stored["in_context_joint"]) == {"16", "∞"}
    assert set(stored["saddle"]["variants"]) == set(experiment.SADDLE_VARIANTS)
    assert summary["saddle"]["variants"]["none"]["final_w_spread"] < 1e-12
    assert summary["saddle"]["variants"]["isotropic"]["final_w_spread"] > 1e-3
    assert len(summary["mean_field"]["spread"]) == 3
    assert summary["stalls"]["seeds"] + summary["stalls"]["diverged"] == 3
    assert len(summary["escape"]["escape_times"]) == 2  # the escape seeds

    def no_work(*args, **kwargs):
        raise AssertionError("a stored group was recomputed")

    monkeypatch.setattr(sweep_group, "train_ensemble_steps", no_work)
    again = run_feature_learning(config, out, progress=False)
    assert again["static"] == summary["static"]


@pytest.mark.slow  # the end-to-end fixture
def test_other_configuration_is_refused(finished):
    _, out, _ = finished
    with pytest.raises(ValueError, match="different configuration"):
        run_feature_learning(
            FeatureLearningConfig.of(**{**TINY, "steps": 120, "n_records": 12}), out
        )


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("activation", "gelu", "activation"),
        ("steps", 55, "divisible by `n_records`"),
        ("n_particles", 30, "Did you mean 'particles'"),
        ("attention", "attention", "set by the experiment for each of its groups"),
        ("k", 9, "at most `d`"),
        ("success_threshold", 2.0, "success_threshold"),
        ("mean_field_sizes", (8, 16), "at least 3"),
        ("mean_field_seeds", 2, "at least 3"),
        ("escape_displacements", (1e-2, 1e-3), "at least 3"),
        ("escape_displacements", (1e-2, 0.0, 1e-3), "escape_displacements"),
        ("escape_drop", 1.5, "escape_drop"),
        ("escape_steps", 55, "multiple of the steps between records"),
        ("attention_ratios", (1.0, -2.0), "attention_ratios"),
        ("prompt_lengths", (16, 64), "must include 0"),
        ("prompt_lengths", (16, -1, 0), "prompt_lengths"),
    ],
)
def test_bad_configuration_names_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        FeatureLearningConfig.of(**{**TINY, field: value})


def test_command_line_reports_bad_values(capsys, tmp_path):
    code = _cli.main(["run", "feature-learning", "--out", str(tmp_path), "--particles", "0"])
    assert code == 2
    assert "`particles` must be a positive integer" in capsys.readouterr().err


def _synthetic_results(config, diverged_static, diverged_saddle):
    """Records shaped as the groups' (members, records): member losses 1, 2, 3, ... × 0.01,
    and a diverged member frozen at a huge loss."""
    rng = np.random.default_rng(0)

    def group(n, diverged):
        loss = np.linspace(1.0, 0.01, 5)[None] * (1 + np.arange(n))[:, None]
        loss = np.where(np.asarray(diverged)[:, None], 1e6, loss)
        records = {
            "loss": loss,
            "transformer_loss": loss * 1.01,
            "train_loss": loss,
            "condition": rng.uniform(1, 2, (n, 5)),
            "teacher_singular_values": rng.uniform(1, 2, (n, 5, 2)),
            "a_norm": loss,
            "w_norm": loss,
            "w_spread": loss,
            "splitting_curvature": -0.1 + 0 * loss,
            "flow_splitting_curvature": -0.1 + 0 * loss,
            "flow_dissipation": 1e-6 + 0 * loss,
            "teacher_mixture_slope": np.full(n, -0.1),
            "teacher_mixture_curvature": np.full(n, 0.5),
            "diverged": np.asarray(diverged),
        }
        out = summary_module.mask_diverged(records)
        out["time"] = np.broadcast_to(np.arange(5.0), loss.shape)
        return out

    results = {"static": group(3, diverged_static)}
    for ratio in config.attention_ratios:
        results[f"attention_r{ratio:g}"] = group(2, [False, False])
    for variant in experiment.SADDLE_VARIANTS:
        results[f"saddle_{variant}"] = group(1, [diverged_saddle == variant])
    for e in (0.0, *config.escape_displacements):
        results[f"escape_eps{e:g}"] = group(2, [False, e == 1e-3])
    for m in config.mean_field_sizes:
        results[f"mean_field_M{m}"] = group(3, [False, m == 16, False])
    for n in config.prompt_lengths:
        results[f"in_context_n{n}"] = group(2, [False, n == 16])
        results[f"in_context_n{n}"]["final_features"] = rng.normal(size=(2, 8, 2))
        results[f"in_context_joint_n{n}"] = group(2, [n == 0, False])
    return results


class _Problem:
    def constant_feature_loss(self):
        return 1.0


def test_diverged_members_are_counted_never_averaged():
    config = FeatureLearningConfig.of(**TINY)
    results = _synthetic_results(config, [False, True, False], diverged_saddle="hessian")
    summary = summary_module.summarize(config, _Problem(), results)
    static = summary["static"]
    assert static["seeds"] == 2 and static["diverged"] == 1
    # members 0 and 2 end at 0.01 and 0.03: the diverged one (1e6) is not in the max
    assert static["final_relative_max"] == pytest.approx(0.03)
    assert static["final_relative_median"] == pytest.approx(0.02)
    # seed 1's static run diverged: the joint runs pair with seed 0 only
    assert summary["attention"]["1"]["seeds"] == 1
    assert summary["saddle"]["variants"]["hessian"] == {"diverged": True}
    assert summary["saddle"]["variants"]["none"]["final_relative"] == pytest.approx(0.01)
    assert summary["mean_field"]["diverged"] == {"8": 0, "16": 1, "32": 0}
    assert summary["mean_field"]["spread"] is None  # M = 16 has 2 members left: no spread
    assert summary["stalls"] == {
        **summary["stalls"],
        "seeds": 2,
        "diverged": 1,
        "reached": 2,
        "stalled": 0,
        "unfinished": 0,
    }
    # every ε's curve equals the ε = 0 one: nothing escaped, and the diverged one is not
    # counted among those that did not escape
    escape = summary["escape"]
    assert escape["diverged"] == 1 and escape["not_escaped"] == 5 and escape["slope"] is None
    # n = 16's seed 1 diverged: one seed's loss, one pair's feature distance
    assert summary["in_context"]["16"]["seeds"] == 1
    assert summary["in_context"]["16"]["diverged"] == 1
    assert summary["in_context"]["∞"]["feature_distance_mean"] == pytest.approx(0.0, abs=1e-12)
    # joint n = ∞ seed 0 and static n = 16 seed 1 diverged: one pair each
    joint = summary["in_context_joint"]
    assert joint["∞"]["seeds"] == 1 and joint["∞"]["diverged"] == 1
    assert joint["16"]["seeds"] == 1 and joint["16"]["diverged"] == 0
    text = summary_module.format_feature_learning_summary(summary)
    assert "[1 diverged, not counted]" in text and "hessian" in text
    everything = _synthetic_results(config, [True] * 3, diverged_saddle="none")
    summary = summary_module.summarize(config, _Problem(), everything)
    assert summary["static"] == {"seeds": 0, "diverged": 3}
    assert summary["saddle"]["plateau_relative"] is None
    text = summary_module.format_feature_learning_summary(summary)
    assert "every seed diverged (3)" in text and "plateau L/L_c = not reached" in text
