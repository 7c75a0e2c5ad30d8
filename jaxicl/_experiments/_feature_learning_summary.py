"""Numbers of `feature-learning` against the reference: success rate, static/joint gaps,
saddle plateau and escape, the mean-field rate; and the printed table.

A member that diverged has NaN series (see `mask_diverged`): every number below is over the
members that did not, and the diverged ones are counted beside it, never averaged in."""

import math

import numpy as np

from ._feature_learning_saddles import diverged_note, escape, first_below, saddle_lines, stalls


# The saddle-escape variants, in the order the table and figure show them.
SADDLE_VARIANTS = ("none", "isotropic", "isotropic+birth-death", "hessian")


def mask_diverged(records: dict) -> dict:
    """`records` with every float series of a diverged member (`records["diverged"]`, one flag
    per member) set to NaN: its curve is not drawn and its numbers are not reported."""
    diverged = np.asarray(records["diverged"], bool)
    out = dict(records)
    for name, values in records.items():
        values = np.asarray(values)
        if name != "diverged" and np.issubdtype(values.dtype, np.floating):
            flags = diverged.reshape(diverged.shape + (1,) * (values.ndim - 1))
            out[name] = np.where(flags, np.nan, values)
    return out


def _median(values):
    values = np.asarray(values)
    return float(np.median(values)) if values.size else None


def _fluctuation(curves, rng, n_boot):
    """The seed-to-seed standard deviation of L(t), averaged over t > 0, and at t = 0; with
    `n_boot` bootstrap resamples of the seeds."""

    def spread(c):
        sd = c.std(axis=0, ddof=1)
        return sd[1:].mean(), sd[0]

    boot = [spread(curves[rng.integers(0, len(curves), len(curves))]) for _ in range(n_boot)]
    return spread(curves), np.asarray(boot)


def _slope(sizes, values):
    return float(np.polyfit(np.log(sizes), np.log(values), 1)[0])


def _mean_field(config, results) -> dict:
    """How the particle system's fluctuation shrinks with M: the standard deviation over
    independent initial draws (seeds) of L_M(t), time-averaged over t > 0 (and at t = 0), and
    its fitted rate in M; the rate's standard error from 400 bootstrap resamples of each M's
    seeds (sizes are independent). Propagation of chaos predicts M^-1/2."""
    sizes = list(config.mean_field_sizes)
    records = {m: results[f"mean_field_M{m}"] for m in sizes}
    diverged = {str(m): int(records[m]["diverged"].sum()) for m in sizes}
    curves = {m: records[m]["loss"][~records[m]["diverged"]] for m in sizes}
    out = {"sizes": sizes, "diverged": diverged}
    if any(curves[m].shape[0] < 3 for m in sizes):
        # a size with fewer than 3 members left has no spread worth a rate
        return {**out, "spread": None, "rate": None, "rate_stderr": None}
    rng = np.random.default_rng(config.seed)
    spread, boot = zip(*(_fluctuation(curves[m], rng, 400) for m in sizes))
    boot = np.stack(boot, axis=1)  # (resample, size, [t > 0, t = 0])
    # a resample that drew one seed over and over has no spread: no slope from it
    usable = (boot > 0).all(axis=(1, 2))
    rates = [_slope(sizes, b[:, 0]) for b in boot[usable]]
    initial = [_slope(sizes, b[:, 1]) for b in boot[usable]]
    return {
        **out,
        "spread": [float(v[0]) for v in spread],
        "initial_spread": [float(v[1]) for v in spread],
        "rate": _slope(sizes, [v[0] for v in spread]),
        "rate_stderr": float(np.std(rates, ddof=1)),
        "initial_rate": _slope(sizes, [v[1] for v in spread]),
        "initial_rate_stderr": float(np.std(initial, ddof=1)),
    }


def _saddle(results, scale) -> dict:
    """Each variant's single member; one that diverged is marked so, with no numbers."""
    still = results["saddle_none"]
    plateau = None if still["diverged"][0] else float(still["loss"][0, -1])
    out = {"plateau_relative": None if plateau is None else plateau / scale, "variants": {}}
    for variant in SADDLE_VARIANTS:
        rec = results[f"saddle_{variant}"]
        if rec["diverged"][0]:
            out["variants"][variant] = {"diverged": True}
            continue
        escape = None
        if plateau is not None:
            escape = first_below(rec["time"][0], rec["loss"][0], 0.5 * plateau)
        out["variants"][variant] = {
            "diverged": False,
            "final_relative": float(rec["loss"][0, -1]) / scale,
            "escape_time": escape,
            "final_w_spread": float(rec["w_spread"][0, -1]),
        }
    return out


def _static(config, static, healthy, scale) -> dict:
    final = static["loss"][healthy, -1] / scale
    out = {"seeds": int(final.size), "diverged": int((~healthy).sum())}
    if not final.size:
        return out
    rate = float((final < config.study.success_threshold).mean())
    # monotonicity of the flow's own objective (the training sample); the held-out L need not be
    train = static["train_loss"][healthy]
    increases = np.diff(train, axis=1) > 1e-10 * train[:, :-1]
    return {
        **out,
        "final_relative_median": float(np.median(final)),
        "final_relative_max": float(final.max()),
        "success_rate": rate,
        "success_stderr": math.sqrt(rate * (1 - rate) / final.size),
        "monotone_fraction": float((~increases.any(axis=1)).mean()),
        "condition_median": float(np.median(static["condition"][healthy, -1])),
        "smallest_teacher_singular_value_median": float(
            np.median(static["teacher_singular_values"][healthy, -1, -1])
        ),
    }


def summarize(config, study, results) -> dict:
    """The summary of the groups' `results`; `study` (any of the groups') gives the problem
    instance, whose loss of constant features L_c every loss is reported relative to."""
    scale = float(study.constant_feature_loss())
    static = results["static"]
    healthy = ~static["diverged"]
    attention = {}
    for ratio in config.attention_ratios:
        joint = results[f"attention_r{ratio:g}"]
        # the joint runs' seeds, paired with the same seeds' static runs; both with W as trained
        # on the training sample; a pair counts only if neither member diverged
        n = joint["loss"].shape[0]
        both = ~joint["diverged"] & healthy[:n]
        paired = static["transformer_loss"][:n][both]
        gap = np.abs(joint["transformer_loss"][both] - paired) / scale
        attention[f"{ratio:g}"] = {
            "seeds": int(both.sum()),
            "diverged": int(joint["diverged"].sum()),
            "mean_gap_relative": float(gap.mean()) if gap.size else None,
            "max_gap_relative": float(gap.max(axis=1).mean()) if gap.size else None,
            "final_relative_median": _median(joint["transformer_loss"][both][:, -1] / scale),
        }
    return {
        "config": config.as_dict(),
        "constant_feature_loss": scale,
        "static": _static(config, static, healthy, scale),
        "attention": attention,
        "saddle": _saddle(results, scale),
        "stalls": stalls(config, static, scale),
        "escape": escape(config, results, scale),
        "mean_field": _mean_field(config, results),
        "in_context": _in_context(config, results, scale),
        "in_context_joint": _in_context_joint(config, results, scale),
    }


def _in_context_joint(config, results, scale) -> dict | None:
    """Per n, the in-context runs with W trained jointly against the static ones of the same
    seeds: final held-out L_TF/L_c and the time-averaged |L_TF(joint) − L_TF(static)| / L_c
    (W as trained in both; pairs with a diverged member are left out)."""
    if config.in_context_joint_ratio == 0:
        return None
    out = {}
    for n in config.prompt_lengths:
        joint, static = results[f"in_context_joint_n{n}"], results[f"in_context_n{n}"]
        both = ~joint["diverged"] & ~static["diverged"]
        gap = np.abs(joint["transformer_loss"][both] - static["transformer_loss"][both]) / scale
        final = joint["transformer_loss"][both, -1] / scale
        out["∞" if n == 0 else str(n)] = {
            "seeds": int(both.sum()),
            "diverged": int(joint["diverged"].sum()),
            "final_relative_mean": float(final.mean()) if final.size else None,
            "mean_gap_relative": float(gap.mean()) if gap.size else None,
        }
    return out


def _in_context(config, results, scale) -> dict:
    """Per prompt length n (0: ∞): the final held-out L/L_c (mean ± s.e. over the seeds that did
    not diverge) and the distance of the learned features from the n = ∞ run of the same seed
    (`feature_distance`; pairs with a diverged member are left out)."""
    reference = results["in_context_n0"]
    out = {}
    for n in config.prompt_lengths:
        run = results[f"in_context_n{n}"]
        healthy = ~run["diverged"]
        final = run["loss"][healthy, -1] / scale
        both = healthy & ~reference["diverged"]
        distance = [
            feature_distance(reference["final_features"][s], run["final_features"][s])
            for s in np.flatnonzero(both)
        ]
        out["∞" if n == 0 else str(n)] = {
            "seeds": int(healthy.sum()),
            "diverged": int(run["diverged"].sum()),
            "final_relative_mean": float(final.mean()) if final.size else None,
            "final_relative_stderr": float(final.std(ddof=1) / math.sqrt(final.size))
            if final.size > 1
            else None,
            "feature_distance_mean": float(np.mean(distance)) if distance else None,
        }
    return out


def format_feature_learning_summary(summary: dict) -> str:
    s, cfg = summary["static"], summary["config"]
    lines = [f"losses relative to L_c = {summary['constant_feature_loss']:.4f} (constant features)"]
    head = (
        f"static (two-timescale), {s['seeds']} seeds, t = {cfg['steps'] * cfg['learning_rate']:g}:"
    )
    if s["seeds"]:
        lines.append(
            f"{head} final L/L_c median {s['final_relative_median']:.2e}"
            f" (max {s['final_relative_max']:.2e});"
            f" success L/L_c < {cfg['success_threshold']:g}: {s['success_rate']:.0%}"
            f" ± {s['success_stderr']:.0%}; training L monotone in {s['monotone_fraction']:.0%}"
            f" of seeds; cond Σµµ {s['condition_median']:.1f}{diverged_note(s['diverged'])}"
        )
    else:
        lines.append(f"{head} every seed diverged ({s['diverged']})")
    lines.append(
        "joint W (ratio): time-averaged |L_TF − L_static| / L_c, worst per seed, final L_TF/L_c"
    )
    for ratio, g in summary["attention"].items():
        if not g["seeds"]:
            lines.append(f"  {ratio:>6}   no pair without a diverged member")
            continue
        lines.append(
            f"  {ratio:>6}   {g['mean_gap_relative']:.2e}   {g['max_gap_relative']:.2e}"
            f"   {g['final_relative_median']:.2e}{diverged_note(g['diverged'])}"
        )
    saddle = summary["saddle"]
    plateau = saddle["plateau_relative"]
    plateau = "not reached (diverged)" if plateau is None else f"{plateau:.3f}"
    lines.append(f"saddle (symmetric init): plateau L/L_c = {plateau}")
    for variant, v in saddle["variants"].items():
        if v["diverged"]:
            lines.append(f"  {variant:<22} diverged")
            continue
        escape = "never" if v["escape_time"] is None else f"t = {v['escape_time']:g}"
        lines.append(
            f"  {variant:<22} final L/L_c {v['final_relative']:.2e}, below half the plateau:"
            f" {escape}, w spread {v['final_w_spread']:.2e}"
        )
    lines += saddle_lines(summary)
    lines += _in_context_lines(summary)
    mf = summary["mean_field"]
    lost = sum(mf["diverged"].values())
    if mf["spread"] is None:
        lines.append(f"mean-field limit: a size has under 3 members left ({lost} diverged)")
        return "\n".join(lines)
    pairs = ", ".join(f"M={m}: {d:.2e}" for m, d in zip(mf["sizes"], mf["spread"]))
    lines.append(
        f"mean-field limit: s.d. of L_M(t) over {summary['config']['mean_field_seeds']} initial "
        f"draws, time-averaged: {pairs}; rate M^{mf['rate']:.2f} ± {mf['rate_stderr']:.2f} "
        f"(at t = 0: M^{mf['initial_rate']:.2f} ± {mf['initial_rate_stderr']:.2f}; "
        f"propagation of chaos: M^-0.5){diverged_note(lost)}"
    )
    return "\n".join(lines)


def _in_context_lines(summary) -> list[str]:
    cfg = summary["config"]
    lines = [
        f"in context ({cfg['prompts_per_step']} prompts of n pairs a step, static W): final "
        "held-out L/L_c (mean ± s.e.), feature distance to the n = ∞ run (mean over seeds)"
    ]
    for n, g in summary["in_context"].items():
        if g["final_relative_mean"] is None:
            lines.append(f"  n = {n:>5}   every seed diverged ({g['diverged']})")
            continue
        err = "" if g["final_relative_stderr"] is None else f" ± {g['final_relative_stderr']:.1e}"
        dist = g["feature_distance_mean"]
        lines.append(
            f"  n = {n:>5}   {g['final_relative_mean']:.2e}{err}   "
            f"{'—' if dist is None else f'{dist:.2e}'}{diverged_note(g['diverged'])}"
        )
    joint = summary["in_context_joint"]
    if joint is None:
        return lines
    lines.append(
        f"in context, W trained jointly (ratio {cfg['in_context_joint_ratio']:g}): final held-out "
        "L_TF/L_c (mean), time-averaged |L_TF(joint) − L_TF(static)| / L_c"
    )
    for n, g in joint.items():
        if g["final_relative_mean"] is None:
            lines.append(f"  n = {n:>5}   no pair without a diverged member")
            continue
        lines.append(
            f"  n = {n:>5}   {g['final_relative_mean']:.2e}   {g['mean_gap_relative']:.2e}"
            f"{diverged_note(g['diverged'])}"
        )
    return lines


def feature_distance(reference, features) -> float:
    """How far learned `features` (inputs × k) are from `reference` ones as feature maps: the
    relative residual of the best affine map of `features` onto `reference` (0: the same span,
    which is all L depends on; 1: nothing of it)."""
    reference, features = np.asarray(reference), np.asarray(features)
    design = np.concatenate([features, np.ones((features.shape[0], 1))], axis=1)
    coefficients, *_ = np.linalg.lstsq(design, reference, rcond=None)
    residual = reference - design @ coefficients
    spread = ((reference - reference.mean(axis=0)) ** 2).sum()
    return float((residual**2).sum() / spread)
