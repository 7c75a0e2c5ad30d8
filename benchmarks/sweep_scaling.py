"""Reduced-dynamics sweep at scale: throughput, peak resident memory and store size of a
sweep, each configuration in a fresh process (so its peak memory is its own).

Study `reduced-allocation` (d = 50, 3 tasks, H = 3, random-positive init), 10⁵ and 10⁶ seeds
streamed to a Zarr store in units of 25,000 (one compiled call per step chunk, 4 step chunks
per unit, a checkpoint after each); two step counts, and 1 vs 2 CPU devices (members sharded).
Peak memory must be flat in the number of seeds (one unit's states and one step chunk's
records in memory at a time): the benchmark asserts it (within 25%). The first step chunk
compiles; throughput is taken from the fastest of the others.

    python benchmarks/sweep_scaling.py --out benchmarks/sweep_scaling_cpu.json
    python benchmarks/sweep_scaling.py --seeds 8000,80000 --members-per-call 2000   # quicker
"""

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time


def child(seeds: int, steps: int, out: str, members_per_call: int) -> None:
    """One sweep of `steps` steps in this process; prints its timings and peak RSS as JSON."""
    import jaxicl

    dt = jaxicl.ReducedAllocation().dt
    study = jaxicl.ReducedAllocation(horizon=steps * dt, n_records=40)
    marks = [time.perf_counter()]
    jaxicl.sweep(
        study,
        seeds=seeds,
        store=out,
        members_per_call=members_per_call,
        progress=False,
        on_chunk=lambda u, c: marks.append(time.perf_counter()),
    )
    chunks = [b - a for a, b in zip(marks, marks[1:])]
    steady = min(chunks[1:]) if len(chunks) > 1 else chunks[0]
    units = -(-seeds // members_per_call)
    steps_per_chunk = steps * units / len(chunks)
    result = {
        "seconds": marks[-1] - marks[0],
        "step_chunks": len(chunks),
        "member_steps_per_s": members_per_call * steps_per_chunk / steady,
        "overall_member_steps_per_s": seeds * steps / (marks[-1] - marks[0]),
        "compile_s": chunks[0] - steady,
        "steps": steps,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(json.dumps(result))


def run(seeds: int, steps: int, devices: int, chunk: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    env["JAX_NUM_CPU_DEVICES"] = str(devices)
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "store"
        command = [sys.executable, __file__, "--child", str(seeds), str(steps), str(out)]
        done = subprocess.run(
            [*command, str(chunk)], env=env, check=True, capture_output=True, text=True
        )
        size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    result = json.loads(done.stdout.splitlines()[-1])
    return {"seeds": seeds, "devices": devices, **result, "store_mb": size / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument(
        "--seeds", default="100000,1000000", help="the two seed counts, comma-separated"
    )
    parser.add_argument("--members-per-call", type=int, default=25_000)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.child:
        seeds, steps, out, chunk = args.child
        child(int(seeds), int(steps), out, int(chunk))
        return
    few, many = (int(n) for n in args.seeds.split(","))
    # (seeds, steps, devices): more seeds, more steps, one device
    plan = [(few, 1000, 2), (many, 1000, 2), (few, 4000, 2), (few, 1000, 1)]
    rows = [run(seeds, steps, n, args.members_per_call) for seeds, steps, n in plan]
    for r in rows:
        print(
            f"{r['seeds']} members × {r['steps']} steps on {r['devices']} CPU device(s):"
            f" {r['member_steps_per_s']:.3g} member-steps/s after compiling"
            f" ({r['compile_s']:.1f} s), {r['seconds']:.1f} s in all"
            f" ({r['overall_member_steps_per_s']:.3g} member-steps/s, {r['step_chunks']} chunks),"
            f" peak RSS {r['peak_rss_mb']:.0f} MB, store {r['store_mb']:.0f} MB"
        )
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(rows, indent=2))
    base = rows[0]["peak_rss_mb"]
    steps_growth = rows[2]["peak_rss_mb"] / base
    print(f"peak memory with 4× the steps: ×{steps_growth:.2f}")
    seeds_growth = rows[1]["peak_rss_mb"] / base
    print(f"peak memory with {many // few}× the seeds: ×{seeds_growth:.2f}")
    # the promise: one unit's states and one step chunk's records in memory, whatever the seeds
    assert seeds_growth < 1.25, f"peak memory grew ×{seeds_growth:.2f} with the seeds"


if __name__ == "__main__":
    main()
