import pathlib
import subprocess
import sys

import numpy as np
import pytest


def _run_on(n_devices, out):
    script = pathlib.Path(__file__).with_name("ensemble_on_devices.py")
    subprocess.run([sys.executable, str(script), str(n_devices), str(out)], check=True, timeout=600)
    return np.load(out)


@pytest.mark.slow  # a subprocess
def test_four_host_devices_give_the_same_ensemble_as_one(tmp_path):
    """Members sharded over 4 CPU devices (3 each) match one device, float64, rtol 1e-10."""
    one = _run_on(1, tmp_path / "one.npz")
    four = _run_on(4, tmp_path / "four.npz")
    for name in one.files:
        np.testing.assert_allclose(four[name], one[name], rtol=1e-10, atol=1e-12)
