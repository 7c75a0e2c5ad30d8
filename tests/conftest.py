import os

import jax
import pytest
from equinox.internal import GetKey


jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture
def getkey():
    # Deterministic by default so CI is reproducible; set JAXICL_TEST_SEED to explore others.
    return GetKey(seed=int(os.environ.get("JAXICL_TEST_SEED", "0")))
