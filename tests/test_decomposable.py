"""Full models on the decomposable ansatz: both parametrizations carry the same merged weights.
(The rates of SGD on them are tests/test_weight_flow.py.)"""

import jax.numpy as jnp
import jax.random as jr

import jaxicl as ji


D_X, N_TASKS, L = 7, 2, 12
BLOCKS = ji.disjoint_blocks(D_X, N_TASKS)  # sizes 3 and 4: unequal on purpose


def test_factorized_decomposable_model_has_the_merged_weights(getkey):
    omega = jr.normal(getkey(), (2, N_TASKS))  # both signs
    mu = jr.normal(getkey(), (2, N_TASKS))
    merged = ji.decomposable_attention(omega, mu, BLOCKS, D_X)
    factorized = ji.decomposable_attention(omega, mu, BLOCKS, D_X, factorized=True).merged()
    assert jnp.allclose(factorized.W, merged.W, atol=1e-12)
    assert jnp.allclose(factorized.U, merged.U, atol=1e-12)
