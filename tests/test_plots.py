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
