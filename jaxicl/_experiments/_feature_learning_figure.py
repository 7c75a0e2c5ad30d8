"""The feature-learning figure: static vs joint W, saddle escape (symmetric point and split
atoms), in context, the mean-field limit."""

import numpy as np

from .._host._figures import _pyplot, histogram


def _band(ax, time, curves, label, color=None):
    """Median and 10–90% band over the members that did not diverge (NaN rows)."""
    curves = curves[~np.isnan(curves).all(axis=1)]
    if not curves.shape[0]:
        return
    median = np.median(curves, axis=0)
    (line,) = ax.plot(time, median, label=label, color=color)
    if curves.shape[0] > 1:
        low, high = np.quantile(curves, [0.1, 0.9], axis=0)
        ax.fill_between(time, low, high, alpha=0.2, color=line.get_color())


def plot_feature_learning(results, summary, path) -> None:
    plt = _pyplot()
    scale = summary["constant_feature_loss"]
    fig, axes = plt.subplots(2, 5, figsize=(27, 9))
    ax_curves, ax_gap, ax_saddle, ax_split, ax_context = axes[0]
    ax_mf, ax_rate, ax_final, ax_escape, ax_trend = axes[1]

    static = results["static"]
    time = static["time"][0]
    # like for like: every curve is L_TF on held-out inputs at W as trained on the sample
    _band(ax_curves, time, static["transformer_loss"] / scale, "static (W = W_µ)", "black")
    if summary["static"]["seeds"]:
        refit = np.nanmedian(static["loss"], axis=0) / scale
        ax_curves.plot(time, refit, "k:", label="static, W refit held out")
    for ratio in summary["attention"]:
        joint = results[f"attention_r{ratio}"]
        _band(ax_curves, time, joint["transformer_loss"] / scale, f"joint W, ratio {ratio}")
        paired = static["transformer_loss"][: joint["loss"].shape[0]]
        gap = np.abs(joint["transformer_loss"] - paired) / scale
        gap = gap[~np.isnan(gap).all(axis=1)]
        if gap.shape[0]:
            ax_gap.plot(time, np.median(gap, axis=0), label=f"ratio {ratio}")
    ax_curves.set(yscale="log", xlabel="flow time t", ylabel="L_TF / L_c (median, 10–90%)")
    ax_curves.set_title("Two-timescale (static) vs jointly trained attention")
    ax_curves.legend(fontsize=8)
    ax_gap.set(yscale="log", xlabel="flow time t", ylabel="|L_TF(joint) − L(static)| / L_c")
    ax_gap.set_title("Gap to the static run (median over seeds)")
    ax_gap.legend(fontsize=8)

    for variant in summary["saddle"]["variants"]:
        rec = results[f"saddle_{variant}"]
        ax_saddle.plot(rec["time"][0], rec["loss"][0] / scale, label=variant)
    ax_saddle.set(yscale="log", xlabel="flow time t", ylabel="L / L_c")
    ax_saddle.set_title("Symmetric init: plateau and escape")
    ax_saddle.legend(fontsize=8)

    _in_context(ax_context, ax_trend, results, summary, scale)
    _escape(ax_split, ax_escape, results, summary, scale)

    mf = summary["mean_field"]
    for m in mf["sizes"]:
        rec = results[f"mean_field_M{m}"]
        _band(ax_mf, rec["time"][0], rec["loss"] / scale, f"M = {m}")
    ax_mf.set(yscale="log", xlabel="flow time t", ylabel="L / L_c")
    ax_mf.set_title("Same initial law, growing M")
    ax_mf.legend(fontsize=8)

    if mf["spread"] is not None:
        _rate(ax_rate, mf)

    final = static["loss"][:, -1] / scale
    threshold = summary["config"]["success_threshold"]
    histogram(ax_final, np.log10(final), bins=20)
    ax_final.axvline(
        np.log10(threshold), color="red", ls="--", label=f"success: L/L_c < {threshold:g}"
    )
    ax_final.set(xlabel="log10 final L / L_c (static)", ylabel="seeds")
    rate = summary["static"].get("success_rate")
    title = "every seed diverged" if rate is None else f"Success rate {rate:.0%}"
    ax_final.set_title(title)
    ax_final.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _rate(ax_rate, mf) -> None:
    sizes, spread = np.asarray(mf["sizes"]), np.asarray(mf["spread"])
    fit = f"M^{mf['rate']:.2f} ± {mf['rate_stderr']:.2f}"
    ax_rate.loglog(sizes, spread, "o-", label=f"over t > 0 ({fit})")
    initial = np.asarray(mf["initial_spread"])
    fit0 = f"M^{mf['initial_rate']:.2f} ± {mf['initial_rate_stderr']:.2f}"
    ax_rate.loglog(sizes, initial, "s--", label=f"at t = 0 ({fit0})")
    ax_rate.loglog(sizes, spread[0] * (sizes / sizes[0]) ** -0.5, "k:", label="M^-1/2")
    ax_rate.set(xlabel="particles M", ylabel="s.d. of L_M(t) over initial draws")
    ax_rate.set_title("Mean-field limit: fluctuation against M")
    ax_rate.legend(fontsize=8)


def _escape(ax_curves, ax_times, results, summary, scale) -> None:
    esc = summary["escape"]
    for e in [0.0, *esc["displacements"]]:
        rec = results[f"escape_eps{e:g}"]
        label = "ε = 0 (critical point)" if e == 0 else f"ε = {e:g}"
        _band(ax_curves, rec["time"][0], rec["loss"] / scale, label, "black" if e == 0 else None)
    ax_curves.set(yscale="log", xlabel="flow time t", ylabel="L / L_c")
    ax_curves.set_title("Split atoms: noiseless escape")
    ax_curves.legend(fontsize=8)
    if esc["critical_point"] is None:
        return
    x = np.log(1 / np.asarray(esc["displacements"]))
    for seed, row in enumerate(esc["escape_times"]):
        times = np.array([np.nan if t is None else t for t in row])
        ax_times.plot(x, times, "o", label=f"split {seed}")
    if esc["slope"] is not None:
        mean = np.nanmean([[np.nan if t is None else t for t in r] for r in esc["escape_times"]])
        ax_times.plot(
            x, mean + esc["slope"] * (x - x.mean()), "k-", label=f"fit: slope {esc['slope']:.2f}"
        )
        if esc["predicted_slope"] is not None:
            ax_times.plot(
                x,
                mean + esc["predicted_slope"] * (x - x.mean()),
                "r--",
                label=f"1/κ̄ = {esc['predicted_slope']:.2f}",
            )
    ax_times.set(xlabel="log(1/ε)", ylabel="escape time")
    ax_times.set_title("Escape time against log(1/ε)")
    ax_times.legend(fontsize=8)


def _in_context(ax_curves, ax_trend, results, summary, scale) -> None:
    lengths = summary["config"]["prompt_lengths"]
    for n in lengths:
        rec = results[f"in_context_n{n}"]
        label = "n = ∞ (population)" if n == 0 else f"n = {n}"
        _band(ax_curves, rec["time"][0], rec["loss"] / scale, label, "black" if n == 0 else None)
    if summary["in_context_joint"] is not None:
        for n in lengths:
            rec = results[f"in_context_joint_n{n}"]
            curves = rec["transformer_loss"] / scale
            curves = curves[~np.isnan(curves).all(axis=1)]
            if curves.shape[0]:
                label = f"joint W, n = {'∞' if n == 0 else n}"
                ax_curves.plot(rec["time"][0], np.median(curves, axis=0), "--", label=label)
    ax_curves.set(yscale="log", xlabel="flow time t", ylabel="held-out L / L_c")
    ax_curves.set_title("Trained in context on prompts of n pairs")
    ax_curves.legend(fontsize=8)
    finite = [n for n in lengths if n]
    rows = [summary["in_context"][str(n)] for n in finite]
    population = summary["in_context"]["∞"]["final_relative_mean"]
    gaps = [
        np.nan
        if r["final_relative_mean"] is None or population is None
        else abs(r["final_relative_mean"] - population)
        for r in rows
    ]
    distance = [
        np.nan if r["feature_distance_mean"] is None else r["feature_distance_mean"] for r in rows
    ]
    ax_trend.loglog(finite, gaps, "o-", label="|L^n run − L^∞ run| / L_c at the end")
    ax_trend.loglog(finite, distance, "s--", label="feature distance to the n = ∞ run")
    ax_trend.set(xlabel="token pairs per prompt n", title="In context → population as n grows")
    ax_trend.legend(fontsize=8)
