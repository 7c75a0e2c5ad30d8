"""Figures. matplotlib is imported lazily so that importing jaxicl stays light."""

import pathlib

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_ensemble_training(results: dict, references: dict, path: pathlib.Path) -> None:
    """Loss curves (median and 10–90% band over members) per head count, final population
    losses, and the learned (ω_h, μ_h) of every head, with the reference predictors' risks."""
    plt = _pyplot()
    fig, (ax_curve, ax_hist, ax_heads) = plt.subplots(1, 3, figsize=(15, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for color, (n_heads, rec) in zip(colors, results.items()):
        steps, loss = rec["step"], rec["loss_mean"]
        ax_curve.plot(steps, np.median(loss, axis=0), color=color, label=f"H = {n_heads} (median)")
        low, high = np.quantile(loss, [0.1, 0.9], axis=0)
        ax_curve.fill_between(steps, low, high, color=color, alpha=0.25, linewidth=0)
        ax_hist.hist(rec["final_loss"], bins=30, color=color, alpha=0.6, label=f"H = {n_heads}")
        ax_heads.scatter(
            rec["omega"][:, -1].ravel(),
            rec["mu"][:, -1].ravel(),
            s=6,
            color=color,
            alpha=0.6,
            label=f"H = {n_heads}",
        )
    styles = {"bayes_ridge": ":", "best_gd": "--", "best_debiased_gd": "-.", "zero_predictor": "-"}
    for name, style in styles.items():
        for ax in (ax_curve, ax_hist):
            (ax.axhline if ax is ax_curve else ax.axvline)(
                references[name],
                color="black",
                linestyle=style,
                linewidth=1,
                label=name.replace("_", " ") if ax is ax_curve else None,
            )
    ax_curve.set(
        yscale="log",
        xlabel="step",
        ylabel="training loss (block mean)",
        title="Training loss over the ensemble",
    )
    ax_hist.set(
        xlabel="population loss after training",
        ylabel="members",
        title="Final loss per member (Monte Carlo)",
    )
    ax_heads.axhline(0, color="grey", linewidth=0.5)
    ax_heads.axvline(0, color="grey", linewidth=0.5)
    ax_heads.set(
        xlabel="ω_h (KQ x-block diagonal mean)",
        ylabel="μ_h (OV label entry)",
        title="Learned heads at the end",
    )
    for ax in (ax_curve, ax_hist, ax_heads):
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
