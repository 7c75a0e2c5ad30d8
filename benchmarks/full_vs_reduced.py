"""The full softmax model against the reduced (Ω, M) flow: what the gap between them is made of.

From one decomposable init (d = 15, 3 tasks of r = 5, H = 3, ω ≈ 0.1, μ ≈ 0.3, a short warm-up),
the full model is trained by SGD on fresh prompts (float32) and the reduced flow integrated in
the same metric over gradient-flow time 3 (through emergence), for 256, 1024 and 4096 prompts a
step and L = 100 and 400. Printed: the largest deviation of Ω and of M over the records
(relative to their largest entry) and the final loss of both. If the gap were sampling noise it
would shrink like 1/√(prompts); if it is the large-L expansion's error, it stays as the prompts
grow and shrinks with L.

    python benchmarks/full_vs_reduced.py --out benchmarks/full_vs_reduced.json
"""

import argparse
import json
import platform
import time

import jax
import jax.numpy as jnp
import jax.random as jr

import jaxicl as ji


R, N_TASKS = 5, 3
D = R * N_TASKS
BLOCKS = ji.disjoint_blocks(D, N_TASKS)


class DiagonalMetricSpectral(ji.AbstractSpectral):
    """ω = a/√r: descent on a is the metric plain descent on the r diagonal entries of W gives."""

    a: jax.Array
    mu: jax.Array

    def spectral(self):
        return self.a / jnp.sqrt(float(R)), self.mu


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write the rows as JSON here")
    parser.add_argument("--seeds", type=int, default=2, help="full-model seeds per setting")
    args = parser.parse_args()
    print(f"device: {platform.processor() or platform.machine()}, jax {jax.__version__}, float32")
    f32 = jnp.float32
    omega0 = 0.1 * (1 + 0.1 * jr.uniform(jr.key(1), (3, N_TASKS), f32))
    mu0 = 0.3 * (1 + 0.1 * jr.uniform(jr.key(2), (3, N_TASKS), f32))
    dt, steps, every = 0.003, 1000, 200
    schedule = dict(steps=steps, record_every=every)
    rows = []
    for length in (100, 400):
        _, reduced = ji.train(
            DiagonalMetricSpectral(omega0 * R**0.5, mu0),
            ji.ReducedLoss((R,) * N_TASKS, length),
            ji.sgd(dt),
            observe=lambda s: s.spectral(),
            key=jr.key(0),
            **schedule,
        )
        task = ji.MultiTaskRegression(D, length, BLOCKS, dtype=f32)
        for prompts in (256, 1024, 4096):
            for seed in range(args.seeds):
                start = time.perf_counter()
                _, traj = ji.train(
                    ji.decomposable_attention(omega0, mu0, BLOCKS, D),
                    ji.ICLLoss(task, prompts),
                    ji.sgd(N_TASKS * dt),
                    observe=lambda m: ji.semi_singular_values(m, BLOCKS),
                    key=jr.key(3 + seed),
                    **schedule,
                )
                gaps = [
                    float(jnp.abs(got - want).max() / jnp.abs(want).max())
                    for got, want in zip(traj.observables, reduced.observables)
                ]
                row = {
                    "context_len": length,
                    "prompts": prompts,
                    "seed": seed,
                    "omega_gap": gaps[0],
                    "mu_gap": gaps[1],
                    "full_final_loss": N_TASKS * float(traj.loss[-1]),  # ℓ sums the tasks
                    "reduced_final_loss": float(reduced.loss[-1]),
                    "seconds": time.perf_counter() - start,
                }
                rows.append(row)
                print(
                    f"L={length:4d} prompts={prompts:5d} seed {seed}: Ω gap {gaps[0]:.3f}, "
                    f"M gap {gaps[1]:.3f}; final loss full {row['full_final_loss']:.3f} "
                    f"(one batch) vs reduced {row['reduced_final_loss']:.3f}  "
                    f"[{row['seconds']:.0f} s]",
                    flush=True,
                )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
