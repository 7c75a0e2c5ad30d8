import jax.numpy as jnp
import jax.random as jr
import pytest

import jaxicl as ji


def test_recovers_decomposable_parameters(getkey):
    d, blocks = 7, ji.disjoint_blocks(7, 3)
    omega = jr.normal(getkey(), (4, 3))
    mu = jr.normal(getkey(), (4, 3))
    got_omega, got_mu = ji.semi_singular_values(
        ji.decomposable_attention(omega, mu, blocks, d), blocks
    )
    assert jnp.allclose(got_omega, omega) and jnp.allclose(got_mu, mu)


def test_factorized_and_merged_agree(getkey):
    model = ji.init_normal(d=5, n_out=2, n_heads=3, scale=0.5, key=getkey())
    blocks = ((0, 2), (2, 5))
    a = ji.semi_singular_values(model, blocks)
    b = ji.semi_singular_values(model.merged(), blocks)
    assert jnp.allclose(a[0], b[0]) and jnp.allclose(a[1], b[1])


def test_block_count_must_match_outputs(getkey):
    model = ji.init_normal(d=4, n_out=1, n_heads=1, scale=0.5, key=getkey())
    with pytest.raises(ValueError, match="`blocks`"):
        ji.semi_singular_values(model, ((0, 2), (2, 4)))
