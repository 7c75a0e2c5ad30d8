"""Ensemble training against the alternatives a user has, side by side in one run.

Same setting, data law and optimizer for everyone (He et al.'s single-task setting: d = 5,
L = 40, H = 2 factorized softmax heads, 256 fresh prompts a step shared by all members, Adam
1e-3, float32). Peers, in member-steps per second:

- `torch_loop`: PyTorch eager, one model per seed (the papers' scripts);
- `torch_batched`: PyTorch with the member axis written into every einsum, parameters stacked,
  one Adam over them (what a competent PyTorch user writes in an afternoon); all members at
  once, and `torch_batched_chunks` in chunks of 32 members per step;
- `torch_compiled`: the batched loss under `torch.compile` (where it works on this machine);
- `jax_vmap`: a per-member JAX step under `jit(vmap(...))`, called once per step from Python;
- `jaxicl`: `train_ensemble_steps`.

Compile time is reported apart. Two limits put the figures in context: a dense fp32 matmul
peak and an `exp` throughput, both measured on the spot (each member-step needs 256 × 2 × 40
exponentials; the matmul units cannot help a contraction of length D = 6).

    python benchmarks/peers.py --out benchmarks/peers_cpu.json
    python benchmarks/peers.py --members 16 256 --quick
"""

import json
import math
import pathlib
import platform
import time
import timeit

import jax
import jax.numpy as jnp
import jax.random as jr
import optax
from ensemble_throughput import (
    BATCH,
    CONTEXT,
    D_IN,
    HEADS,
    LR,
    NOISE,
    _setup,
    command_line,
    jaxicl_ensemble,
    matmul_peak,
    torch_per_seed_loop,
)

from jaxicl._host._devices import use_all_cpu_cores


WIDTH = D_IN + 1
EXPS_PER_MEMBER_STEP = BATCH * HEADS * CONTEXT
CHUNK = 32


def exp_peak(n=1 << 24, repeat=5) -> float:
    """Exponentials per second of a jitted `exp` over a large float32 array, measured now."""
    x = jr.normal(jr.key(0), (n,), jnp.float32)
    f = jax.jit(jnp.exp)
    f(x).block_until_ready()
    return n / min(timeit.repeat(lambda: f(x).block_until_ready(), number=1, repeat=repeat))


def _torch_data(torch, generator):
    x = torch.randn(BATCH, CONTEXT + 1, D_IN, generator=generator)
    beta = torch.randn(BATCH, D_IN, generator=generator) / math.sqrt(D_IN)
    y = torch.einsum("bld,bd->bl", x, beta)
    y = y + NOISE * torch.randn(BATCH, CONTEXT + 1, generator=generator)
    tokens = torch.cat([x[:, :-1], y[:, :-1, None]], dim=-1)
    query = torch.cat([x[:, -1], torch.zeros(BATCH, 1)], dim=-1)
    return tokens, query, y[:, -1]


def _torch_members_loss(torch, Q, K, V, O, tokens, query, target):
    """Σ over members of each member's mean squared error (so each gets its own gradient)."""
    q = torch.einsum("mhrD,bD->mbhr", Q, query)
    key_side = torch.einsum("mhrD,mbhr->mbhD", K, q) / math.sqrt(WIDTH)
    weights = torch.softmax(torch.einsum("mbhD,blD->mbhl", key_side, tokens), dim=-1)
    mixed = torch.einsum("mbhl,blD->mbhD", weights, tokens)
    out = torch.einsum("mhov,mbhv->mbo", O, torch.einsum("mhvD,mbhD->mbhv", V, mixed))
    return ((out[..., 0] - target) ** 2).mean(dim=1).sum()


def torch_batched(n_members, steps, repeat, *, chunk=None, compile=False):
    import torch

    generator = torch.Generator().manual_seed(0)
    shapes = [(HEADS, WIDTH, WIDTH)] * 3 + [(HEADS, 1, WIDTH)]
    params = [
        torch.nn.Parameter(0.1 * torch.randn(n_members, *s, generator=generator)) for s in shapes
    ]
    opt = torch.optim.Adam(params, lr=LR)
    loss_fn = _torch_members_loss
    if compile:
        loss_fn = torch.compile(_torch_members_loss, dynamic=False)
    size = chunk or n_members
    blocks = [(a, min(n_members, a + size)) for a in range(0, n_members, size)]

    def run(n_steps):
        for _ in range(n_steps):
            data = _torch_data(torch, generator)
            opt.zero_grad()
            for a, b in blocks:
                loss_fn(torch, *(p[a:b] for p in params), *data).backward()
            opt.step()

    start = time.perf_counter()
    run(1)
    first = time.perf_counter() - start
    best = min(timeit.repeat(lambda: run(steps), number=1, repeat=repeat))
    return {
        "member_steps_per_s": n_members * steps / best,
        "compile_s": max(0.0, first - best / steps),
    }


def jax_vmap(n_members, steps, repeat):
    """A per-member step, `jit(vmap(step))` over members with the step's prompts shared,
    called from a Python loop (one dispatch per step)."""
    states, objective, _ = _setup(n_members)
    optimizer = optax.adam(LR)
    models = states.model
    opt_states = jax.vmap(optimizer.init)(models)

    def step(model, opt_state, data):
        loss, grads = jax.value_and_grad(objective.evaluate)(model, data)
        updates, opt_state = optimizer.update(grads, opt_state, model)
        return optax.apply_updates(model, updates), opt_state

    vstep = jax.jit(jax.vmap(step, in_axes=(0, 0, None)))
    draw = jax.jit(objective.draw)

    def run(models, opt_states, n_steps, seed):
        for t in range(n_steps):
            models, opt_states = vstep(models, opt_states, draw(jr.fold_in(jr.key(seed), t)))
        return jax.block_until_ready((models, opt_states))

    start = time.perf_counter()
    run(models, opt_states, 1, 0)
    first = time.perf_counter() - start
    seeds = iter(range(1, repeat + 1))
    best = min(
        timeit.repeat(lambda: run(models, opt_states, steps, next(seeds)), number=1, repeat=repeat)
    )
    return {
        "member_steps_per_s": n_members * steps / best,
        "compile_s": max(0.0, first - best / steps),
    }


def _try(name, fn):
    try:
        return fn()
    except ImportError:
        print(f"  {name}: torch not installed (pip install -e '.[bench]')")
    except Exception as error:  # noqa: BLE001 — a peer that fails here is reported, not fatal
        print(f"  {name}: failed ({type(error).__name__}: {str(error).splitlines()[0][:120]})")
    return None


def main(*, members=(1, 16, 256, 1024, 4096), steps=20, repeat=3, quick=False, out=None):
    use_all_cpu_cores()
    if quick:
        steps, repeat = 4, 2
    device = jax.devices()[0]
    print(
        f"device: {device.platform} / {device.device_kind} ({jax.device_count()} devices), "
        f"jax {jax.__version__}, {platform.processor() or platform.machine()}"
    )
    peaks = {"matmul_flops": matmul_peak(), "exp_per_s": exp_peak()}
    print(
        f"measured: fp32 matmul {peaks['matmul_flops'] / 1e9:.1f} GFLOP/s, "
        f"exp {peaks['exp_per_s'] / 1e9:.2f} G/s"
    )
    loop = _try("torch_loop", lambda: torch_per_seed_loop(2 if quick else 8, 20 if quick else 100))
    rows = []
    for n in members:
        torch_steps = max(2, steps // 4) if n >= 1024 else steps
        row = {
            "members": n,
            "jaxicl": jaxicl_ensemble(n, steps, repeat),
            "jax_vmap": jax_vmap(n, steps, repeat),
            "torch_batched": _try("torch_batched", lambda: torch_batched(n, torch_steps, repeat)),
            "torch_batched_chunks": _try(
                "torch_batched_chunks", lambda: torch_batched(n, torch_steps, repeat, chunk=CHUNK)
            ),
            "torch_compiled": _try(
                "torch_compiled",
                lambda: torch_batched(n, torch_steps, repeat, chunk=CHUNK, compile=True),
            ),
            "torch_loop": loop,
        }
        rate = row["jaxicl"]["member_steps_per_s"]
        row["exp_limit_fraction"] = rate * EXPS_PER_MEMBER_STEP / peaks["exp_per_s"]
        row["ratios"] = {
            name: rate / r["member_steps_per_s"]
            for name, r in row.items()
            if isinstance(r, dict) and "member_steps_per_s" in r and name != "jaxicl"
        }
        rows.append(row)
        print(_line(row))
    report = {
        "device": str(device.device_kind),
        "platform": device.platform,
        "devices": jax.device_count(),
        "jax": jax.__version__,
        "setting": dict(d=D_IN, L=CONTEXT, H=HEADS, batch=BATCH, lr=LR, chunk=CHUNK),
        "peaks": peaks,
        "steps": steps,
        "repeat": repeat,
        "rows": rows,
    }
    if out is not None:
        pathlib.Path(out).write_text(json.dumps(report, indent=2))
    return report


def _line(row) -> str:
    rates = "  ".join(
        f"{name} {r['member_steps_per_s']:.0f}"
        for name, r in row.items()
        if isinstance(r, dict) and "member_steps_per_s" in r
    )
    ratios = "  ".join(f"{name} {v:.2f}×" for name, v in row["ratios"].items())
    return (
        f"members {row['members']:>5}: member-steps/s: {rates}\n"
        f"   jaxicl compile {row['jaxicl']['compile_s']:.1f} s, "
        f"{row['exp_limit_fraction']:.1%} of the exp limit; jaxicl vs: {ratios}"
    )


if __name__ == "__main__":
    command_line(main, __doc__.splitlines()[0])
