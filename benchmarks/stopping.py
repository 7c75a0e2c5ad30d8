"""What stopping settled members saves, and whether `task-allocation` can stop any.

1. A researcher's own study with a rule that is exact: gradient descent on a ridge regression
   (a fixed design, so the objective draws nothing) with the learning rate as a member axis.
   For a quadratic, ½ gᵀH⁻¹g is exactly what is left to gain, so the rule "stop once that is
   under `tol` of the loss" stops a member only where its outcome is final to `tol`. The sweep
   runs with and without leaving stopped members out (alternating, compile caches warm after a
   first discarded round), the stores compared bit for bit, and once more with no rule.
2. `task-allocation`'s dynamics (`reduced-allocation`, weights' flow, random-positive init):
   a rule may stop a member only at a strict local minimum of the loss in the coordinates its
   flow moves (elsewhere, however flat the loss, it can still leave). At each record, in
   float64: the Hessian in the state's own coordinates (q, k, o, v), and on the balanced set
   q = k, o = v that the flow keeps bit for bit from these starts, in (q, o); and what a rule
   "strict minimum on the balanced set, under `tol` of the loss left to gain" would stop.
3. The same dynamics swept at scale with and without `reduced-allocation`'s own rule
   (`stop_tol`, `jaxicl/_attention/_settled.py`): wall time, member-steps trained, and the
   fraction of stored values that differ (summaries and loss records).

    python benchmarks/stopping.py --out benchmarks/stopping_cpu.json
"""

# ruff: noqa: E402

import argparse
import json
import platform
import tempfile
from typing import ClassVar

from jaxicl._host._devices import use_all_cpu_cores


use_all_cpu_cores()  # one CPU device per core, as the command line has it

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from compaction import arrays, one_sweep

import jaxicl
from jaxicl._attention._settled import _balanced, _coordinates
from jaxicl._sweeps._group import Group


class Weights(eqx.Module):
    w: jax.Array


class RidgeLoss(jaxicl.AbstractObjective):
    design: jax.Array
    targets: jax.Array
    ridge: float

    def draw(self, key):
        return None

    def evaluate(self, model, data):
        residual = self.design @ model.w - self.targets
        return 0.5 * jnp.mean(residual**2) + 0.5 * self.ridge * jnp.sum(model.w**2)

    def hessian(self):
        n, d = self.design.shape
        return self.design.T @ self.design / n + self.ridge * jnp.eye(d)


class RidgeDescent(jaxicl.AbstractStudy):
    """Gradient descent on a ridge regression of `samples` × `d`, stopped once ½ gᵀH⁻¹g (what
    is left to gain, exactly) is under `tol` of the loss (`tol` 0: no rule)."""

    d: int = eqx.field(static=True, default=64)
    samples: int = eqx.field(static=True, default=256)
    learning_rate: float = 0.1
    tol: float = eqx.field(static=True, default=1e-4)
    steps: int = eqx.field(static=True, default=2000)
    n_records: int = eqx.field(static=True, default=20)

    member_axes: ClassVar[tuple[str, ...]] = ("learning_rate",)

    def initial_model(self, values, key):
        return Weights(jr.normal(key, (self.d,)))

    def objective(self):
        key_x, key_y = jr.split(jr.key(7))
        design = jr.normal(key_x, (self.samples, self.d))
        return RidgeLoss(design, jr.normal(key_y, (self.samples,)), 1e-2)

    def optimizer(self):
        return jaxicl.sgd(self.learning_rate)

    def schedule(self):
        return self.n_records, self.steps // self.n_records

    def stop(self):
        if not self.tol:
            return None
        objective = self.objective()
        inverse = jnp.linalg.inv(objective.hessian())

        def final(model):
            loss, grad = jax.value_and_grad(objective.evaluate)(model, None)
            return 0.5 * grad.w @ inverse @ grad.w <= self.tol * loss

        return final


RATES = (0.02, 0.05, 0.1, 0.2)


def own_study(seeds: int, rounds: int) -> dict:
    grid = {"learning_rate": list(RATES)}
    timings, reference = {"whole": [], "compacted": [], "no rule": []}, {}
    arms = (("whole", 1e-4, False), ("compacted", 1e-4, True), ("no rule", 0.0, True))
    for round_ in range(rounds + 1):  # the first round compiles
        for name, tol, compact in arms:
            with tempfile.TemporaryDirectory() as tmp:
                result = one_sweep(RidgeDescent(tol=tol), f"{tmp}/s", seeds, "auto", compact, grid)
                stored = arrays(f"{tmp}/s")
            if round_:
                timings[name].append(result)
            if name == "whole":
                reference = stored
            elif name == "compacted":
                for key, values in stored.items():  # the same bits as training every member
                    np.testing.assert_array_equal(values, reference[key], err_msg=key)
    stopped = reference["stopped"] == 1
    row = {
        "members": seeds * len(RATES),
        "stopped_fraction_by_rate": dict(zip(map(str, RATES), stopped.mean(axis=-1).tolist())),
        "member_steps_represented": seeds * len(RATES) * RidgeDescent().steps,
    }
    for name, results in timings.items():
        row[f"{name}_seconds"] = [r["seconds"] for r in results]
        row[f"{name}_member_steps_trained"] = results[0]["member_steps_trained"]
    row["speedup_best"] = min(row["whole_seconds"]) / min(row["compacted_seconds"])
    return row


def allocation_records(heads: int, seeds: int, horizon: float, n_records: int):
    """`reduced-allocation`'s members (weights' flow, float32 as users train them) at each of
    `n_records` records."""
    study = jaxicl.ReducedAllocation(heads=heads, horizon=horizon, n_records=n_records)
    group = Group(study, init_key=jr.key(0), data_key=jr.key(1))
    states = group.init({"init_scale": np.full(seeds, study.init_scale)}, np.arange(seeds))
    models = []
    for _ in range(n_records):
        models.append(states.model)
        states, _ = group._train(states, 1, "auto")
    return study, models


def curvature(objective, model):
    """In float64, at one member: its loss, the lowest over the highest Hessian eigenvalue in
    the state's own coordinates; and on the balanced set q = k, o = v (which the weights' flow
    keeps bit for bit from a balanced start, so its members never leave it): whether the
    member is on it, the lowest over the highest eigenvalue of the directions that are not
    flat (|λ| > 1e-9 λ_max), the loss ½ gᵀH⁻¹g still to gain over those, and the gradient
    along the flat ones."""
    model = jax.tree_util.tree_map(
        lambda x: x.astype(float) if eqx.is_inexact_array(x) else x, model
    )
    x, state_of = _coordinates(model, True)  # (q, o), as the package's stop rule has them

    def balanced_loss(x):
        return objective.evaluate(state_of(x), None)

    loss, gradient = jax.value_and_grad(balanced_loss)(x)
    eigenvalues, vectors = jnp.linalg.eigh(jax.hessian(balanced_loss)(x))
    along = vectors.T @ gradient
    level = jnp.abs(eigenvalues) <= 1e-9 * eigenvalues[-1]
    to_gain = 0.5 * jnp.sum(jnp.where(level, 0.0, along**2 / jnp.where(level, 1.0, eigenvalues)))
    return {
        "loss": loss,
        "balanced": _balanced(model),
        "balanced_lowest": jnp.min(jnp.where(level, jnp.inf, eigenvalues)) / eigenvalues[-1],
        "to_gain": to_gain / loss,
        "flat_gradient": jnp.sqrt(jnp.sum(jnp.where(level, along**2, 0.0))),
    }


def full_lowest(objective, model):
    """The lowest over the highest Hessian eigenvalue in the state's own coordinates (a program
    of its own: two eigendecompositions in one program left XLA's CPU program idle for good)."""
    model = jax.tree_util.tree_map(
        lambda x: x.astype(float) if eqx.is_inexact_array(x) else x, model
    )
    flat, state_of = _coordinates(model, False)
    loss = lambda v: objective.evaluate(state_of(v), None)  # noqa: E731
    eigenvalues = jnp.linalg.eigvalsh(jax.hessian(loss)(flat))
    return eigenvalues[0] / eigenvalues[-1]


def allocation_stops(study, models) -> dict:
    """What a rule "at a strict minimum on the balanced set, with under `tol` of the loss still
    to gain" would stop, and how much those members' losses still fell by the horizon."""
    objective = study.objective()
    # on one device: LAPACK's eigh on two devices at once left XLA's CPU program idle for good
    models = [jax.device_put(model, jax.devices()[0]) for model in models]
    measure = eqx.filter_jit(eqx.filter_vmap(lambda m: curvature(objective, m)))
    per_record = [jax.tree_util.tree_map(np.asarray, measure(model)) for model in models]
    at = {name: np.stack([r[name] for r in per_record], axis=1) for name in per_record[0]}
    end = {name: values[:, -1] for name, values in at.items()}
    end["full_lowest"] = np.asarray(
        eqx.filter_jit(eqx.filter_vmap(lambda m: full_lowest(objective, m)))(models[-1])
    )
    n_members, n_records = at["loss"].shape
    row = {
        "heads": study.heads,
        "members": n_members,
        "horizon": study.horizon,
        "strict_minimum_fraction_full_coordinates": float(np.mean(end["full_lowest"] > 0)),
        "full_lowest_over_highest_quantiles_0_50_100": np.quantile(
            end["full_lowest"], [0, 0.5, 1]
        ).tolist(),
        "balanced_fraction": float(np.mean(at["balanced"].all(axis=1))),
        "strict_minimum_fraction_balanced": float(np.mean(end["balanced_lowest"] > 0)),
        "balanced_lowest_over_highest_quantiles_0_50_100": np.quantile(
            end["balanced_lowest"], [0, 0.5, 1]
        ).tolist(),
        "flat_gradient_max": float(end["flat_gradient"].max()),
    }
    for tol in (1e-5, 1e-6):
        ok = (at["balanced_lowest"] > 0) & (at["to_gain"] <= tol) & (at["flat_gradient"] <= 1e-12)
        first = np.where(ok.any(axis=1), ok.argmax(axis=1), n_records)
        stops = first < n_records
        fell = at["loss"][np.arange(n_members), np.minimum(first, n_records - 1)] - end["loss"]
        row[f"tol_{tol:g}"] = {
            "stopped_fraction": float(stops.mean()),
            "records_saved_fraction": float(np.mean(n_records - first) / n_records),
            "loss_fell_after_stop_over_loss_max": float((fell / end["loss"])[stops].max())
            if stops.any()
            else None,
        }
    return row


def allocation_sweeps(seeds: int, tol: float, rounds: int) -> dict:
    """`task-allocation`'s dynamics (H = 3, the factorized horizon cap t = 4000, 40 records)
    swept with and without the stop rule `stop_tol`, alternating after a compiling round:
    wall time, member-steps trained, and which stored values differ."""
    study = jaxicl.ReducedAllocation(heads=3, horizon=4000.0, n_records=40)
    arms = {"whole": study, "stopping": eqx.tree_at(lambda s: s.stop_tol, study, tol)}
    timings, stored = {name: [] for name in arms}, {}
    for round_ in range(rounds + 1):
        for name, arm in arms.items():
            with tempfile.TemporaryDirectory() as tmp:
                result = one_sweep(arm, f"{tmp}/s", seeds, "auto", True, {})
                stored[name] = arrays(f"{tmp}/s")
            if round_:
                timings[name].append(result)
    whole, stopping = stored["whole"], stored["stopping"]
    differ = {}
    for name, values in whole.items():
        same = (values == stopping[name]) | (np.isnan(values) & np.isnan(stopping[name]))
        differ[name] = float(np.mean(~same))
    loss_change = np.abs(stopping["loss"] - whole["loss"]) / whole["loss"]
    row = {
        "members": seeds,
        "stop_tol": tol,
        "stopped_fraction": float(np.mean(stopping["stopped"] == 1)),
        "member_steps_represented": seeds * round(study.horizon / study.dt),
        "fraction_of_values_that_differ": differ,
        "loss_relative_change_max": float(np.nanmax(loss_change)),
    }
    for name, results in timings.items():
        row[f"{name}_seconds"] = [r["seconds"] for r in results]
        row[f"{name}_member_steps_trained"] = results[0]["member_steps_trained"]
    row["speedup_best"] = min(row["whole_seconds"]) / min(row["stopping_seconds"])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--allocation-seeds", type=int, default=128)
    parser.add_argument("--allocation-sweep-seeds", type=int, default=16384)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    result = {
        "machine": platform.processor() or platform.machine(),
        "devices": [str(d) for d in jax.devices()],
        "jax": jax.__version__,
        "own_study": own_study(args.seeds, args.rounds),
    }
    print(json.dumps(result["own_study"]), flush=True)
    result["task_allocation_sweep"] = allocation_sweeps(args.allocation_sweep_seeds, 1e-5, 1)
    print(json.dumps(result["task_allocation_sweep"]), flush=True)
    runs = [allocation_records(h, args.allocation_seeds, 4000.0, 40) for h in (2, 3, 4)]
    jax.config.update("jax_enable_x64", True)  # the Hessians of the float32 states
    result["task_allocation"] = [allocation_stops(*run) for run in runs]
    print(json.dumps(result["task_allocation"]), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
