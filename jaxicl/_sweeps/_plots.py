"""Standard figures of a sweep store: a phase diagram of the success rate (allocation, or the
loss threshold of `feature-learning`) over the two largest grid axes, and loss curves (median
over seeds) for every grid point."""

import numpy as np

from .._host._figures import _pyplot


def _label(value) -> str:
    return f"{value:g}" if isinstance(value, (int, float, np.number)) else str(value)


def _phase_axes(flag) -> tuple[str, str]:
    """The two grid axes with the most values (seeds excluded), for the phase diagram."""
    sizes = {d: n for d, n in flag.sizes.items() if d != "seed"}
    ranked = sorted(sizes, key=lambda d: -sizes[d])
    return ranked[0], ranked[1] if len(ranked) > 1 else ranked[0]


def _flag(dataset) -> str | None:
    """The summary to map: `success` when the study records it, else its first flag."""
    flags = [
        n for n, v in dataset.data_vars.items() if "meaning" in v.attrs and "time" not in v.dims
    ]
    flags = [n for n in flags if n != "diverged"] or flags
    if not flags or all(d == "seed" for d in dataset[flags[0]].dims):
        return None
    return "success" if "success" in flags else flags[0]


def _series(dataset, var: str | None) -> str:
    """The series to draw: `var`, else `loss` when recorded, else the first series."""
    over_time = [n for n, v in dataset.data_vars.items() if "time" in v.dims]
    if var is not None:
        if var not in over_time:
            raise ValueError(
                f"`--var` must name a series recorded over time: one of {over_time}; got {var!r}."
            )
        return var
    return "loss" if "loss" in over_time else over_time[0]


def _healthy(dataset, values):
    """`values` with every member that diverged set to NaN, and how many members that was:
    a diverged member's frozen (or infinite) loss would move a median it has no part in."""
    if "diverged" not in dataset:
        return values, 0
    flag = dataset["diverged"]
    if "time" in flag.dims:  # recorded per record: the member's flag is its last one
        flag = flag.isel(time=-1)
    diverged = flag == 1
    return values.where(~diverged), int(diverged.sum())


def _phase_diagram(ax, dataset, name, fig) -> None:
    # NaN marks members not run yet, or (for an outcome such as `success`) members without an
    # outcome (e.g. still in warm-up): the rate is over the seeds with an outcome, the others
    # are counted on the cell, and a cell with none is drawn empty, never as 0%.
    rate = dataset[name].mean("seed", skipna=True)
    outcome = dataset[name].notnull().sum("seed")
    ran = (dataset["diverged"] if "diverged" in dataset else dataset[name]).notnull().sum("seed")
    x_axis, y_axis = _phase_axes(dataset[name])
    if x_axis == y_axis:  # one grid axis: a single row
        rate, outcome, ran = (a.expand_dims(row=[""]) for a in (rate, outcome, ran))
        y_axis = "row"
    others = [d for d in rate.dims if d not in (x_axis, y_axis)]
    table = rate.isel({d: 0 for d in others}).transpose(y_axis, x_axis)
    counts = ran.isel({d: 0 for d in others}).transpose(y_axis, x_axis)
    outcomes = outcome.isel({d: 0 for d in others}).transpose(y_axis, x_axis)
    seeds = dataset.sizes["seed"]
    image = ax.imshow(table.values, origin="lower", aspect="auto", vmin=0, vmax=1)
    ax.set_xticks(range(table.sizes[x_axis]), [_label(v) for v in table[x_axis].values])
    ax.set_yticks(range(table.sizes[y_axis]), [_label(v) for v in table[y_axis].values])
    ax.set(xlabel=x_axis, ylabel=y_axis)
    ax.set_title(f"{dataset.attrs.get('study', 'sweep')}: {name} rate over {seeds} seeds")
    for (i, j), value in np.ndenumerate(table.values):
        n, k = int(counts.values[i, j]), int(outcomes.values[i, j])
        if n == 0:
            text = "not run"
        elif k == 0:
            text = f"no outcome\n({n} seeds)"
        else:
            text = f"{value:.0%}" + (f"\nof {k}" if k < n else "")
            text += f"\n({n} seeds ran)" if n < seeds else ""
        ax.text(j, i, text, ha="center", va="center", color="white" if k else "grey")
    fig.colorbar(image, ax=ax)


def plot_figures(dataset, path, var: str | None = None) -> int:
    """Draw the figures into `path`: the phase diagram of the success rate (or the first flag)
    and the median over seeds of `var` (default `loss`) at every grid point, members that
    diverged excluded. Returns how many were excluded."""
    name = _series(dataset, var)
    plt = _pyplot()
    flag = _flag(dataset)
    panels = 2 if flag is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.5), squeeze=False)
    if flag is not None:
        _phase_diagram(axes[0, 0], dataset, flag, fig)
    ax_loss = axes[0, -1]
    values, excluded = _healthy(dataset, dataset[name])
    median = values.median("seed", skipna=True)
    grid_dims = [d for d in median.dims if d != "time"]
    points = median.stack(point=grid_dims) if grid_dims else median.expand_dims(point=[0])
    for k in range(points.sizes["point"]):
        label = (
            ", ".join(
                f"{n}={_label(v)}"
                for n, v in zip(points.indexes["point"].names, points["point"].values[k])
            )
            if grid_dims
            else name
        )
        ax_loss.plot(dataset["time"], points.isel(point=k), label=label)
    units = dataset["time"].attrs.get("units", "time")
    positive = bool((median > 0).all())
    left_out = f", {excluded} diverged excluded" if excluded else ""
    ax_loss.set(
        xlabel=units,
        ylabel=f"{name} (median over seeds{left_out})",
        yscale="log" if positive else "linear",
    )
    ax_loss.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return excluded
