import json

import numpy as np
import pytest

import jaxicl._cli as cli
from jaxicl._experiments._paired_heads import PairedHeadsConfig, run_paired_heads


TINY = dict(
    heads=(1, 2),
    n_members=4,
    steps=40,
    n_records=4,
    chunk_steps=20,
    batch_size=16,
    eval_prompts=64,
    context_len=8,
    eval_lengths=(4, 8),
)


class Interrupt(Exception):
    pass


@pytest.mark.slow  # end-to-end runs; the summary test keeps the experiment in the fast lane
def test_interrupted_run_resumes_to_identical_results(tmp_path):
    config = PairedHeadsConfig.of(**TINY)
    whole = run_paired_heads(config, tmp_path / "whole", progress=False)

    def kill_after_first_chunk_of_h2(n_heads, done):
        if n_heads == 2 and done == 20:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_paired_heads(
            config, tmp_path / "resumed", progress=False, on_chunk=kill_after_first_chunk_of_h2
        )
    assert not (tmp_path / "resumed" / "summary.json").exists()
    chunks_seen = []
    resumed = run_paired_heads(
        config,
        tmp_path / "resumed",
        progress=False,
        on_chunk=lambda h, done: chunks_seen.append((h, done)),
    )
    assert chunks_seen == [(2, 40)]  # only the missing chunk ran again
    for h in (1, 2):
        a = np.load(tmp_path / "whole" / f"records_H{h}.npz")
        b = np.load(tmp_path / "resumed" / f"records_H{h}.npz")
        assert set(a.files) == set(b.files)
        for name in a.files:
            np.testing.assert_array_equal(a[name], b[name])
    # the resumed summary is the uninterrupted one, line for line (D22)
    assert json.dumps(resumed) == json.dumps(whole)
    assert (tmp_path / "resumed" / "paired_heads.png").stat().st_size > 10_000


@pytest.mark.slow  # two end-to-end runs; the summary test keeps the experiment fast
def test_different_configuration_is_refused(tmp_path):
    run_paired_heads(PairedHeadsConfig.of(**TINY), tmp_path, progress=False)
    before = (tmp_path / "config.json").read_text()
    with pytest.raises(ValueError, match="n_members: stored 4, requested 8"):
        run_paired_heads(PairedHeadsConfig.of(**dict(TINY, n_members=8)), tmp_path, progress=False)
    assert (tmp_path / "config.json").read_text() == before


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(n_members=0), "`n_members`"),
        (dict(heads=(0,)), "`heads`"),
        (dict(init_scale=float("nan")), "`init_scale`"),
        (dict(chunk_steps=15), "`chunk_steps`"),
        # At scale 0 no weight ever moves and the structure statistics are 0/0.
        (dict(init_scale=0.0), "`init_scale`"),
        (dict(seed=-1), "`seed`"),
        (dict(seed=2**63), "`seed`"),
        (dict(heads=(2, 2)), "`heads` repeats 2"),
    ],
)
def test_bad_config_names_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        PairedHeadsConfig.of(**dict(TINY, **overrides))


@pytest.mark.slow  # end-to-end runs; the summary test keeps the experiment in the fast lane
def test_cli_runs_and_reports(tmp_path, capsys):
    out = tmp_path / "run"
    args = [
        "run",
        "paired-heads",
        "--out",
        str(out),
        "--quiet",
        "--heads",
        "2",
        "--n-members",
        "3",
        "--steps",
        "20",
        "--n-records",
        "2",
        "--chunk-steps",
        "10",
        "--batch-size",
        "8",
        "--eval-prompts",
        "32",
        "--context-len",
        "6",
        "--eval-lengths",
        "4,8",
    ]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "final loss mean" in printed and "Bayes ridge" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["groups"]["2"]["members"] == 3


def test_cli_bad_value_exits_with_message(tmp_path, capsys):
    code = cli.main(["run", "paired-heads", "--out", str(tmp_path), "--n-members", "-3"])
    assert code == 2
    assert "`n_members` must be a positive integer" in capsys.readouterr().err
    assert not (tmp_path / "config.json").exists()


def test_summary_has_structure_and_length_curves(tmp_path):
    config = PairedHeadsConfig.of(**dict(TINY, eval_lengths=(4, 8, 16)))
    summary = run_paired_heads(config, tmp_path, progress=False)
    for g in summary["groups"].values():
        for name in ("kq_diagonal_ratio", "ov_last_entry_ratio", "zero_sum_median"):
            assert 0 <= g[name] <= 1
        assert 0 <= g["paired_fraction"] <= 1 and np.isfinite(g["final_loss_stderr"])
    assert summary["groups"]["1"]["paired_fraction"] == 0  # one head cannot pair
    by_length = summary["by_length"]
    assert by_length["lengths"] == [4, 8, 16]
    for h in ("1", "2"):
        assert len(by_length["models_median"][h]) == 3
    predictors = by_length["predictors"]
    # Bayes ridge is optimal: no other predictor beats it at any L (up to Monte Carlo noise).
    for name in ("gd", "debiased_gd", "kernel_smoother"):
        assert all(b <= p + 0.02 for b, p in zip(predictors["bayes_ridge"], predictors[name]))
    with np.load(tmp_path / "records_H2.npz") as records:
        assert records["loss_by_length"].shape == (4, 3)
    assert (tmp_path / "paired_heads.png").stat().st_size > 50_000


def test_a_group_whose_members_all_diverge_is_counted_not_averaged(tmp_path):
    """At init scale 1e200 the squared error overflows for every member: the summary counts
    them, gives no loss or structure statistics (None, not a number from nothing), and the
    table says so."""
    from jaxicl._experiments._paired_heads import format_paired_heads_summary

    config = PairedHeadsConfig.of(**dict(TINY, heads=(1,), init_scale=1e200))
    summary = run_paired_heads(config, tmp_path / "run", progress=False)
    g = summary["groups"]["1"]
    assert g["diverged"] == 4 and g["final_loss_mean"] is None
    assert "all 4 diverged" in format_paired_heads_summary(summary)
