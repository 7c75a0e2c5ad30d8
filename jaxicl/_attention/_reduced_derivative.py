"""The reduced loss ℓ(Ω, M)'s pieces, and ℓ with its gradient written out in closed form.

ℓ is a closed form in the H × n numbers of a member (see `_reduced.py` for its derivation), and
so is its gradient. Autodiff of the expression as written streams every (H, H, n)
intermediate of the forward pass through memory again, one primitive at a time; the gradient
written out needs a handful of products of arrays the forward pass has already made. With
t = 1/(1 − 2c) for the head-pair products c_{hh'i} = ω_{h,i} ω_{h',i}, P = μ_{h,i} μ_{h',i},
the slope's error e_i = 1 − Σ_h μ_{h,i} ω_{h,i} s_{h,i} (s = 1/(1 + κ)) and a_i = −2 r_i e_i:

    ∂ℓ/∂μ_{h,i} = a_i ω_{h,i} s_{h,i} + (2/L) Σ_h' μ_{h',i} K_{hh'} V_{hh',i}
    ∂ℓ/∂ω_{h,i} = a_i μ_{h,i} s_{h,i} + 2 Σ_h' G_{hh'i} ω_{h',i},

where G = ∂ℓ/∂c collects the kernel's and the variance's dependence on c (∂K/∂c_{hh'i} =
r_i t K, ∂V/∂c = r_i t²) and the shrink's (κ_{h,i} = K_{hh} t_{hhi}/L, whose derivative
b_{h,i} = −a_i μ ω s² reaches c_{hh·} through K_{hh} and through t_{hhi}):

    G_{hh'i} = r_i t (K Γ_{hh'} + P K t / L) + [h = h'] (r_i t K Σ_j b_{h,j} t_{hhj} / L
                                                         + 2 b_{h,i} K t² / L),
    Γ_{hh'} = (1/L) Σ_j P_{hh'j} V_{hh'j};

∂ℓ/∂σ = 2σ Σ P K / L and ∂ℓ/∂σ_q = 2 n σ_q. The rule is a JVP (`jax.custom_jvp`, as in
`_softmax_mix.py`), so forward mode and second derivatives still work; it is tested equal to
autodiff of the plain expression in float64, to second order.

Measured on a 2-core EPYC (one core, 512 members a chunk of the trainer, factorized states):
with the leaves moved members-minor before forming Ω and M (`ReducedLoss.evaluate_members`),
autodiff of the expression took 905 ns a member-step and this rule 369–388 ns.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array


class ExpansionTerms(NamedTuple):
    """The pieces of ℓ's first-order terms; trailing axes are members.

    - `cross`: c_{hh'i} = ω_{h,i} ω_{h',i}, (H, H, n, …); `inverse`: 1/(1 − 2c).
    - `kernel`: K_{hh'} = Π_j (1 − 2 c_{hh'j})^{−r_j/2}, (H, H, …).
    - `variance`: V_{hh',i} = r_i + σ² + r_i c t (without the tilt: r_i + σ²), (H, H, n, …).
    - `shrink`: κ_{h,i} = K_{hh} / (L (1 − 2 ω_{h,i}²)), (H, n, …).
    """

    cross: Array
    inverse: Array
    kernel: Array
    variance: Array
    shrink: Array


def expansion_terms(omega, block_sizes, context_len, context_noise, tilt=True) -> ExpansionTerms:
    """ℓ's pieces at `omega` (H, n, *members); see `ExpansionTerms`."""
    cross = omega[:, None] * omega[None, :]  # (H, H, n, ...)
    inverse = 1 / (1 - 2 * cross)
    blockwise = along_tasks(block_sizes, cross, axis=2)
    kernel = jnp.exp(-0.5 * jnp.sum(blockwise * jnp.log1p(-2 * cross), axis=2))  # (H, H, ...)
    tilted = blockwise * cross * inverse if tilt else jnp.zeros_like(cross)
    variance = blockwise + context_noise**2 + tilted
    heads = jnp.arange(omega.shape[0])
    own = kernel[heads, heads]  # K_{hh}: (H, ...)
    shrink = own[:, None] * inverse[heads, heads] / context_len  # κ_{h,i}
    return ExpansionTerms(cross, inverse, kernel, variance, shrink)


def along_tasks(values, like: Array, axis: int) -> Array:
    """An array shaped like `like` holding `values[i]` at index i of its task `axis`.

    Built from an iota and selects, not by broadcasting an (n,) array: XLA's CPU fusions
    computed such a broadcast along a middle axis at a cost per element that made the
    weights' flow (which scales each task's ω) run at 1.8-1.9 M member-steps/s on one core of a
    2-core EPYC, against 2.7-2.8 M this way (512 members a chunk, members minor)."""
    index = jax.lax.broadcasted_iota(jnp.int32, like.shape, axis)
    out = jnp.full(like.shape, values[-1], like.dtype)
    for i, value in enumerate(values[:-1]):
        out = jnp.where(index == i, jnp.asarray(value, like.dtype), out)
    return out


def _loss_and_pieces(omega, mu, block_sizes, context_len, context_noise, query_noise):
    terms = expansion_terms(omega, block_sizes, context_len, context_noise)
    scale = 1 / (1 + terms.shrink)  # s_{h,i}
    error = 1 - jnp.sum(mu * omega * scale, axis=0)  # e_i
    pairs = mu[:, None] * mu[None, :]  # P_{hh'i}
    weighted = terms.kernel[:, :, None] * terms.variance  # K V
    fluctuation = jnp.sum(pairs * weighted, axis=(0, 1))
    sizes = along_tasks(block_sizes, error, axis=0)
    per_task = query_noise**2 + sizes * error**2 + fluctuation / context_len
    return jnp.sum(per_task, axis=0), (terms, scale, error, pairs, weighted)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def derived_reduced_loss(omega, mu, block_sizes, context_len, context_noise, query_noise):
    """ℓ(Ω, M) summed over tasks (trailing axes of `omega`, `mu` are members), with its
    derivative in closed form (module docstring). Same value as the expression."""
    return _loss_and_pieces(omega, mu, block_sizes, context_len, context_noise, query_noise)[0]


@derived_reduced_loss.defjvp
def _derived_reduced_loss_jvp(block_sizes, context_len, primals, tangents):
    omega, mu, context_noise, query_noise = primals
    d_omega, d_mu, d_context_noise, d_query_noise = tangents
    loss, (terms, scale, error, pairs, weighted) = _loss_and_pieces(
        *primals[:2], block_sizes, context_len, *primals[2:]
    )
    length = context_len
    sizes = along_tasks(block_sizes, omega, axis=1)  # r_i: (H, n, ...)
    slope_grad = -2 * sizes * error[None]  # a_i
    grad_mu = slope_grad * omega * scale + (2 / length) * jnp.sum(mu[None] * weighted, axis=1)
    shrink_grad = -slope_grad * mu * omega * scale**2  # b_{h,i}
    heads = jnp.arange(omega.shape[0])
    kernel, inverse = terms.kernel, terms.inverse
    own_kernel = kernel[heads, heads][:, None]  # K_{hh}: (H, 1, ...)
    own_inverse = inverse[heads, heads]  # t_{hhi}: (H, n, ...)
    gamma = jnp.sum(pairs * terms.variance, axis=2) / length  # Γ_{hh'}
    variance_grad = pairs * kernel[:, :, None] / length  # ∂ℓ/∂V
    blockwise = along_tasks(block_sizes, inverse, axis=2)
    cross_grad = (
        blockwise * inverse * (kernel[:, :, None] * gamma[:, :, None] + variance_grad * inverse)
    )
    through_own_kernel = jnp.sum(shrink_grad * own_inverse, axis=1, keepdims=True) / length
    # G's extra diagonal (h = h'), applied to ω directly rather than scattered into G: one
    # pass fewer over G, and with the scatter the gradient differed in its last bit between
    # member counts
    own_cross_grad = (
        sizes * own_inverse * own_kernel * through_own_kernel
        + 2 * shrink_grad * own_kernel * own_inverse**2 / length
    )
    grad_omega = (
        slope_grad * mu * scale
        + 2 * jnp.sum(cross_grad * omega[None], axis=1)
        + 2 * own_cross_grad * omega
    )
    grad_context_noise = 2 * context_noise * jnp.sum(variance_grad, axis=(0, 1, 2))
    grad_query_noise = 2 * query_noise * omega.shape[1]
    tangent = (
        jnp.sum(grad_omega * d_omega, axis=(0, 1))
        + jnp.sum(grad_mu * d_mu, axis=(0, 1))
        + grad_context_noise * d_context_noise
        + grad_query_noise * d_query_noise
    )
    return loss, tangent
