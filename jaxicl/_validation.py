"""Configuration checks that run in Python, before anything is traced or compiled.

Every error names the offending field, the value it got and what is allowed.
"""

import math
from collections.abc import Iterable


def positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    return value


def nonnegative_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"`{name}` must be an integer >= 0, got {value!r}.")
    return value


def finite_nonnegative(name: str, value) -> float:
    if not _is_real(value) or not math.isfinite(value) or value < 0:
        raise ValueError(f"`{name}` must be a finite number >= 0, got {value!r}.")
    return float(value)


def finite_positive(name: str, value) -> float:
    if not _is_real(value) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"`{name}` must be a finite number > 0, got {value!r}.")
    return float(value)


def in_open_interval(name: str, value, low: float, high: float) -> float:
    if not _is_real(value) or not (low < value < high):
        raise ValueError(f"`{name}` must lie strictly between {low} and {high}, got {value!r}.")
    return float(value)


def one_of(name: str, value, allowed: Iterable):
    allowed = tuple(allowed)
    if value not in allowed:
        choices = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"`{name}` must be one of {choices}; got {value!r}.")
    return value


def blocks_cover(name: str, blocks, d: int) -> tuple[tuple[int, int], ...]:
    """Check a block layout: each block a non-empty [start, stop) inside [0, d), union = [0, d)."""
    try:
        blocks = tuple((int(start), int(stop)) for start, stop in blocks)
    except (TypeError, ValueError):
        raise ValueError(
            f"`{name}` must be a sequence of (start, stop) pairs, got {blocks!r}."
        ) from None
    if len(blocks) == 0:
        raise ValueError(f"`{name}` must contain at least one (start, stop) block.")
    covered = set()
    for start, stop in blocks:
        if not 0 <= start < stop <= d:
            raise ValueError(
                f"`{name}` block ({start}, {stop}) must satisfy 0 <= start < stop <= d={d}."
            )
        covered.update(range(start, stop))
    missing = sorted(set(range(d)) - covered)
    if missing:
        raise ValueError(
            f"`{name}` must cover every coordinate 0..{d - 1}; "
            f"coordinates {missing} are in no block."
        )
    return blocks


def _is_real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
