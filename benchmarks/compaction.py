"""What compaction saves: a sweep with and without leaving frozen (diverged) members out of
training between step chunks, alternating in one process, stores compared bit for bit.

Study `reduced-allocation` (d = 15, 3 tasks, H = 3, random-positive init) with the learning
rate `dt` as a member axis: dt = 0.1, 0.2, 0.25 train, and dt = 4 diverges within the first
records, so a quarter of the members are frozen early. Each arm runs the same sweep into its
own store (compile caches warm after a first, discarded round); the figures are wall times of
whole sweeps, member-steps trained (counted at the trainer's calls) and the member-steps the
sweep stands for.

    python benchmarks/compaction.py --out benchmarks/compaction_cpu.json
    python benchmarks/compaction.py --seeds 512 --rounds 1     # quicker
"""

import argparse
import json
import platform
import tempfile
import time
from typing import ClassVar

import jax
import numpy as np
import xarray as xr

import jaxicl
from jaxicl._sweeps import _compaction as compaction, _group as group_module


class LearningRateSweep(jaxicl.ReducedAllocation):
    """`reduced-allocation` with the learning rate as a member axis (one compiled call)."""

    member_axes: ClassVar[tuple[str, ...]] = ("init_scale", "dt")


DT = (0.1, 0.2, 0.25, 4.0)  # the horizon divides into whole steps of each


def one_sweep(study, store, seeds: int, chunk_records, compact: bool, grid=None) -> dict:
    trained = []
    real_train, real_deterministic = group_module.Group._train, compaction.deterministic

    def counting_train(self, states, n_records, chunk):
        trained.append(int(np.asarray(states.step).size) * n_records * self.record_every)
        return real_train(self, states, n_records, chunk)

    group_module.Group._train = counting_train
    if not compact:
        compaction.deterministic = lambda objective: False
    try:
        start = time.perf_counter()
        jaxicl.sweep(
            study,
            seeds=seeds,
            store=store,
            grid={"dt": list(DT)} if grid is None else grid,
            chunk_records=chunk_records,
            progress=False,
        )
        seconds = time.perf_counter() - start
    finally:
        group_module.Group._train = real_train
        compaction.deterministic = real_deterministic
    return {"seconds": seconds, "member_steps_trained": sum(trained)}


def arrays(store) -> dict:
    data = xr.open_zarr(str(store), consolidated=False).load()
    return {name: np.asarray(data[name]) for name in data.data_vars}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--records", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    study = LearningRateSweep(d=15, horizon=args.steps * DT[0], dt=DT[0], n_records=args.records)
    represented = args.seeds * len(DT) * args.steps
    rows = []
    for chunk_records in ("auto", args.records // 10):
        timings, reference = {True: [], False: []}, {}
        for round_ in range(args.rounds + 1):  # the first round compiles
            for compact in (False, True):
                with tempfile.TemporaryDirectory() as tmp:
                    result = one_sweep(study, f"{tmp}/s", args.seeds, chunk_records, compact)
                    stored = arrays(f"{tmp}/s")
                if round_:
                    timings[compact].append(result)
                if compact:
                    for name, values in stored.items():  # the same bits as without compaction
                        np.testing.assert_array_equal(values, reference[name], err_msg=name)
                else:
                    reference = stored
        diverged = float(np.mean(reference["diverged"] == 1))
        row = {
            "chunk_records": chunk_records,
            "diverged_fraction": diverged,
            "member_steps_represented": represented,
        }
        for compact, name in ((False, "whole"), (True, "compacted")):
            row[f"{name}_seconds"] = [r["seconds"] for r in timings[compact]]
            row[f"{name}_member_steps_trained"] = timings[compact][0]["member_steps_trained"]
        row["speedup_best"] = min(row["whole_seconds"]) / min(row["compacted_seconds"])
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {
        "machine": platform.processor() or platform.machine(),
        "devices": [str(d) for d in jax.devices()],
        "jax": jax.__version__,
        "study": "reduced-allocation, d=15, H=3, 3 tasks, random-positive, dt member axis",
        "dt": DT,
        "seeds": args.seeds,
        "steps": args.steps,
        "records": args.records,
        "rows": rows,
    }
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
