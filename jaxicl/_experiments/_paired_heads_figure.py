"""The paired-heads figure: losses against H and L, and the structure of the learned heads."""

import pathlib

import numpy as np

from .._host._figures import _pyplot, histogram, legend, save_figure


def plot_paired_heads(results: dict, summary: dict, path: pathlib.Path) -> None:
    """Six panels: loss curves per H, final losses, learned (ω_h, μ_h), loss against context
    length with the reference predictors, structure statistics per H, and the zero-sum Σμ."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    (ax_curve, ax_hist, ax_heads), (ax_length, ax_structure, ax_sum) = axes
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    references = summary["references"]
    by_length = summary["by_length"]
    for color, (n_heads, rec) in zip(colors, results.items()):
        # Diverged members are counted in the table and left out of every panel.
        healthy = ~rec["diverged"][:, -1]
        if not healthy.any():
            continue
        rec = {k: v[healthy] if k != "step" else v for k, v in rec.items()}
        steps, loss = rec["step"], rec["loss_mean"]
        ax_curve.plot(steps, np.median(loss, axis=0), color=color, label=f"H = {n_heads} (median)")
        low, high = np.quantile(loss, [0.1, 0.9], axis=0)
        ax_curve.fill_between(steps, low, high, color=color, alpha=0.25, linewidth=0)
        histogram(
            ax_hist, rec["final_loss"], bins=30, color=color, alpha=0.6, label=f"H = {n_heads}"
        )
        ax_heads.scatter(
            rec["omega"][:, -1].ravel(), rec["mu"][:, -1].ravel(), s=6, color=color, alpha=0.6
        )
        ax_heads.scatter([], [], color=color, label=f"H = {n_heads}")
        median = np.median(rec["loss_by_length"], axis=0)
        ax_length.plot(by_length["lengths"], median, "o-", color=color, label=f"H = {n_heads}")
        histogram(ax_sum, rec["mu"][:, -1].sum(axis=1), bins=30, color=color, alpha=0.6)
    styles = {
        "bayes_ridge": ":",
        "best_gd": "--",
        "best_debiased_gd": "-.",
        "kernel_smoother": (0, (1, 3)),
        "zero_predictor": "-",
    }
    for name, style in styles.items():
        color = "grey" if name == "kernel_smoother" else "black"
        ax_curve.axhline(
            references[name], color=color, ls=style, lw=1, label=name.replace("_", " ")
        )
        ax_hist.axvline(references[name], color=color, ls=style, lw=1)
    length_names = {
        "bayes_ridge": ":",
        "gd": "--",
        "debiased_gd": "-.",
        "kernel_smoother": (0, (1, 3)),
    }
    for name, style in length_names.items():
        ax_length.plot(
            by_length["lengths"],
            by_length["predictors"][name],
            color="grey" if name == "kernel_smoother" else "black",
            ls=style,
            lw=1,
            label=f"{name.replace('_', ' ')} (best for each L)",
        )
    training_length = summary["config"]["context_len"]
    ax_length.axvline(training_length, color="grey", lw=0.5)
    _structure_bars(ax_structure, summary["groups"], colors)
    ax_curve.set(yscale="log", xlabel="step", ylabel="training loss (block mean)")
    ax_curve.set_title("Training loss over the ensemble")
    ax_hist.set(xlabel="population loss after training", ylabel="members")
    ax_hist.set_title("Final loss per member (Monte Carlo; lines: references)")
    ax_heads.axhline(0, color="grey", linewidth=0.5)
    ax_heads.axvline(0, color="grey", linewidth=0.5)
    ax_heads.set(xlabel="ω_h (KQ x-block diagonal mean)", ylabel="μ_h (OV label entry)")
    ax_heads.set_title("Learned heads: ± pairs lie on both sides")
    ax_length.set(
        xlabel="context length L at evaluation",
        ylabel="population loss (median over members)",
        yscale="log",
    )
    ax_length.set_title(f"Length generalization (trained at L = {training_length})")
    ax_sum.set(xlabel="Σ_h μ_h after training", ylabel="members")
    ax_sum.set_title("Zero-sum output weights")
    for ax in (ax_curve, ax_hist, ax_heads, ax_length, ax_structure):
        legend(ax, fontsize=7)
    save_figure(fig, path)


def _structure_bars(ax, groups, colors):
    names = {
        "kq_diagonal_ratio": "KQ diagonal\nratio",
        "kq_diagonal_spread": "KQ diagonal\nspread",
        "kq_label_ratio": "KQ label\nrow/col",
        "ov_last_entry_ratio": "OV last-\nentry ratio",
        "zero_sum_median": "|Σμ| / Σ|μ|",
        "paired_fraction": "± paired\nmembers",
    }
    width = 0.8 / len(groups)
    for k, (color, (n_heads, g)) in enumerate(zip(colors, groups.items())):
        x = np.arange(len(names)) + (k - (len(groups) - 1) / 2) * width
        # None: no healthy member to measure (all diverged); the bar is left out, not drawn 0.
        values = [np.nan if g[name] is None else g[name] for name in names]
        ax.bar(x, values, width, color=color, label=f"H = {n_heads}")
    ax.set_xticks(np.arange(len(names)), list(names.values()), fontsize=7)
    ax.set(ylabel="median over live heads", ylim=(0, 1.05))
    ax.set_title("Learned structure (He et al.: 1, 0, 0, 1, 0, 1)")
