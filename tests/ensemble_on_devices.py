"""Train a small ensemble on N CPU devices and save its results: run by test_devices.py."""

import sys

import jax


n_devices, out_path = int(sys.argv[1]), sys.argv[2]
jax.config.update("jax_num_cpu_devices", n_devices)
jax.config.update("jax_enable_x64", True)

import equinox as eqx
import jax.random as jr
import numpy as np
import optax

import jaxicl as ji


assert jax.local_device_count() == n_devices
task = ji.LinearRegression(4, 8, context_noise=0.2, query_noise=0.2)
models = eqx.filter_vmap(lambda k: ji.init_normal(d=4, n_out=1, n_heads=2, scale=0.3, key=k))(
    jr.split(jr.key(0), 12)
)
arrays = {}
for shared in (True, False):
    trained, traj = ji.train_ensemble(
        models,
        ji.ICLLoss(task, 16),
        optax.adam(1e-2),
        steps=10,
        record=ji.Record(every=5),
        shared_data=shared,
        members=ji.Members(chunk=2),
        key=jr.key(1),
    )
    arrays[f"Q_{shared}"] = np.asarray(trained.Q)
    arrays[f"loss_{shared}"] = np.asarray(traj.loss)
np.savez(out_path, **arrays)
