"""The reduced (Ω, M) sweep's throughput, this checkout against another one side by side.

Each round runs every checkout in a fresh process, alternating, on the same machine: the
`reduced-sweep` workload of `jaxicl bench` (65,536 members, H = 3, 3 tasks, d = 50, the
Euclidean flow on factorized states) and the same ensemble under the weights' flow (the
default of `reduced-allocation`). Each figure is the best of 3 timed calls of 200 steps after
a compiling call, in member-steps per second of wall time and per second of the process's
CPU time; the share of the machine a hypervisor took meanwhile (`steal` in /proc/stat) is
printed, since on a shared virtual machine wall times move with it.

    python benchmarks/reduced_sweep.py --compare ../old-checkout \
        --out benchmarks/reduced_sweep_cpu.json
"""

import argparse
import json
import os
import subprocess
import sys


CHILD = r"""
import json, os, sys, time
from jaxicl._host._devices import use_all_cpu_cores
use_all_cpu_cores()
import jax, jax.random as jr, equinox as eqx
import jaxicl
from jaxicl._bench import WORKLOADS
from jaxicl._train._state import init_ensemble_state
from jaxicl._train._trainer import train_ensemble_steps

def steal():
    fields = open("/proc/stat").readline().split()
    return int(fields[8]) if len(fields) > 8 else 0

members, steps = int(sys.argv[1]), 200
states, objective, optimizer, _ = WORKLOADS["reduced-sweep"][0](members)
sizes = (16, 17, 17)
flow = jaxicl.WeightFlow()
weights = init_ensemble_state(
    eqx.filter_vmap(lambda m: flow.state(m, sizes))(states.model), optimizer
)
out = {"jaxicl": jaxicl.__file__, "devices": jax.device_count()}
for name, st, obj in (
    ("euclidean", states, objective),
    ("weights", weights, flow.objective(sizes, 100)),
):
    call = lambda seed: jax.block_until_ready(
        train_ensemble_steps(st, obj, optimizer, steps=steps, key=jr.key(seed))
    )
    start = time.perf_counter()
    call(0)
    first = time.perf_counter() - start
    best_wall, best_cpu, stolen = float("inf"), float("inf"), []
    for seed in (1, 2, 3):
        w0, c0, s0 = time.perf_counter(), time.process_time(), steal()
        call(seed)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        stolen.append((steal() - s0) / 100 / wall / (os.cpu_count() or 1))
        best_wall, best_cpu = min(best_wall, wall), min(best_cpu, cpu)
    out[name] = {
        "member_steps_per_s": members * steps / best_wall,
        "member_steps_per_cpu_s": members * steps / best_cpu,
        "compile_s": first - best_wall,
        "steal": stolen,
    }
print(json.dumps(out))
"""


def run(source: str, members: int) -> dict:
    env = dict(os.environ, PYTHONPATH=os.path.abspath(source))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(members)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.abspath(source),
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", help="another checkout's root, run alternately")
    parser.add_argument("--members", type=int, default=65536)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out")
    args = parser.parse_args()
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sources = {"this": here} | ({"compared": args.compare} if args.compare else {})
    rows = []
    for round_ in range(args.rounds):
        for label, source in sources.items():
            result = run(source, args.members)
            rows.append({"round": round_, "checkout": label, "source": source, **result})
            for flow in ("euclidean", "weights"):
                r = result[flow]
                print(
                    f"round {round_} {label:<8} {flow:<9} "
                    f"{r['member_steps_per_s'] / 1e6:6.2f} M/s wall  "
                    f"{r['member_steps_per_cpu_s'] / 1e6:6.2f} M/cpu-s  "
                    f"compile {r['compile_s']:4.1f} s  "
                    f"steal {', '.join(f'{s:.0%}' for s in r['steal'])}",
                    flush=True,
                )
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"members": args.members, "steps": 200, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
