"""Ensemble training throughput: jaxicl vs a per-seed PyTorch eager loop vs a per-seed jaxicl loop.

Single-task setting of He et al.: d = 5, L = 40, H = 2 factorized softmax heads, 256 fresh
prompts a step, Adam 1e-3. Reports member-steps per second, compile time, achieved FLOP/s (from
XLA's cost analysis of one step) as a fraction of a dense fp32 matmul peak measured on the spot.

    python benchmarks/ensemble_throughput.py                # all sizes, writes a JSON beside it
    python benchmarks/ensemble_throughput.py --members 1 16 --quick
"""

import argparse
import json
import math
import pathlib
import platform
import time
import timeit

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax

import jaxicl as ji
from jaxicl._host._devices import use_all_cpu_cores
from jaxicl._train._lowering import compile_ensemble_steps  # for XLA's cost analysis


D_IN, CONTEXT, HEADS, BATCH, LR, NOISE = 5, 40, 2, 256, 1e-3, math.sqrt(0.1)


def _setup(n_members):
    task = ji.LinearRegression(D_IN, CONTEXT, context_noise=NOISE, query_noise=NOISE)
    objective, optimizer = ji.ICLLoss(task, BATCH), optax.adam(LR)

    def make(key):
        return ji.init_normal(d=D_IN, n_out=1, n_heads=HEADS, scale=0.1, key=key)

    models = eqx.filter_vmap(make)(jr.split(jr.key(0), n_members))
    return ji.init_ensemble_state(models, optimizer), objective, optimizer


def flops_per_step(n_members) -> float:
    """XLA's flop count for one step of the whole ensemble (all members at once, no chunking)."""
    states, objective, optimizer = _setup(n_members)
    analysis = compile_ensemble_steps(states, objective, optimizer, steps=1).cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    return float(analysis["flops"])


def jaxicl_ensemble(n_members, steps, repeat):
    states, objective, optimizer = _setup(n_members)

    def run(seed):
        out = ji.train_ensemble_steps(
            states,
            objective,
            optimizer,
            steps=steps,
            record=ji.Record(every=steps),
            key=jr.key(seed),
        )
        return jax.block_until_ready(out)

    start = time.perf_counter()
    run(0)
    first = time.perf_counter() - start
    seeds = iter(range(1, repeat + 1))
    best = min(timeit.repeat(lambda: run(next(seeds)), number=1, repeat=repeat))
    return {
        "member_steps_per_s": n_members * steps / best,
        "compile_s": first - best,
        "step_s": best / steps,
    }


def jaxicl_per_seed_loop(n_seeds, steps):
    """One jitted `train_steps` call (a scan over steps) per seed, seeds in a Python loop."""
    states, objective, optimizer = _setup(n_seeds)
    members = [
        jax.tree_util.tree_map(lambda x, i=i: x[i] if eqx.is_array(x) else x, states)
        for i in range(n_seeds)
    ]
    kwargs = dict(steps=steps, record=ji.Record(every=steps), key=jr.key(1))
    jax.block_until_ready(ji.train_steps(members[0], objective, optimizer, **kwargs))
    start = time.perf_counter()
    for state in members:
        jax.block_until_ready(ji.train_steps(state, objective, optimizer, **kwargs))
    return {"member_steps_per_s": n_seeds * steps / (time.perf_counter() - start)}


def torch_per_seed_loop(n_seeds, steps):
    """The papers' way: one model per seed, PyTorch eager, fresh prompts every step."""
    import torch

    width = D_IN + 1

    def train_one(seed):
        generator = torch.Generator().manual_seed(seed)
        params = [
            torch.nn.Parameter(0.1 * torch.randn(HEADS, width, width, generator=generator))
            for _ in range(3)
        ]
        params.append(torch.nn.Parameter(0.1 * torch.randn(HEADS, 1, width, generator=generator)))
        opt = torch.optim.Adam(params, lr=LR)
        Q, K, V, O = params
        for _ in range(steps):
            x = torch.randn(BATCH, CONTEXT + 1, D_IN)
            beta = torch.randn(BATCH, D_IN) / math.sqrt(D_IN)
            y = torch.einsum("bld,bd->bl", x, beta) + NOISE * torch.randn(BATCH, CONTEXT + 1)
            tokens = torch.cat([x[:, :-1], y[:, :-1, None]], dim=-1)
            query = torch.cat([x[:, -1], torch.zeros(BATCH, 1)], dim=-1)
            q = torch.einsum("hrD,bD->bhr", Q, query)
            k_side = torch.einsum("hrD,bhr->bhD", K, q) / math.sqrt(width)
            weights = torch.softmax(torch.einsum("bhD,blD->bhl", k_side, tokens), dim=-1)
            mixed = torch.einsum("bhl,blD->bhD", weights, tokens)
            out = torch.einsum("hov,bhv->bo", O, torch.einsum("hvD,bhD->bhv", V, mixed))
            loss = ((out[:, 0] - y[:, -1]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

    train_one(0)  # warm-up (allocator, kernels)
    start = time.perf_counter()
    for seed in range(1, n_seeds + 1):
        train_one(seed)
    return {
        "member_steps_per_s": n_seeds * steps / (time.perf_counter() - start),
        "threads": torch.get_num_threads(),
        "version": torch.__version__,
    }


def matmul_peak(sizes=(1024, 2048, 4096), repeat=5) -> float:
    """Best dense fp32 matmul rate (FLOP/s) over a few sizes, measured now on this device."""
    best = 0.0
    for n in sizes:
        a = jr.normal(jr.key(0), (n, n), jnp.float32)
        f = jax.jit(lambda a: a @ a)
        f(a).block_until_ready()
        t = min(timeit.repeat(lambda: f(a).block_until_ready(), number=1, repeat=repeat))
        best = max(best, 2 * n**3 / t)
    return best


def main(
    *,
    members=(1, 16, 256, 1024, 4096),
    steps=20,
    repeat=3,
    torch_seeds=8,
    torch_steps=100,
    loop_seeds=8,
    quick=False,
    out=None,
):
    use_all_cpu_cores()
    if quick:
        steps, repeat, torch_seeds, torch_steps, loop_seeds = 5, 2, 2, 20, 2
    device = jax.devices()[0]
    print(
        f"device: {device.platform} / {device.device_kind} ({jax.device_count()} devices), "
        f"jax {jax.__version__}, {platform.processor() or platform.machine()}"
    )
    print(
        f"setting: d={D_IN}, L={CONTEXT}, H={HEADS}, batch={BATCH}, Adam, float32, "
        f"{steps} steps per timed call, min of {repeat}"
    )
    peak = matmul_peak()
    print(f"measured fp32 matmul peak: {peak / 1e9:.1f} GFLOP/s")
    baselines = {"jaxicl_per_seed_loop": jaxicl_per_seed_loop(loop_seeds, steps * 5)}
    try:
        baselines["torch_per_seed_loop"] = torch_per_seed_loop(torch_seeds, torch_steps)
    except ImportError:
        print("torch not installed (pip install -e '.[bench]'): skipping the PyTorch baseline")
    for name, result in baselines.items():
        print(f"{name}: {result['member_steps_per_s']:.0f} member-steps/s")
    rows = []
    for n in members:
        result = jaxicl_ensemble(n, steps, repeat)
        flops = flops_per_step(n)
        result.update(
            members=n,
            flops_per_step=flops,
            achieved_flops=flops / result["step_s"],
            peak_fraction=flops / result["step_s"] / peak,
        )
        for name, base in baselines.items():
            result["vs_" + name] = result["member_steps_per_s"] / base["member_steps_per_s"]
        rows.append(result)
        print(_row(result, baselines))
    report = {
        "device": str(device.device_kind),
        "platform": device.platform,
        "jax": jax.__version__,
        "matmul_peak_flops": peak,
        "baselines": baselines,
        "ensembles": rows,
        "steps": steps,
        "repeat": repeat,
    }
    if out is not None:
        pathlib.Path(out).write_text(json.dumps(report, indent=2))
    return report


def _row(r, baselines) -> str:
    ratios = "  ".join(f"{r['vs_' + name]:8.1f}×" for name in baselines)
    return (
        f"members {r['members']:>6}: {r['member_steps_per_s']:>10.0f} member-steps/s  "
        f"compile {r['compile_s']:5.1f} s  {r['achieved_flops'] / 1e9:6.1f} GFLOP/s "
        f"({r['peak_fraction']:.1%} of peak)  vs baselines: {ratios}"
    )


def command_line(main, description: str) -> None:
    """The benchmarks' shared command line: `--members`, `--quick`, `--out`, then `main`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--members", type=int, nargs="+", default=[1, 16, 256, 1024, 4096])
    parser.add_argument("--quick", action="store_true", help="tiny repeat counts (smoke test)")
    parser.add_argument("--out", default=None, help="write the JSON report here")
    args = parser.parse_args()
    main(members=tuple(args.members), quick=args.quick, out=args.out)


if __name__ == "__main__":
    command_line(main, __doc__.splitlines()[0])
