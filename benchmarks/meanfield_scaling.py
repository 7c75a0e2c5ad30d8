"""Mean-field particle solver throughput: particle-steps per second against the number of
particles M, the input-sample size N and the ensemble size, and an ensemble call against a
per-seed loop of the same solver, side by side in one process.

Setting: the static (two-timescale) flow of `feature-learning` (d = 20, k = 5, sigmoid, a fixed
input sample), float64. The cost of a step is a few passes over the N × M pre-activations, so
it should grow like M × N; the fitted exponents are printed.

    python benchmarks/meanfield_scaling.py --out benchmarks/meanfield_scaling_cpu.json
    python benchmarks/meanfield_scaling.py --quick
"""

import argparse
import json
import platform
import time

import jax


jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import jax.random as jr  # noqa: E402
import numpy as np  # noqa: E402

import jaxicl as ji  # noqa: E402
from jaxicl._host._devices import use_all_cpu_cores  # noqa: E402


D, K = 20, 5


def _solver_and_states(n_particles, n_inputs, n_members):
    task = ji.feature_regression(d=D, k=K, key=jr.key(0))
    x = task.inputs(n_inputs, key=jr.key(1))
    solver = ji.particle_solver(task, learning_rate=0.1, inputs=x, eval_inputs=x[:256])
    make = lambda k: ji.init_feature_attention(n_particles=n_particles, k=K, d=D, key=k)
    models = eqx.filter_vmap(make)(jr.split(jr.key(2), n_members))
    return solver, solver.init(models)


def _timed(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - start)
    return best


def measure(n_particles, n_inputs, n_members, steps, repeats) -> dict:
    """Ensemble call: compile (first call) and best-of-`repeats` seconds per step."""
    solver, states = _solver_and_states(n_particles, n_inputs, n_members)

    def call():
        return solver.run(states, steps=steps, record_every=steps, key=jr.key(3))

    start = time.perf_counter()
    jax.block_until_ready(call())
    first = time.perf_counter() - start
    seconds = _timed(call, repeats)
    return {
        "particles": n_particles,
        "inputs": n_inputs,
        "members": n_members,
        "compile_s": first - seconds,
        "seconds_per_step": seconds / steps,
        "particle_steps_per_s": n_particles * n_members * steps / seconds,
    }


def per_seed_loop(n_particles, n_inputs, n_members, steps, repeats) -> dict:
    """The same solver called once per seed (one member each), as per-seed scripts do."""
    solver, states = _solver_and_states(n_particles, n_inputs, n_members)
    singles = [jax.tree.map(lambda a: a[i : i + 1], states) for i in range(n_members)]

    def loop():
        return [solver.run(s, steps=steps, record_every=steps, key=jr.key(3)) for s in singles]

    jax.block_until_ready(loop()[0])
    seconds = _timed(loop, repeats)
    return {"members": n_members, "particle_steps_per_s": n_particles * n_members * steps / seconds}


def _exponent(xs, seconds) -> float:
    return float(np.polyfit(np.log(xs), np.log(seconds), 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    use_all_cpu_cores()
    steps, repeats = (5, 1) if args.quick else (20, 3)
    sizes = (100, 200) if args.quick else (100, 200, 400, 800, 1600)
    inputs = (250, 500) if args.quick else (500, 1000, 2000, 4000)
    members = (1, 4) if args.quick else (1, 4, 16, 64)
    by_m = [measure(m, 2000, 8, steps, repeats) for m in sizes]
    by_n = [measure(500, n, 8, steps, repeats) for n in inputs]
    by_members = [measure(500, 2000, e, steps, repeats) for e in members]
    loop_members = members[-2]
    loop = per_seed_loop(500, 2000, loop_members, steps, repeats)
    ensemble = next(r for r in by_members if r["members"] == loop_members)
    result = {
        "device": f"{jax.devices()[0].device_kind} × {jax.device_count()} ({platform.machine()})",
        "jax": jax.__version__,
        "dtype": "float64",
        "steps_per_call": steps,
        "by_particles": by_m,
        "by_inputs": by_n,
        "by_members": by_members,
        "exponent_particles": _exponent(sizes, [r["seconds_per_step"] for r in by_m]),
        "exponent_inputs": _exponent(inputs, [r["seconds_per_step"] for r in by_n]),
        "per_seed_loop": loop,
        "ensemble_vs_loop": ensemble["particle_steps_per_s"] / loop["particle_steps_per_s"],
    }
    print(f"device: {result['device']}, float64, d = {D}, k = {K}")
    for label, rows, key in (
        ("M", by_m, "particles"),
        ("N", by_n, "inputs"),
        ("members", by_members, "members"),
    ):
        for r in rows:
            print(
                f"{label}={r[key]:>5} (M {r['particles']}, N {r['inputs']}, {r['members']} runs):"
                f" {r['particle_steps_per_s']:.3g} particle-steps/s, compile {r['compile_s']:.1f} s"
            )
    print(
        f"time per step ∝ M^{result['exponent_particles']:.2f}, N^{result['exponent_inputs']:.2f}"
    )
    print(
        f"{loop_members} members: ensemble {ensemble['particle_steps_per_s']:.3g} vs per-seed loop"
        f" {loop['particle_steps_per_s']:.3g} particle-steps/s ({result['ensemble_vs_loop']:.2f}×)"
    )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
