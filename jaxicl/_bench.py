"""`jaxicl bench`: the standard workloads on whatever devices JAX sees, so that two machines can
be compared with one command. For each: member-steps per second (best of a few timed calls
after a compiling one), compile time, achieved FLOP/s from XLA's cost analysis of the compiled
step, and its fraction of a dense matmul peak measured on the spot.
"""

import json
import os
import platform
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax

from ._attention._init import init_normal
from ._attention._init_schemes import RandomPositive
from ._attention._reduced import ReducedLoss
from ._meanfield._model import init_feature_attention
from ._meanfield._solver import particle_solver
from ._meanfield._task import feature_regression
from ._tasks._regression import LinearRegression
from ._train._lowering import compile_ensemble_steps
from ._train._objectives import ICLLoss
from ._train._optimizers import sgd
from ._train._options import Record
from ._train._state import init_ensemble_state
from ._train._trainer import train_ensemble_steps


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of the best of `repeats` n×n float32 matmuls on the default device."""
    a = jr.normal(jr.key(0), (n, n), jnp.float32)
    product = jax.jit(lambda x: x @ x)
    product(a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        product(a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def _ensemble_training(members: int):
    task = LinearRegression(5, 40, context_noise=0.1**0.5, query_noise=0.1**0.5)
    models = eqx.filter_vmap(lambda k: init_normal(d=5, n_out=1, n_heads=2, scale=0.1, key=k))(
        jr.split(jr.key(0), members)
    )
    optimizer = optax.adam(1e-3)
    return init_ensemble_state(models, optimizer), ICLLoss(task, 256), optimizer, {}


def _reduced_sweep(members: int):
    keys = jr.split(jr.key(0), members)
    states = eqx.filter_vmap(lambda k: RandomPositive()(3, 3, 1e-3, key=k))(keys)
    optimizer = sgd(0.005)
    return init_ensemble_state(states, optimizer), ReducedLoss((16, 17, 17), 100), optimizer, {}


def _meanfield(members: int):
    task = feature_regression(key=jr.key(0))
    x = task.inputs(2000, key=jr.key(1))
    solver = particle_solver(task, learning_rate=0.05, inputs=x, eval_inputs=x[:256])
    models = eqx.filter_vmap(lambda k: init_feature_attention(n_particles=500, k=5, d=20, key=k))(
        jr.split(jr.key(2), members)
    )
    extra = {"record": Record(observe=solver.observe), "after_step": solver.after_step}
    return solver.init(models), solver.objective, solver.optimizer, extra


WORKLOADS = {
    # name: (builder, members, steps per call, description)
    "ensemble-training": (_ensemble_training, 1024, 20, "d=5, L=40, H=2 softmax, 256 prompts"),
    "reduced-sweep": (_reduced_sweep, 65536, 200, "reduced (Ω, M) flow, H=3, 3 tasks, d=50"),
    "meanfield": (_meanfield, 8, 20, "particle flow, M=500, N=2000, d=20, k=5, static W"),
}


def _flops_per_step(states, objective, optimizer, extra) -> float:
    """XLA's flop count of one step of the whole ensemble (a one-step program: the cost
    analysis counts a loop's body once, whatever its trip count)."""
    compiled = compile_ensemble_steps(states, objective, optimizer, steps=1, **extra)
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    return float(analysis.get("flops", float("nan")))


def bench_workload(name: str, scale: float = 1.0, repeats: int = 3) -> dict:
    build, members, steps, description = WORKLOADS[name]
    members = max(1, int(members * scale))
    states, objective, optimizer, extra = build(members)

    def call(seed):
        out = train_ensemble_steps(
            states, objective, optimizer, steps=steps, key=jr.key(seed), **extra
        )
        return jax.block_until_ready(out)

    start = time.perf_counter()
    call(0)
    first = time.perf_counter() - start
    best = float("inf")
    for seed in range(1, repeats + 1):
        start = time.perf_counter()
        call(seed)
        best = min(best, time.perf_counter() - start)
    flops = _flops_per_step(states, objective, optimizer, extra)
    return {
        "workload": name,
        "setting": description,
        "members": members,
        "steps_per_call": steps,
        "member_steps_per_s": members * steps / best,
        "compile_s": first - best,
        "flop_per_s": flops * steps / best,
    }


def run_bench(*, scale: float = 1.0, out=None) -> dict:
    """Run every workload; print a table; save JSON to `out` if given (checked writable
    first, so a long benchmark is never lost to a bad path)."""
    if out is not None:
        existed = os.path.exists(out)
        try:
            with open(out, "a"):
                pass
        except OSError as error:
            raise ValueError(f"cannot write the report to {out}: {error.strerror}.") from None
        if not existed:
            os.remove(out)
    peak = matmul_peak()
    device = jax.devices()[0]
    report = {
        "device": f"{device.device_kind} ({device.platform}) × {jax.device_count()}",
        "host": platform.machine(),
        "jax": jax.__version__,
        "x64": bool(jax.config.jax_enable_x64),
        "matmul_peak_flop_per_s": peak,
        "workloads": [bench_workload(name, scale) for name in WORKLOADS],
    }
    for row in report["workloads"]:
        row["fraction_of_matmul_peak"] = row["flop_per_s"] / peak
    if out is not None:
        with open(out, "w") as f:
            json.dump(report, f, indent=2)
    return report


def format_bench(report: dict) -> str:
    lines = [
        f"device: {report['device']}, jax {report['jax']}, float32 matmul peak "
        f"{report['matmul_peak_flop_per_s'] / 1e9:.1f} GFLOP/s (measured)",
        "workload            members  member-steps/s  compile (s)  GFLOP/s  of peak  setting",
    ]
    for r in report["workloads"]:
        lines.append(
            f"{r['workload']:<18} {r['members']:>8}  {r['member_steps_per_s']:>14.4g}"
            f"  {r['compile_s']:>11.1f}  {r['flop_per_s'] / 1e9:>7.2f}"
            f"  {r['fraction_of_matmul_peak']:>7.1%}  {r['setting']}"
        )
    return "\n".join(lines)
