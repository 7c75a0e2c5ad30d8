"""Standard figures of a sweep store: a phase diagram of the success rate (allocation, or the
loss threshold of `feature-learning`) over the two largest grid axes, and loss curves (median
over seeds) for every grid point."""

import numpy as np

from ._plots import _pyplot


def _label(value) -> str:
    return f"{value:g}" if isinstance(value, (int, float, np.number)) else str(value)


def _phase_axes(success) -> tuple[str, str]:
    """The two grid axes with the most values (seeds excluded), for the phase diagram."""
    sizes = {d: n for d, n in success.sizes.items() if d != "seed"}
    ranked = sorted(sizes, key=lambda d: -sizes[d])
    return ranked[0], ranked[1] if len(ranked) > 1 else ranked[0]


def plot_figures(dataset, path) -> None:
    plt = _pyplot()
    # NaN marks members not run yet: the rate is over the seeds that ran, and a cell with none
    # is drawn empty and labelled, never as 0%.
    rate = dataset["success"].mean("seed", skipna=True)
    ran = dataset["success"].notnull().sum("seed")
    x_axis, y_axis = _phase_axes(dataset["success"])
    others = [d for d in rate.dims if d not in (x_axis, y_axis)]
    table = rate.isel({d: 0 for d in others}).transpose(y_axis, x_axis)
    counts = ran.isel({d: 0 for d in others}).transpose(y_axis, x_axis)
    seeds = dataset.sizes["seed"]
    fig, (ax_phase, ax_loss) = plt.subplots(1, 2, figsize=(12, 4.5))
    image = ax_phase.imshow(table.values, origin="lower", aspect="auto", vmin=0, vmax=1)
    ax_phase.set_xticks(range(table.sizes[x_axis]), [_label(v) for v in table[x_axis].values])
    ax_phase.set_yticks(range(table.sizes[y_axis]), [_label(v) for v in table[y_axis].values])
    ax_phase.set(xlabel=x_axis, ylabel=y_axis)
    ax_phase.set_title(
        f"{dataset.attrs.get('workload', 'sweep')}: success rate over {dataset.sizes['seed']} seeds"
    )
    for (i, j), value in np.ndenumerate(table.values):
        n = int(counts.values[i, j])
        text = "not run" if n == 0 else f"{value:.0%}" + (f"\n({n} seeds)" if n < seeds else "")
        ax_phase.text(j, i, text, ha="center", va="center", color="white" if n else "grey")
    fig.colorbar(image, ax=ax_phase)
    median = dataset["loss"].median("seed")
    points = median.stack(point=[d for d in median.dims if d != "time"])
    for k in range(points.sizes["point"]):
        label = ", ".join(
            f"{n}={_label(v)}"
            for n, v in zip(points.indexes["point"].names, points["point"].values[k])
        )
        ax_loss.plot(dataset["time"], points.isel(point=k), label=label)
    units = dataset["time"].attrs.get("units", "time")
    ax_loss.set(xlabel=units, ylabel="loss (median over seeds)", yscale="log")
    ax_loss.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
