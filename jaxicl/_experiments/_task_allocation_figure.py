"""The task-allocation figure: eight panels, one question each."""

import numpy as np

from .._host._figures import _pyplot, histogram, legend, save_figure


def plot_task_allocation(groups, summary, config, path) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(2, 4, figsize=(20, 9))
    schemes = [s for s in config.schemes if any(s == g for g, _ in groups)]
    colors = dict(zip(schemes, ("C0", "C1", "C2", "C3")))
    study = config.study
    n = study.n_tasks
    focus = n if n in config.heads else config.heads[0]
    _success_bars(axes[0, 0], summary, schemes, config.heads, colors)
    for scheme in schemes:
        g = groups[(scheme, focus)]
        histogram(
            axes[0, 1], g["loss"][:, -1], bins=40, alpha=0.6, color=colors[scheme], label=scheme
        )
    axes[0, 1].set(
        xlabel=f"final loss ({_LOSS[config.study.flow.name]})",
        ylabel="seeds",
        title=f"Final loss, H = {focus}",
    )
    legend(axes[0, 1], fontsize=8)
    _phase_boxes(axes[0, 2], groups, schemes, focus)
    _example_curves(axes[0, 3], groups, schemes, focus, colors)
    example = groups[("random-positive" if "random-positive" in schemes else schemes[0], focus)]
    _heatmap(axes[1, 0], fig, example["time"], example["omega_t"][0], "Ω(t), example seed", n)
    _heatmap(axes[1, 1], fig, example["time"], example["mu_t"][0], "M(t), same seed", n)
    _warmup_scaling(axes[1, 2], summary["warmup_scaling"])
    _separation(axes[1, 3], summary["separation"])
    legend(axes[1, 3], fontsize=8)
    fig.suptitle(
        f"Task allocation, reduced dynamics ({_FLOW[study.flow.name]}): d = {study.d} in {n} "
        f"blocks, L = {study.context_len}, {config.n_seeds} seeds per random scheme and H "
        "(the balanced init is deterministic: one run)"
    )
    save_figure(fig, path)


_FLOW = {
    "weights": "weights' gradient flow, time = SGD steps × learning rate",
    "euclidean": "Euclidean (Ω, M) flow",
}
_LOSS = {"weights": "ICL loss ℓ/n", "euclidean": "ℓ(Ω, M), summed over tasks"}


def _separation(ax, separation):
    rows = separation["rows"]
    lengths = [r["context_len"] for r in rows]
    ax.errorbar(
        lengths,
        [r["full_ratio"] for r in rows],
        yerr=[r["full_ratio_stderr"] for r in rows],
        fmt="o-",
        capsize=3,
        label=f"full model (Monte Carlo, {separation['prompts']} prompts)",
    )
    ax.plot(lengths, [r["reduced_ratio"] for r in rows], "s--", label="reduced ℓ")
    ax.axhline(
        separation["reduced_limit"],
        color="grey",
        linestyle=":",
        label=f"reduced, L → ∞: {separation['reduced_limit']:.2f}",
    )
    ax.set(
        xscale="log",
        xlabel="context length L",
        ylabel="ℓ*(single head) / ℓ*(one head per task)",
        title="Single- vs multi-head separation (optima, fixed signs)",
    )


def _success_bars(ax, summary, schemes, heads, colors):
    width = 0.8 / len(schemes)
    for k, scheme in enumerate(schemes):
        stats = [summary["groups"][f"{scheme}/H{h}"] for h in heads]
        # No rate while seeds are still in warm-up: such bars are left out, not drawn as 0.
        rates = [np.nan if g["success_rate"] is None else g["success_rate"] for g in stats]
        errors = [0.0 if g["success_stderr"] is None else g["success_stderr"] for g in stats]
        x = np.arange(len(heads)) + (k - (len(schemes) - 1) / 2) * width
        ax.bar(x, rates, width, yerr=errors, capsize=3, color=colors[scheme], label=scheme)
        for xi, rate in zip(x, rates):
            if np.isnan(rate):
                ax.text(xi, 0.02, "still in\nwarm-up", ha="center", fontsize=6, rotation=90)
    ax.set_xticks(np.arange(len(heads)), [f"H = {h}" for h in heads])
    ax.set(ylim=(0, 1.05), ylabel="fraction of seeds", title="Every task served by a pure head")
    legend(ax, fontsize=8)


def _phase_boxes(ax, groups, schemes, focus):
    data, labels = [], []
    for scheme in schemes:
        for phase in ("warmup_end", "emergence_end"):
            values = groups[(scheme, focus)][phase]
            data.append(values[np.isfinite(values)])
            labels.append(f"{scheme}\n{phase.replace('_end', '')} end")
    ax.boxplot(data, showfliers=False)
    ax.set_xticks(np.arange(1, len(labels) + 1), labels, fontsize=7, rotation=30)
    ax.set(ylabel="the flow's time", title=f"Phase times over seeds, H = {focus}")


def _example_curves(ax, groups, schemes, focus, colors):
    for scheme in schemes:
        g = groups[(scheme, focus)]
        ax.plot(g["time"], g["loss"][0], color=colors[scheme], label=f"{scheme}, seed 0")
        warm, emerge = g["warmup_end"][0], g["emergence_end"][0]
        if np.isfinite(warm) and np.isfinite(emerge):
            ax.axvspan(0, warm, color=colors[scheme], alpha=0.08)
            ax.axvspan(warm, emerge, color=colors[scheme], alpha=0.2)
    ax.set(
        xlabel="the flow's time",
        ylabel="loss",
        title="Loss, phases shaded (light: warm-up, dark: emergence)",
    )
    legend(ax, fontsize=8)


def _heatmap(ax, fig, time, values, title, n_tasks):
    rows = values.reshape(values.shape[0], -1).T  # (H·n, records)
    finite = np.abs(rows[np.isfinite(rows)])
    limit = finite.max() if finite.size and finite.max() > 0 else 1.0
    # One record has no time span: give it a unit-wide column.
    end = time[-1] if time[-1] > time[0] else time[0] + 1.0
    image = ax.imshow(
        rows,
        aspect="auto",
        cmap="RdBu_r",
        extent=(time[0], end, rows.shape[0], 0),
        vmin=-limit,
        vmax=limit,
    )
    ax.set_yticks(
        np.arange(rows.shape[0]) + 0.5,
        [f"h{r // n_tasks} t{r % n_tasks}" for r in range(rows.shape[0])],
        fontsize=7,
    )
    ax.set(xlabel="the flow's time", title=title)
    fig.colorbar(image, ax=ax)


def _warmup_scaling(ax, scaling):
    for flow, w in scaling.items():
        ax.loglog(
            w["scales"], w["warmup_end"], "o-", label=f"{flow} (slope {w['loglog_slope']:.2f})"
        )
    ax.set(
        xlabel="init scale s",
        ylabel="warm-up end (the flow's time)",
        title="Warm-up against init scale (balanced init)",
    )
    legend(ax, fontsize=8)
