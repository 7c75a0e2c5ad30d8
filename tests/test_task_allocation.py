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
    horizon=80.0,
    n_records=50,
    warmup_scales=(1e-3, 3e-3),
    separation_lengths=(100,),
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("task_allocation")
    return out, run_task_allocation(TaskAllocationConfig(**TINY), out, progress=False)


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


def test_balanced_init_allocates_head_h_to_task_h(tiny_run):
    out, summary = tiny_run
    assert summary["groups"]["balanced/H3"]["success_rate"] == 1.0
    with np.load(out / "groups.npz") as groups:
        omega, mu = groups["balanced/H3/omega_t"][:, -1], groups["balanced/H3/mu_t"][:, -1]
    strength = np.abs(omega * mu)  # (examples, H, n)
    assert (strength.argmax(axis=-1) == np.arange(3)).all()


def test_emergence_is_shorter_than_warmup(tiny_run):
    _, summary = tiny_run
    for scheme in ("balanced", "random-positive"):
        g = summary["groups"][f"{scheme}/H3"]
        assert g["emergence_end_median"] - g["warmup_end_median"] < g["warmup_end_median"]


def test_factorized_warmup_scales_inversely_with_init(tiny_run):
    _, summary = tiny_run
    assert -1.2 < summary["warmup_scaling"]["factorized"]["loglog_slope"] < -0.8


def test_bad_config_names_the_field():
    with pytest.raises(ValueError, match="`n_seeds`"):
        TaskAllocationConfig(**dict(TINY, n_seeds=0))
    with pytest.raises(ValueError, match="`dt_merged`"):
        TaskAllocationConfig(**dict(TINY, dt_merged=0.0003))
