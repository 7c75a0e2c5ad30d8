"""`jaxicl bench` at a tiny scale: every workload runs and reports sane, saved figures."""

import json
import math

import pytest

from jaxicl import _cli
from jaxicl._bench import WORKLOADS


@pytest.mark.slow  # a benchmark
def test_bench_reports_every_workload(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert _cli.main(["bench", "--scale", "0.002", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [w["workload"] for w in report["workloads"]] == list(WORKLOADS)
    assert report["matmul_peak_flop_per_s"] > 1e8
    for row in report["workloads"]:
        assert row["member_steps_per_s"] > 0 and row["compile_s"] >= 0
        # achieved rate from XLA's flop count: positive and below the measured matmul peak × 4
        assert 0 < row["fraction_of_matmul_peak"] < 4 and math.isfinite(row["flop_per_s"])
    assert "member-steps/s" in capsys.readouterr().out
    assert _cli.main(["bench", "--scale", "0"]) == 2


def test_bad_scale_and_unwritable_report_fail_at_once(tmp_path, capsys):
    """Checked before any workload runs: an infinite scale, and a report path in a directory
    that does not exist (the report was once lost after the whole benchmark)."""
    from jaxicl import _cli

    assert _cli.main(["bench", "--scale", "inf"]) == 2
    assert "finite number > 0" in capsys.readouterr().err
    missing = tmp_path / "no-such-dir" / "bench.json"
    assert _cli.main(["bench", "--out", str(missing)]) == 2
    assert "cannot write the report" in capsys.readouterr().err
