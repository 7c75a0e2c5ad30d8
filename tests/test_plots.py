"""Figures cope with what diverging or degenerate runs give them (issue 13, D8)."""

import matplotlib


matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jaxicl._host._figures import histogram  # noqa: E402


def test_histograms_of_degenerate_or_non_finite_values_draw_without_error():
    fig, ax = plt.subplots()
    # values one float apart: numpy itself cannot make 30 bins of this range (the figure step
    # of a short valid run once died on it, after all the compute)
    nearly_equal = np.array([1.0, 1.0 + 2.2e-16, 1.0])
    with pytest.raises(ValueError, match="Too many bins"):
        np.histogram(nearly_equal, bins=30)
    histogram(ax, nearly_equal, bins=30)
    assert sum(p.get_height() for p in ax.patches) == 3  # every member drawn, in one bin
    ax.clear()
    histogram(ax, [np.inf, np.nan, -np.inf], bins=30)  # every member diverged: nothing to draw
    assert len(ax.patches) == 0
    histogram(ax, [0.1, np.nan, 0.3, 0.2], bins=3)  # the finite ones only
    assert sum(p.get_height() for p in ax.patches) == 3
    plt.close(fig)


def test_plot_draws_a_chosen_series_without_the_diverged_members(tmp_path, capsys):
    """`jaxicl plot STORE --var NAME`: any series over time; the medians leave out members
    that diverged (an infinite loss would move them) and the command says how many."""
    from own_study import Quadratic

    from jaxicl import _cli, sweep

    store = tmp_path / "store"
    grid = {"learning_rate": [0.1, 1e20]}  # |1 − 2η|^(2t) overflows at η = 1e20
    data = sweep(Quadratic(), grid=grid, seeds=3, store=store, progress=False)
    assert int((data["diverged"] == 1).sum()) == 3
    figure = tmp_path / "w0.png"
    assert _cli.main(["plot", str(store), "--var", "w0", "--out", str(figure)]) == 0
    assert "3 diverged member(s) excluded from the medians" in capsys.readouterr().out
    assert figure.stat().st_size > 10_000
    assert _cli.main(["plot", str(store), "--var", "nope"]) == 2
    assert "`--var` must name a series recorded over time" in capsys.readouterr().err
