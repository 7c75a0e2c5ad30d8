"""The large-L limit of the reduced model's single- vs multi-head separation: the ratio of
the strict-allocation optima ℓ*(one head for every task) / ℓ*(one head per task) as L → ∞,
in closed form (the optimum of each head's kernel width has one root)."""

import math


def _limit_coefficient(total: int) -> float:
    """min over u = ω² of (1 − 2u)^(−total/2 − 1) (1 − u)/u: L ℓ*/r_i per task at L → ∞, for a
    head whose kernel spans `total` coordinates; the minimizer is the smaller root of
    (total + 2)u² − (total + 4)u + 1 = 0."""
    u = ((total + 4) - math.sqrt((total + 4) ** 2 - 4 * (total + 2))) / (2 * (total + 2))
    return (1 - 2 * u) ** (-total / 2 - 1) * (1 - u) / u


def separation_limit(block_sizes: tuple[int, ...]) -> float:
    """lim_{L→∞} of the reduced ratio ℓ*(one head) / ℓ*(one head per task)."""
    d = sum(block_sizes)
    single = d * _limit_coefficient(d)
    return single / sum(r * _limit_coefficient(r) for r in block_sizes)
