"""`best_layout_loss`: the best H-head model on the ansatz over every layout and sign."""

import jax
import jax.numpy as jnp
import jax.random as jr

import jaxicl as ji
from jaxicl._attention._layout_optimum import best_layout_loss


SIZES, L = (5, 5, 5), 100


def test_mixed_signs_beat_strict_allocation_and_the_search_is_reproducible():
    """With free signs three heads go below strict allocation (He et al.'s ± pairs; measured
    ℓ = 1.22 against 2.52 at r = 5, L = 100); independent searches agree to 1% and the winner
    is a critical point of ℓ (gradient small against ℓ's scale)."""
    strict = ji.optimal_allocation_losses(SIZES, L).one_head_per_task
    first = best_layout_loss(SIZES, L, 3, key=jr.key(0), restarts=64)
    second = best_layout_loss(SIZES, L, 3, key=jr.key(1), restarts=64)
    assert first.loss < 0.6 * strict
    assert abs(first.loss - second.loss) < 0.01 * first.loss
    assert first.found_by >= 4
    objective = ji.ReducedLoss(SIZES, L)
    state = ji.MergedSpectral(first.omega, first.mu)
    grad = jax.grad(lambda s: objective.evaluate(s, None))(state)
    norm = jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(grad)))
    assert float(norm) < 1e-2 * first.loss
    assert abs(float(objective.evaluate(state, None)) - first.loss) < 1e-6 * first.loss


def test_one_head_cannot_beat_the_single_head_optimum():
    """H = 1 has one layout: the search returns the closed-form single-head optimum (or a state
    within 0.1% of it)."""
    single = ji.optimal_allocation_losses(SIZES, L).single_head
    best = best_layout_loss(SIZES, L, 1, key=jr.key(0), restarts=32)
    assert best.loss <= single and best.loss > 0.999 * single
