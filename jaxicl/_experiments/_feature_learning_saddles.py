"""The noiseless flow and saddles in `feature-learning`: how many generic starts stall, and the
escape from the split-atoms critical point against log(1/ε).

- Stalls (the `static` group: generic starts, no noise). A member *stalls* when it ends with
  L/L_c ≥ `success_threshold` while the flow has (nearly) stopped: its dissipation −dL/dt on the
  training sample, times the run's flow time T, is below `stall_tolerance` · L_c (at that speed
  a run as long again would lower L by less than that). A member above the threshold that still
  moves faster is *unfinished*, not stalled. The stall fraction carries the exact (Clopper–
  Pearson) 95% upper bound.
- Escape (the `escape` group): `escape_atoms` atoms with ε = 0 approach a critical point with
  full-rank features; each ε > 0 splits the atoms. A member *escapes* at the first record with
  L_ε < L_0 − `escape_drop` · L_c (L_0: the ε = 0 member at the same time). The flow's split
  grows like e^{κt}, and its loss gain like ε² e^{2κt}, so t_ε = (1/κ) log(1/ε) + const: the
  fitted slope per seed (seeds: independent splits) against 1/κ̄, κ̄ the mean of −(the flow's
  own splitting curvature) of the ε = 0 member over the escapes' window.
"""

import math

import numpy as np


def stall_upper_bound(stalled: int, total: int, level: float = 0.95) -> float:
    """The exact one-sided upper confidence bound of a binomial fraction (Clopper–Pearson), by
    bisection of P(X ≤ stalled | p) = 1 − level."""
    if stalled >= total:
        return 1.0

    def tail(p):
        return sum(math.comb(total, j) * p**j * (1 - p) ** (total - j) for j in range(stalled + 1))

    low, high = stalled / total, 1.0
    for _ in range(60):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if tail(mid) > 1 - level else (low, mid)
    return high


def stalls(config, static, scale) -> dict:
    """Counts of the static group's members: reached the threshold, stalled, unfinished,
    diverged (see the module docstring)."""
    healthy = ~static["diverged"]
    final = static["loss"][healthy, -1] / scale
    horizon = config.study.steps * config.study.learning_rate
    moving = static["flow_dissipation"][healthy, -1] * horizon / scale
    above = final >= config.study.success_threshold
    stalled = int((above & (moving < config.stall_tolerance)).sum())
    return {
        "seeds": int(final.size),
        "diverged": int((~healthy).sum()),
        "reached": int((~above).sum()),
        "stalled": stalled,
        "unfinished": int(above.sum()) - stalled,
        "stalled_upper_95": stall_upper_bound(stalled, int(final.size)) if final.size else None,
        "final_motion_median": float(np.median(moving)) if moving.size else None,
    }


def first_below(time, curve, reference):
    """The first record time at which `curve` is below `reference` (a level or a curve), or
    None if it never is: an escape that did not happen gets no time."""
    below = np.flatnonzero(curve < reference)
    return float(time[below[0]]) if below.size else None


def escape(config, results, scale) -> dict:
    """The escape times per ε and seed, their fit against log(1/ε), and the curvature that
    predicts the slope; the ε = 0 member's state at the end (see the module docstring)."""
    still = results["escape_eps0"]
    time = still["time"][0]
    if still["diverged"][0]:
        return {"critical_point": None, "displacements": list(config.escape_displacements)}
    reference = still["loss"][0] - config.escape_drop * scale
    horizon = time[-1]
    critical = {
        "final_relative": float(still["loss"][0, -1] / scale),
        "motion": float(still["flow_dissipation"][0, -1] * horizon / scale),
        "flow_splitting_curvature": float(still["flow_splitting_curvature"][0, -1]),
        "held_out_splitting_curvature": float(still["splitting_curvature"][0, -1]),
        "teacher_mixture_slope": float(still["teacher_mixture_slope"][0]),
        "teacher_mixture_curvature": float(still["teacher_mixture_curvature"][0]),
    }
    eps = np.asarray(config.escape_displacements, float)
    times = np.full((config.escape_seeds, eps.size), np.nan)
    diverged = 0
    for i, e in enumerate(config.escape_displacements):
        run = results[f"escape_eps{e:g}"]
        diverged += int(run["diverged"].sum())
        for s in np.flatnonzero(~run["diverged"]):
            hit = first_below(time, run["loss"][s], reference)
            times[s, i] = np.nan if hit is None else hit
    out = {
        "critical_point": critical,
        "displacements": list(config.escape_displacements),
        "escape_times": [[None if np.isnan(t) else float(t) for t in row] for row in times],
        "not_escaped": int(np.isnan(times).sum()) - diverged,
        "diverged": diverged,
    }
    return {**out, **_fit(eps, times, time, still["flow_splitting_curvature"][0])}


def _fit(eps, times, time, curvature) -> dict:
    """Per seed, the least-squares line t = slope · log(1/ε) + c over the ε it escaped at (at
    least 3), its R²; the mean slope ± s.e. over seeds; the predicted slope 1/κ̄."""
    slopes, r2 = [], []
    for row in times:
        ok = ~np.isnan(row)
        if ok.sum() < 3:
            continue
        x = np.log(1 / eps[ok])
        coefficients = np.polyfit(x, row[ok], 1)
        residual = row[ok] - np.polyval(coefficients, x)
        slopes.append(float(coefficients[0]))
        r2.append(float(1 - (residual**2).sum() / ((row[ok] - row[ok].mean()) ** 2).sum()))
    if not slopes:
        return {"slope": None, "slope_stderr": None, "min_r2": None, "predicted_slope": None}
    window = (time >= np.nanmin(times)) & (time <= np.nanmax(times))
    kappa = float(-np.mean(curvature[window]))
    return {
        "slope": float(np.mean(slopes)),
        "slope_stderr": float(np.std(slopes, ddof=1) / math.sqrt(len(slopes)))
        if len(slopes) > 1
        else None,
        "min_r2": float(min(r2)),
        "window_kappa": kappa,
        "predicted_slope": 1 / kappa if kappa > 0 else None,
    }


def saddle_lines(summary) -> list[str]:
    cfg = summary["config"]
    st = summary["stalls"]
    lines = []
    if st["seeds"]:
        lines.append(
            f"noiseless flow from {st['seeds']} generic starts: {st['reached']} reached "
            f"L/L_c < {cfg['success_threshold']:g}, {st['stalled']} stalled above it "
            f"(dissipation × T < {cfg['stall_tolerance']:g} L_c; stall fraction ≤ "
            f"{st['stalled_upper_95']:.0%} at 95%), {st['unfinished']} still descending"
            f"{diverged_note(st['diverged'])}"
        )
    esc = summary["escape"]
    crit = esc["critical_point"]
    if crit is None:
        return lines + ["split atoms: the ε = 0 run diverged; no escape statistics"]
    lines.append(
        f"split atoms ({cfg['escape_atoms']} atoms, ε = 0): L/L_c {crit['final_relative']:.3f},"
        f" dissipation × T = {crit['motion']:.1e} L_c; splitting curvature "
        f"{crit['flow_splitting_curvature']:.3f} (training sample), "
        f"{crit['held_out_splitting_curvature']:.3f} (held out); along (1−s)µ + s µ°: "
        f"dL/ds = {crit['teacher_mixture_slope']:.3f} L_c, d²L/ds² = "
        f"{crit['teacher_mixture_curvature']:.3f} L_c"
    )
    times = "; ".join(
        f"ε={e:g}: " + ", ".join("never" if t is None else f"{t:g}" for t in col)
        for e, col in zip(esc["displacements"], zip(*esc["escape_times"]))
    )
    lines.append(f"  escape times (L below the ε = 0 run by {cfg['escape_drop']:g} L_c): {times}")
    if esc["slope"] is None:
        lines.append("  fewer than 3 escapes in every seed: no slope")
    else:
        err = "" if esc["slope_stderr"] is None else f" ± {esc['slope_stderr']:.2f}"
        predicted = esc["predicted_slope"]
        predicted = "—" if predicted is None else f"{predicted:.2f}"
        lines.append(
            f"  t_ε against log(1/ε): slope {esc['slope']:.2f}{err} (min R² "
            f"{esc['min_r2']:.4f}); predicted 1/κ̄ = {predicted} (κ̄ = "
            f"{esc['window_kappa']:.3f}, the flow's splitting rate over the escapes)"
            f"{diverged_note(esc['diverged'])}"
        )
    return lines


def diverged_note(n: int) -> str:
    return f" [{n} diverged, not counted]" if n else ""
