"""The perturbation variants of the particle solver: which noise, if any, is added to the
particles between Euler steps. Each gives the after-step move (`_moves.py`) of its size and
period; `name` is how sweep files and the command line refer to it."""

import abc
from typing import ClassVar

import equinox as eqx

from ._moves import HessianPerturbation, IsotropicPerturbation


class AbstractPerturbation(eqx.Module):
    name: ClassVar[str]

    @abc.abstractmethod
    def move(self, *, size: float, every: int, jitter: float | None) -> eqx.Module | None:
        """The move adding this noise of `size` every `every` steps (None: no move)."""


class NoPerturbation(AbstractPerturbation):
    """The noiseless flow."""

    name: ClassVar[str] = "none"

    def move(self, *, size, every, jitter):
        return None


class IsotropicNoise(AbstractPerturbation):
    """θ_j ← θ_j + size · ξ_j, ξ_j ~ N(0, I) (`IsotropicPerturbation`)."""

    name: ClassVar[str] = "isotropic"

    def move(self, *, size, every, jitter):
        return IsotropicPerturbation(size, every)


class HessianNoise(AbstractPerturbation):
    """Hessian-guided noise of the same mean size (`HessianPerturbation`)."""

    name: ClassVar[str] = "hessian"

    def move(self, *, size, every, jitter):
        return HessianPerturbation(size, every, jitter)


PERTURBATIONS = {p.name: p for p in (NoPerturbation(), IsotropicNoise(), HessianNoise())}
