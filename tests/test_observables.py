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


def test_own_coordinates_of_overlapping_blocks(getkey):
    """With blocks (0, 4) and (2, 6), ω reads each task's own coordinates, [0, 2) and [4, 6),
    as a loop over heads computes them; μ is that of `semi_singular_values`."""
    from jaxicl._attention._observables import own_semi_singular_values

    model = ji.init_normal(d=6, n_out=2, n_heads=3, scale=0.5, key=getkey())
    omega, mu = own_semi_singular_values(model, ((0, 4), (2, 6)))
    W = model.merged().W
    for h in range(3):
        for i, (a, b) in enumerate(((0, 2), (4, 6))):
            expected = sum(float(W[h, c, c]) for c in range(a, b)) / (b - a)
            assert abs(float(omega[h, i]) - expected) < 1e-6
    assert jnp.allclose(mu, ji.semi_singular_values(model, ((0, 4), (2, 6)))[1])
    with pytest.raises(ValueError, match="of its own"):
        own_semi_singular_values(model, ((0, 6), (2, 6)))


def test_block_count_must_match_outputs(getkey):
    model = ji.init_normal(d=4, n_out=1, n_heads=1, scale=0.5, key=getkey())
    with pytest.raises(ValueError, match="`blocks`"):
        ji.semi_singular_values(model, ((0, 2), (2, 4)))


def test_head_structure_of_the_learned_form_and_of_a_random_model(getkey):
    """W = ω I on the x-block, U = μ on the label: every statistic at its ideal value; a
    random model is far from it."""
    d, omega, mu = 5, jnp.asarray([0.3, -0.2]), jnp.asarray([1.5, -2.0])
    ideal = ji.decomposable_attention(omega[:, None], mu[:, None], ((0, d),), d)
    s = ji.head_structure(ideal)
    assert jnp.allclose(s.kq_diagonal_ratio, 1.0) and jnp.allclose(s.kq_diagonal_spread, 0.0)
    assert jnp.allclose(s.kq_label_ratio, 0.0) and jnp.allclose(s.ov_last_entry_ratio, 1.0)
    assert jnp.allclose(s.omega, omega) and jnp.allclose(s.mu, mu)
    noisy = ji.init_normal(d=d, n_out=1, n_heads=16, scale=1.0, key=getkey())
    r = ji.head_structure(noisy)
    # Random-matrix medians: ≈ √(d/d²) = 0.45, |u_6|/‖u‖ ≈ 0.3, ≈ √(11/36) = 0.55.
    assert jnp.median(r.kq_diagonal_ratio) < 0.7 and jnp.median(r.ov_last_entry_ratio) < 0.7
    assert jnp.median(r.kq_label_ratio) > 0.3
