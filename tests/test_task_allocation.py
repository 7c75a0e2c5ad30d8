import copy
import json

import numpy as np
import pytest

from jaxicl._experiments._task_allocation import TaskAllocationConfig, run_task_allocation


TINY = dict(
    d=9,
    n_tasks=3,
    context_len=50,
    heads=(3,),
    n_seeds=8,
    init_scale=2e-2,  # a short warm-up (∝ 1/scale; about t = 35 here)
    horizon=50.0,
    n_records=50,
    warmup_scales=(2e-2, 6e-2),
    separation_lengths=(100,),
    separation_prompts=1024,
    horizon_cap=300.0,
    horizon_merged=10.0,
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("task_allocation")
    return out, run_task_allocation(TaskAllocationConfig.of(**TINY), out, progress=False)


@pytest.mark.slow  # the end-to-end fixture; smaller runs below stay fast
def test_outputs_have_the_promised_fields(tiny_run):
    out, summary = tiny_run
    assert set(summary["groups"]) == {"balanced/H3", "random-positive/H3", "random-sign/H3"}
    for g in summary["groups"].values():
        assert {
            "success_rate",
            "success_stderr",
            "warmup_end_median",
            "emergence_end_median",
        } <= set(g)
    assert set(summary["warmup_scaling"]) == {"factorized", "merged"}
    assert json.loads((out / "summary.json").read_text())["config"]["n_seeds"] == 8
    assert (out / "task_allocation.png").stat().st_size > 50_000


@pytest.mark.slow  # the end-to-end fixture; smaller runs below stay fast
def test_rerun_resumes_from_stored_groups(tiny_run, monkeypatch):
    """A second run in the same directory trains nothing: every group's sweep is stored."""
    from jaxicl._sweeps._group import Group

    out, summary = tiny_run

    def must_not_run(*args, **kwargs):
        raise AssertionError("a stored group was recomputed")

    monkeypatch.setattr(Group, "advance", must_not_run)
    again = run_task_allocation(TaskAllocationConfig.of(**TINY), out, progress=False)
    # JSON text: NaN (a phase not reached) compares equal to itself there.
    assert json.dumps(again["groups"]) == json.dumps(summary["groups"])


@pytest.mark.slow  # the end-to-end fixture; smaller runs below stay fast
def test_balanced_init_allocates_head_h_to_task_h(tiny_run):
    out, summary = tiny_run
    assert summary["groups"]["balanced/H3"]["success_rate"] == 1.0
    with np.load(out / "groups.npz") as groups:
        omega, mu = groups["balanced/H3/omega_t"][:, -1], groups["balanced/H3/mu_t"][:, -1]
    strength = np.abs(omega * mu)  # (examples, H, n)
    assert (strength.argmax(axis=-1) == np.arange(3)).all()


@pytest.mark.slow  # the end-to-end fixture; smaller runs below stay fast
def test_emergence_is_shorter_than_warmup(tiny_run):
    _, summary = tiny_run
    for scheme in ("balanced", "random-positive"):
        g = summary["groups"][f"{scheme}/H3"]
        assert g["emergence_end_median"] - g["warmup_end_median"] < g["warmup_end_median"]


@pytest.mark.slow  # the end-to-end fixture; smaller runs below stay fast
def test_factorized_warmup_scales_inversely_with_init(tiny_run):
    _, summary = tiny_run
    assert -1.2 < summary["warmup_scaling"]["factorized"]["loglog_slope"] < -0.8


@pytest.mark.slow  # the end-to-end fixture
def test_groups_still_in_warmup_are_told_their_own_flows_horizon(tiny_run):
    """random-sign runs the merged flow to `horizon_merged`: when its seeds are still in warm-up
    the summary names that horizon and `--horizon-merged`, not the factorized flow's."""
    from jaxicl._experiments._task_allocation import format_allocation_summary

    _, summary = tiny_run
    waiting = copy.deepcopy(summary)
    for g in waiting["groups"].values():
        g["success_rate"], g["still_in_warmup"] = None, 1
    text = format_allocation_summary(waiting)
    bounds = "only bounds (each waiting seed failing, or allocating)"
    assert (
        "no allocation rate for balanced/H3, random-positive/H3: seeds still in warm-up at the "
        f"horizon (t = {summary['horizon_used']:g}), {bounds}; raise `--horizon` (and "
        "`--horizon-cap`)."
    ) in text
    assert (
        "no allocation rate for random-sign/H3: seeds still in warm-up at the horizon (t = 10), "
        f"{bounds}; raise `--horizon-merged`."
    ) in text


@pytest.mark.slow  # an end-to-end run; the study-level warm-up test stays fast
def test_no_rate_while_seeds_are_still_in_warmup(tmp_path):
    """At r = 5 from scale 1e-3 the warm-up lasts hundreds of time units under the weights'
    flow: a horizon capped at 10 leaves every seed on its plateau, and the summary says so
    instead of reporting 0% and a warm-up end (the defect of a fixed horizon)."""
    from jaxicl._experiments._task_allocation import format_allocation_summary

    short_horizon = dict(d=15, context_len=100, n_seeds=16, init_scale=1e-3, horizon=10.0)
    short_horizon.update(horizon_cap=10.0, n_records=20, warmup_scales=(1e-3, 2e-3))
    short_horizon.update(horizon_merged=2.0)
    config = TaskAllocationConfig.of(**dict(TINY, **short_horizon))
    summary = run_task_allocation(config, tmp_path / "run", progress=False)
    g = summary["groups"]["random-positive/H3"]
    assert g["still_in_warmup"] == 16 and g["success_rate"] is None
    assert g["success_bounds"] == [0.0, 1.0]  # nothing is known yet
    assert np.isnan(g["warmup_end_median"])
    text = format_allocation_summary(summary)
    assert "still in warm-up" in text and "--horizon" in text


def test_horizon_follows_the_warmup_of_the_chosen_d():
    """The automatic horizon is 2.5× the slower deterministic probe's warm-up end: under the
    weights' flow the warm-up is longer at d = 15 (r = 5: ω moves 1/(n r √D) as fast as the
    loss's gradient) than at d = 50, and both exceed the minimum horizon."""
    from jaxicl._experiments._task_allocation import factorized_horizon

    config = TaskAllocationConfig.of(d=50, warmup_scales=(1e-3,))
    short = factorized_horizon(config)
    long = factorized_horizon(TaskAllocationConfig.of(d=15, warmup_scales=(1e-3,)))
    assert config.study.horizon < short < long < config.horizon_cap


def test_bad_config_names_the_field():
    with pytest.raises(ValueError, match="`n_seeds`"):
        TaskAllocationConfig.of(**dict(TINY, n_seeds=0))
    with pytest.raises(ValueError, match="`dt_merged`"):
        TaskAllocationConfig.of(**dict(TINY, dt_merged=0.0003))
    with pytest.raises(ValueError, match="`flow`"):
        TaskAllocationConfig.of(**dict(TINY, flow="riemannian"))
    with pytest.raises(ValueError, match="`schemes`"):
        TaskAllocationConfig.of(**dict(TINY, schemes=("balanced", "uniform")))
    with pytest.raises(ValueError, match="`heads`"):
        TaskAllocationConfig.of(**dict(TINY, heads=(0,)))


@pytest.mark.slow
def test_preset_d15_h3_allocates_at_the_weight_flows_rate(tmp_path, capsys):
    """`--preset d15-h3` (d = 15, H = n = 3, L = 100, spread 0.1), 512 seeds, under the weights'
    gradient flow: about 29% of random-positive seeds allocate (29.1% ± 0.7% measured at 4096
    seeds; the Euclidean (Ω, M) flow gave 81.6% ± 0.6%), every seed leaves warm-up under the
    automatic horizon, and almost every failure is the stall."""
    from jaxicl import _cli

    out = tmp_path / "r5"
    flags = ["--n-seeds", "512", "--separation-lengths", "100", "--separation-prompts", "512"]
    flags += ["--warmup-scales", "0.001,0.002", "--out", str(out), "--quiet"]
    assert _cli.main(["run", "task-allocation", "--preset", "d15-h3", *flags]) == 0
    assert "random-positive/H3" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["flow"] == "weights"
    g = summary["groups"]["random-positive/H3"]
    assert g["still_in_warmup"] == 0
    assert abs(g["success_rate"] - 0.29) <= 0.02 + 3 * g["success_stderr"]
    failures = round((1 - g["success_rate"]) * g["seeds"])
    assert g["stalled"] >= 0.9 * failures


@pytest.mark.slow
def test_preset_chen_code_runs_the_authors_init(tmp_path, capsys):
    """`--preset chen-code` runs the authors' initialisation (d = 50, H = n = 3, L = 100,
    s = L^(−3/4)) as its only scheme, on a short horizon here: the table has its group, and a
    seed still in warm-up gets no rate."""
    from jaxicl import _cli

    out = tmp_path / "chen"
    flags = ["--n-seeds", "8", "--horizon", "250", "--horizon-cap", "250", "--n-records", "50"]
    flags += ["--separation-lengths", "100", "--separation-prompts", "256"]
    assert (
        _cli.main(["run", "task-allocation", "--preset", "chen-code", *flags, "--out", str(out)])
        == 0
    )
    text = capsys.readouterr().out
    assert "chen-code/H3" in text and "weights' gradient flow" in text
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["groups"]) == {"chen-code/H3"}
    assert summary["config"]["init_scale"] == pytest.approx(100**-0.75)


@pytest.mark.slow  # an end-to-end run from the command line
def test_diverged_members_still_get_a_table_and_figures(tmp_path, capsys):
    """At init scale 100 the reduced flow diverges in every random seed: the run still writes
    its summary and figure, counts the diverged seeds and prints the table (the figure step
    once failed on the non-finite losses, after all the compute)."""
    from jaxicl import _cli

    out = tmp_path / "blown"
    flags = ["--d", "9", "--context-len", "50", "--heads", "3", "--n-seeds", "8"]
    flags += ["--init-scale", "100", "--horizon", "1", "--horizon-cap", "1", "--n-records", "1"]
    flags += ["--horizon-merged", "0.5", "--warmup-scales", "0.004,0.012"]
    flags += ["--separation-lengths", "100", "--separation-prompts", "256"]
    assert _cli.main(["run", "task-allocation", *flags, "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    g = summary["groups"]["random-positive/H3"]
    # diverged, not "in warm-up": no rate, no advice to raise the horizon (which cannot help)
    assert g["diverged"] == 8 and g["still_in_warmup"] == 0 and g["success_rate"] is None
    assert (out / "task_allocation.png").stat().st_size > 30_000
    text = capsys.readouterr().out
    assert "random-positive/H3" in text and "diverged" in text
    assert "raise `--horizon`" not in text


def test_repeated_heads_are_refused():
    with pytest.raises(ValueError, match="`heads` repeats 3"):
        TaskAllocationConfig.of(**dict(TINY, heads=(3, 3)))


def test_a_diverged_warmup_probe_is_counted_as_diverged_not_in_warmup():
    """A start that blows up (scale 1000) has no warm-up end: it is counted as diverged, not
    as still in warm-up, and the slope is fitted over the others."""
    from jaxicl._experiments._task_allocation import warmup_scaling

    config = TaskAllocationConfig.of(**dict(TINY, warmup_scales=(2e-2, 6e-2, 1e3)))
    scaling = warmup_scaling(config, 100.0)
    for flow in ("factorized", "merged"):
        assert scaling[flow]["diverged"] == 1 and scaling[flow]["still_in_warmup"] == 0
        assert np.isnan(scaling[flow]["warmup_end"][2])
    assert -1.2 < scaling["factorized"]["loglog_slope"] < -0.8
