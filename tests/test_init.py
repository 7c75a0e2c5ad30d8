import math

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import pytest

import jaxicl as ji


def test_init_normal_statistics(getkey):
    model = ji.init_normal(d=20, n_out=1, n_heads=4, scale=0.3, key=getkey())
    q = model.Q.ravel()
    # Sample std of n normals has standard error about scale / sqrt(2n).
    assert abs(float(q.std()) - 0.3) < 4 * 0.3 / math.sqrt(2 * q.size)
    assert abs(float(q.mean())) < 4 * 0.3 / math.sqrt(q.size)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_init_dtype(dtype, getkey):
    model = ji.init_normal(
        d=2, n_out=1, n_heads=1, scale=1.0, parametrization="merged", dtype=dtype, key=getkey()
    )
    assert model.W.dtype == dtype and model.U.dtype == dtype


def test_balanced_init_semi_singular_values(getkey):
    d, n, H, L = 12, 3, 4, 100
    model = ji.init_balanced(d=d, n_tasks=n, n_heads=H, context_len=L, key=getkey())
    s = L ** (-0.75)
    omega, mu = ji.semi_singular_values(model, ji.disjoint_blocks(d, n))
    assert jnp.allclose(omega, s**2 / math.sqrt(d + n))
    favoured = jnp.arange(H)[:, None] % n == jnp.arange(n)[None, :]
    assert jnp.allclose(mu, jnp.where(favoured, 4 * s**2, s**2))
    merged = model.merged()
    # V has no x-part, so U reads only the labels: decomposable from the start.
    assert jnp.all(merged.U[:, :, :d] == 0)


def test_balanced_random_sign_gives_both_signs(getkey):
    models = eqx.filter_vmap(
        lambda k: ji.init_balanced(
            d=6, n_tasks=2, n_heads=2, context_len=10, random_sign=True, key=k
        )
    )(jr.split(getkey(), 64))
    omega, _ = eqx.filter_vmap(lambda m: ji.semi_singular_values(m, ((0, 3), (3, 6))))(models)
    assert jnp.any(omega > 0) and jnp.any(omega < 0)


def test_opposite_sign_identity_pairs_heads(getkey):
    d, H, s = 3, 4, 0.1
    model = ji.init_identity(d=d, n_out=1, n_heads=H, scale=s, opposite_halves=True, key=getkey())
    omega, mu = ji.semi_singular_values(model, ((0, d),))
    assert jnp.allclose(omega[:2], s**2 / 2) and jnp.allclose(omega[2:], -(s**2) / 2)
    assert jnp.allclose(mu[:2], s**2) and jnp.allclose(mu[2:], -(s**2))
    # At ω = 0 (Q set to zero) the ± heads average the labels identically and cancel exactly.
    flat = eqx.tree_at(lambda m: m.Q, model, jnp.zeros_like(model.Q))
    prompt = ji.LinearRegression(d, 5).sample(key=getkey())
    assert float(jnp.abs(flat(prompt)).max()) < 1e-15  # up to summation order
    assert float(jnp.abs(model(prompt)).max()) > 0.0


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda k: ji.init_normal(d=3, n_out=1, n_heads=0, scale=1.0, key=k), "`n_heads`"),
        (lambda k: ji.init_normal(d=-3, n_out=1, n_heads=1, scale=1.0, key=k), "`d`"),
        (lambda k: ji.init_normal(d=3, n_out=1, n_heads=1, scale=float("nan"), key=k), "`scale`"),
        (lambda k: ji.init_normal(d=3, n_out=1, n_heads=1, scale=-1.0, key=k), "`scale`"),
        (
            lambda k: ji.init_normal(d=3, n_out=1, n_heads=1, scale=1.0, kind="relu", key=k),
            "`kind`",
        ),
        (
            lambda k: ji.init_normal(
                d=3, n_out=1, n_heads=1, scale=1.0, parametrization="qk", key=k
            ),
            "`parametrization`",
        ),
        (lambda k: ji.init_balanced(d=6, n_tasks=3, n_heads=2, context_len=10, key=k), "`n_heads`"),
        (lambda k: ji.init_balanced(d=6, n_tasks=0, n_heads=2, context_len=10, key=k), "`n_tasks`"),
        (
            lambda k: ji.init_identity(
                d=3, n_out=1, n_heads=3, scale=0.1, opposite_halves=True, key=k
            ),
            "`n_heads`",
        ),
    ],
)
def test_bad_init_names_the_field(make, field, getkey):
    with pytest.raises(ValueError, match=field):
        make(getkey())
