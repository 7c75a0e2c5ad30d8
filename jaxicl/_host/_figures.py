"""Helpers shared by every figure. matplotlib is imported lazily so that importing jaxicl stays
light."""

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def histogram(ax, values, *, bins: int, **style) -> None:
    """`ax.hist` of the finite values only (a diverged member is counted in the tables, not
    drawn), with fewer bins where the values barely differ (one bin when they are equal)."""
    values = np.asarray(values, dtype=float).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return
    low, high = values.min(), values.max()
    if high - low <= 1e-9 * max(1.0, abs(high)):
        ax.hist(values, bins=1, range=(low - 0.5, high + 0.5), **style)
        return
    ax.hist(values, bins=bins, **style)


def save_figure(fig, path, *, dpi: int = 110) -> None:
    """Lay out, write and close a figure. Degenerate data (one record, nothing finite in a
    panel) can leave tight_layout no room; the figure is then written with the layout as is."""
    import warnings

    import matplotlib.pyplot as plt

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Tight layout not applied")
        fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def legend(ax, **style) -> None:
    """A legend when something drawn has a label (a panel can be empty: nothing finite)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**style)
