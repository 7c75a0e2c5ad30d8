import json

import numpy as np
import pytest

from jaxicl._experiments._overlapping_tasks import (
    OverlappingTasksConfig,
    _split_statistics,
    format_overlapping_summary,
    group_summary,
    run_overlapping_tasks,
)


TINY = dict(
    heads=(2, 4),
    n_members=4,
    steps=40,
    n_records=4,
    chunk_steps=20,
    batch_size=16,
    eval_prompts=64,
)


def test_split_statistics_tell_pairs_from_superposition():
    """Member 0: a + and a − pure head per task (split). Member 1: four heads mixing both
    tasks (superposition). Member 2: pure heads but task 2 has no negative head."""
    strength = np.array(
        [
            [[1, 0], [1, 0], [0, 1], [0, 1]],
            [[1, 1], [1, 0.8], [0.9, 1], [1, 1]],
            [[1, 0], [1, 0], [0, 1], [0, 1]],
        ],
        float,
    )
    omega = np.array(
        [
            [[1, 0], [-1, 0], [0, 1], [0, -1]],
            [[1, 1], [-1, -1], [1, 1], [-1, -1]],
            [[1, 0], [-1, 0], [0, 1], [0, 1]],
        ],
        float,
    )
    mu = np.where(omega != 0, strength / np.where(omega != 0, np.abs(omega), 1.0), 1.0)
    stats = _split_statistics(omega, mu)
    assert np.allclose(stats["strength"], strength)
    assert stats["split"].tolist() == [True, False, False]
    assert (stats["purity"][1] < 0.9).all() and (stats["purity"][0] == 1).all()


@pytest.mark.slow  # end-to-end; the statistics and summary tests stay fast
def test_runs_and_reports(tmp_path):
    summary = run_overlapping_tasks(OverlappingTasksConfig.of(**TINY), tmp_path, progress=False)
    assert set(summary["groups"]) == {"2", "4"}
    for g in summary["groups"].values():
        assert {"split_rate", "split_stderr", "mixed_head_fraction", "purity_median"} <= set(g)
        assert 0.5 <= g["purity_median"] <= 1 and np.isfinite(g["final_loss_median"])
    assert json.loads((tmp_path / "summary.json").read_text())["config"]["heads"] == [2, 4]
    assert (tmp_path / "overlapping_tasks.png").stat().st_size > 30_000


def test_bad_config_names_the_field():
    with pytest.raises(ValueError, match="`heads`"):
        OverlappingTasksConfig.of(**dict(TINY, heads=(0,)))
    with pytest.raises(ValueError, match="`chunk_steps`"):
        OverlappingTasksConfig.of(**dict(TINY, chunk_steps=30))


def test_a_diverged_member_is_counted_not_averaged():
    """Member 2 is frozen where it diverged: its loss and heads are no outcome of training."""
    stats = {
        "purity": np.array([[1.0, 1.0], [1.0, 0.6], [0.5, 0.5]]),
        "live": np.ones((3, 2), bool),
        "split": np.array([True, False, False]),
    }
    loss = np.array([0.1, 0.3, 1e6])
    g = group_summary(stats, loss, diverged=np.array([False, False, True]))
    assert g["members"] == 2 and g["diverged"] == 1
    assert g["split_rate"] == 0.5 and g["final_loss_q90"] < 0.3
    assert g["mixed_head_fraction"] == 0.25
    nothing = group_summary(stats, loss, diverged=np.ones(3, bool))
    assert nothing == {"members": 0, "diverged": 3}
    assert "every member diverged (3)" in format_overlapping_summary({"groups": {"4": nothing}})
