"""The full-vs-reduced figure: what the gap between the full model and the reduced flow is."""

import numpy as np

from .._host._figures import _pyplot, save_figure


def _rows(summary, dynamics, length):
    rows = [
        r
        for r in summary["rows"]
        if r["dynamics"] == dynamics and r["context_len"] == length and r["batch"] is not None
    ]
    return [r["batch"] for r in rows], rows


def _values(rows, key):
    return [np.nan if r[key] is None else r[key] for r in rows]


def plot_full_vs_reduced(runs, summary, config, path) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 5, figsize=(27, 5))
    lengths = config.context_lens
    for k, length in enumerate(lengths):
        color = f"C{k}"
        exact = next(
            r for r in summary["rows"] if r["dynamics"] == "exact" and r["context_len"] == length
        )
        for key, ax in (("gap_to_reduced", axes[0]), ("gap_to_exact", axes[1])):
            for dynamics, style in (("full", "o-"), ("ansatz", "s--")):
                batches, rows = _rows(summary, dynamics, length)
                label = f"L = {length}, {'full model' if dynamics == 'full' else 'on the ansatz'}"
                ax.plot(batches, _values(rows, key), style, color=color, label=label)
        if exact["gap_to_reduced"] is not None:
            axes[0].axhline(
                exact["gap_to_reduced"],
                color=color,
                ls=":",
                label=f"L = {length}, exact finite-L flow (expansion error)",
            )
        batches, rows = _rows(summary, "full", length)
        first = _values(rows, "gap_to_exact")[0]
        if k == 0 and np.isfinite(first):
            b = np.asarray(batches, float)
            axes[1].plot(b, first * np.sqrt(b[0] / b), color="grey", lw=0.8, label="∝ 1/√B")
    for ax, title in (
        (axes[0], "Gap to the reduced flow"),
        (axes[1], "Gap to the exact finite-L flow (sampling)"),
    ):
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="prompts per step B",
            ylabel="max |ΔΩ| / max |Ω| or max |ΔM| / max |M| (larger), median",
            title=title,
        )
        ax.legend(fontsize=7)
    length, batch = lengths[0], max(config.batches)
    styles = (
        ("reduced", None, "k-", "reduced flow"),
        ("exact", None, "C3--", "exact finite-L flow"),
        ("ansatz", batch, "C2-", f"on the ansatz, B = {batch}"),
        ("full", batch, "C0-", f"full model, B = {batch}"),
    )
    for dynamics, b, style, label in styles:
        run = runs[(dynamics, length, b)]
        axes[2].plot(run["time"], run["loss"][0], style, lw=1, alpha=0.8, label=label)
        omega = run["omega_t"][0]  # (records, H, n)
        for h in range(omega.shape[1]):
            axes[3].plot(
                run["time"],
                omega[:, h, h % omega.shape[2]],
                style,
                lw=1,
                label=label if h == 0 else None,
            )
    axes[2].set(
        xlabel="steps × learning rate (plain SGD clock)",
        ylabel="ICL loss (training batch)",
        title=f"Seed 0, L = {length}",
    )
    axes[3].set(
        xlabel="steps × learning rate (plain SGD clock)",
        ylabel="ω of head h on task h mod n",
        title=f"Seed 0, L = {length}: the served tasks' ω",
    )
    for ax in axes[2:4]:
        ax.legend(fontsize=7)
    if "allocation" in summary:
        _allocation_bars(axes[4], summary["allocation"])
    fig.suptitle(
        f"Full softmax model against the reduced dynamics of the weights' gradient flow: "
        f"d = {config.study.d} in {config.study.n_tasks} blocks, H = {config.study.heads}, "
        f"{config.parametrization} model, {config.n_seeds} seeds"
    )
    save_figure(fig, path)


def _allocation_bars(ax, allocation):
    labels = {
        "full": "full model\n(plain SGD)",
        "reduced": "reduced,\nweights' flow",
        "reduced-euclidean": "reduced,\nEuclidean (Ω, M)",
    }
    rows = allocation["rows"]
    names = [n for n in labels if n in rows]
    rates = [np.nan if rows[n]["rate"] is None else rows[n]["rate"] for n in names]
    errors = [0.0 if rows[n]["stderr"] is None else rows[n]["stderr"] for n in names]
    ax.bar(range(len(names)), rates, yerr=errors, capsize=4, color=["C0", "k", "C1"])
    ax.set_xticks(range(len(names)), [labels[n] for n in names], fontsize=8)
    s = allocation["settings"]
    ax.set(
        ylim=(0, 1.05),
        ylabel="fraction of members allocated (± 1 s.e.)",
        title=f"Allocation, same inits: d = {s['d']}, L = {s['context_len']}, "
        f"s = {s['init_scale']:g}",
    )
