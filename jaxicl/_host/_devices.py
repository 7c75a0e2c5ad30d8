"""Host-side device setup for entry points (the CLI and benchmarks), never run on import."""

import os

import jax


def use_all_cpu_cores() -> None:
    """Expose one CPU device per core so ensembles shard their members over all cores.

    Must run before JAX first touches its backend; afterwards (or if the user configured the
    device count already) it does nothing.
    """
    if (
        "JAX_NUM_CPU_DEVICES" in os.environ
        or "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")
    ):
        return
    try:
        jax.config.update("jax_num_cpu_devices", os.cpu_count() or 1)
    except RuntimeError:
        pass  # the backend is already initialized; keep what it has
