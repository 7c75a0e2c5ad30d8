"""The reduced loss ℓ(Ω, M) against Monte Carlo of the full softmax model, as L grows.

At d = 15 and d = 50 (3 tasks), for L = 100, 400, 1600, 6400 and three points (the optimum of
one head per task, a random positive point, a mixed-sign point), prints the relative error of
ℓ's finite-L part ℓ − ℓ_∞ (the O(1/L) term the theory is about; ℓ_∞ is exact) and of ℓ itself,
for the formula jaxicl uses and for the same formula with a term removed (`reduced_loss`'s
ablation switches):

- `no tilt`: the fluctuation variance r + σ² without r ω ω' / (1 − 2 ω ω');
- `no ratio bias`: the slope Σ μ ω without the shrink 1/(1 + κ) (E[A/B] taken as E A / E B);
- `old`: both removed (the formula of earlier versions).

A term is kept only if the error without it does not vanish as L grows. Monte Carlo:
`ansatz_monte_carlo_loss` (rotated frame, control variates), standard errors shown.

    python benchmarks/reduced_convergence.py --out benchmarks/reduced_convergence.json
    python benchmarks/reduced_convergence.py --quick
"""

import argparse
import json
import platform
import time

import jax


jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402

import jaxicl as ji  # noqa: E402


VARIANTS = {
    "jaxicl": {},
    "no tilt": {"tilt": False},
    "no ratio bias": {"ratio_bias": False},
    "old": {"tilt": False, "ratio_bias": False},
}


def points(sizes, context_len):
    """(name, Ω, M) of the three test points; off-optimum points scaled to the block size."""
    r = sizes[0]
    optimum = ji.optimal_allocation_losses(sizes, context_len)
    scale = (5 / r) ** 0.5
    positive = (
        scale * jnp.array([[0.3, 0.1, 0.05], [0.02, 0.35, 0.05], [0.1, 0.04, 0.25]]),
        jnp.array([[0.9, 0.2, 0.1], [0.1, 0.8, 0.1], [0.05, 0.1, 1.0]]),
    )
    mixed = (
        scale * jnp.array([[0.3, -0.1, 0.05], [-0.05, 0.35, 0.1], [0.3, 0.1, -0.25]]),
        jnp.array([[0.9, -0.4, 0.2], [0.3, 0.8, -0.1], [-0.5, 0.2, 1.0]]),
    )
    strict = (
        jnp.diag(jnp.asarray(optimum.one_head_per_task_omega)),
        jnp.diag(jnp.asarray(optimum.one_head_per_task_mu)),
    )
    return {"strict optimum": strict, "random positive": positive, "mixed sign": mixed}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4,096 prompts, L ≤ 1600")
    parser.add_argument("--prompts", type=int, default=32_768, help="prompts per (d, L)")
    parser.add_argument("--out", help="write the rows as JSON here")
    args = parser.parse_args()
    prompts = 4096 if args.quick else args.prompts
    lengths = (100, 400, 1600) if args.quick else (100, 400, 1600, 6400)
    print(
        f"device: {platform.processor() or platform.machine()}, jax {jax.__version__}, "
        f"{prompts} prompts per (d, L), float64"
    )
    rows = []
    for d in (15, 50):
        sizes = tuple(b - a for a, b in ji.disjoint_blocks(d, 3))
        for length in lengths:
            named = points(sizes, length)
            omega = jnp.stack([o for o, _ in named.values()])
            mu = jnp.stack([m for _, m in named.values()])
            start = time.perf_counter()
            estimate = ji.ansatz_monte_carlo_loss(
                omega,
                mu,
                d=d,
                context_len=length,
                n_prompts=prompts,
                key=jr.fold_in(jr.key(d), length),
            )
            seconds = time.perf_counter() - start
            for p, name in enumerate(named):
                finite, err = float(estimate.finite_part[p]), float(estimate.finite_part_stderr[p])
                loss, loss_err = float(estimate.loss[p]), float(estimate.loss_stderr[p])
                row = {
                    "d": d,
                    "context_len": length,
                    "point": name,
                    "mc_loss": loss,
                    "mc_loss_stderr": loss_err,
                    "mc_finite": finite,
                    "mc_finite_stderr": err,
                    "seconds": seconds,
                }
                for variant, switches in VARIANTS.items():
                    value = float(
                        ji.reduced_loss(
                            omega[p], mu[p], block_sizes=sizes, context_len=length, **switches
                        )
                    )
                    row[variant] = value
                    row[f"{variant} finite error"] = (value - float(estimate.limit[p])) / finite - 1
                rows.append(row)
                errors = "  ".join(f"{v} {row[f'{v} finite error']:+7.1%}" for v in VARIANTS)
                print(
                    f"d={d:3d} L={length:5d} {name:16s} MC ℓ−ℓ∞ {finite:.5f} "
                    f"(±{err / finite:.1%}); error of ℓ−ℓ∞: {errors}; "
                    f"error of ℓ {row['jaxicl'] / loss - 1:+.2%} (±{loss_err / loss:.2%})",
                    flush=True,
                )
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"prompts": prompts, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
